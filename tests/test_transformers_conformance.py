"""transformers' own common tests (ModelTesterMixin, ConfigTester, ImageProcessingTestMixin, TrainingTesterMixin)
against SEVNetModel, SEVNetForAUDetection, the three baselines and the image processor, with tiny configs.

The mixins come from the installed transformers version's source distribution (see ``transformers_common.py``).
Every mixin test runs unless it is listed in ``NOT_APPLICABLE`` with the reason it does not apply to these models.
"""

from __future__ import annotations

import unittest

import pytest

from tests import transformers_common

try:
    transformers_common.load()
except transformers_common.Unavailable as err:  # no registry: nothing to run against
    pytest.skip(str(err), allow_module_level=True)

import torch  # noqa: E402
from transformers_tests import test_modeling_common  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_image_processing_common import (  # noqa: E402
    ImageProcessingTester,
    ImageProcessingTestMixin,
)
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor  # noqa: E402
from transformers_tests.test_training_mixin import TrainingTesterMixin  # noqa: E402

from sevnet_hf import (  # noqa: E402
    AUMLGCNConfig,
    AUMLGCNForAUDetection,
    AUMSCAMConfig,
    AUMSCAMForAUDetection,
    AUResNetConfig,
    AUResNetForAUDetection,
    SEVNetConfig,
    SEVNetForAUDetection,
    SEVNetImageProcessor,
    SEVNetModel,
)

# The mixins tell bare models (no loss: left out of the training tests) and task heads apart by transformers' table
# of in-library class names; ours are registered at run time, so they are added to the mixin module's copies of those
# tables (transformers' own tables are not touched).
test_modeling_common.MODEL_MAPPING_NAMES = {**test_modeling_common.MODEL_MAPPING_NAMES, "sevnet": "SEVNetModel"}

AUS = [1, 2, 4, 6, 12]
IMAGE_SIZE = 32
# A graph for the graph baselines (PCC signs of 5 AUs), as set_graph_from_labels would store it.
GRAPH = [[1.0 if i == j else (1.0 if abs(i - j) == 1 else 0.0) for j in range(len(AUS))] for i in range(len(AUS))]

# Mixin tests that do not apply to these models, each with its reason. Everything else must pass.
NOT_APPLICABLE = {
    # Token embeddings: these models take pixels, not token ids.
    "test_resize_tokens_embeddings": "no token embeddings (image input)",
    "test_resize_embeddings_untied": "no token embeddings (image input)",
    "test_resize_embeddings_untied_no_reinit_on_post_init": "no token embeddings (image input)",
    "test_model_get_set_embeddings": "no input embeddings (image input)",
    "test_inputs_embeds": "no inputs_embeds (image input)",
    "test_inputs_embeds_matches_input_ids": "no input_ids (image input)",
    "test_feed_forward_chunking": "no chunked feed-forward layers",
    # Attention kernels: the Inter-AU encoder is torch's nn.MultiheadAttention over <= 41 AU tokens, not
    # transformers' attention interface, so there is no attn_implementation to switch.
    "test_attn_implementation_composite_models": "no transformers attention interface (nn.MultiheadAttention)",
    "test_sdpa_can_dispatch_non_composite_models": "no transformers attention interface (nn.MultiheadAttention)",
    "test_sdpa_can_dispatch_composite_models": "no transformers attention interface (nn.MultiheadAttention)",
    "test_eager_matches_sdpa_inference": "no transformers attention interface (nn.MultiheadAttention)",
    "test_eager_matches_batched_and_grouped_inference": "no transformers attention interface",
    "test_can_set_attention_dynamically": "no transformers attention interface (nn.MultiheadAttention)",
    "test_can_set_attention_dynamically_composite_model": "no transformers attention interface",
    "test_flex_attention_with_grads": "no transformers attention interface (nn.MultiheadAttention)",
    # transformers 5.24's TrainingTesterMixin builds batches for text only ("Modality image not supported yet for
    # training overfit"); test_tiny_model_overfits_a_fixed_batch below checks the same for these models.
    "test_training_overfit": "the mixin has no image batches (raises 'Modality image not supported yet')",
}


# The baselines have no transformer layers: they checkpoint through timm (checkpoint_seq over the backbone's blocks),
# not transformers' GradientCheckpointingLayer, which this mixin test requires to exist.
NOT_APPLICABLE_TO_BASELINES = {
    "test_gradient_checkpointing_enable_disable": "no GradientCheckpointingLayer: timm checkpoints the backbone itself",
    "test_training_gradient_checkpointing": "no GradientCheckpointingLayer: timm checkpoints the backbone itself",
    "test_training_gradient_checkpointing_use_reentrant_false": "no GradientCheckpointingLayer (timm's checkpointing)",
    "test_training_gradient_checkpointing_use_reentrant_true": "no GradientCheckpointingLayer (timm's checkpointing)",
}


def _skip_not_applicable(cls):
    extra = NOT_APPLICABLE_TO_BASELINES if cls.__name__ != "SEVNetModelTest" else {}
    for name, reason in {**NOT_APPLICABLE, **extra}.items():
        if hasattr(cls, name):

            def skipped(self, _reason=reason):
                self.skipTest(_reason)

            skipped.__name__ = name
            setattr(cls, name, skipped)
    return cls


class AUModelTester:
    """Tiny configs and pixel inputs for one model family (timm's 0.37M-parameter ``test_resnet`` backbone)."""

    def __init__(self, parent, config_class, batch_size: int = 3, **config_fields):
        self.parent = parent
        self.config_class = config_class
        self.config_fields = config_fields
        self.batch_size = batch_size
        self.image_size = IMAGE_SIZE
        self.num_channels = 3
        self.is_training = True
        self.num_labels = len(AUS)
        # The Inter-AU sequence: one token per AU (SEV-Net's attentions / hidden_states).
        self.seq_length = len(AUS)
        self.hidden_size = config_fields.get("inter_au_hidden_size", 24)
        self.num_hidden_layers = config_fields.get("inter_au_num_layers", 2)
        self.num_attention_heads = config_fields.get("inter_au_num_heads", 2)
        if "gcn_hidden_sizes" in config_fields:  # graph baselines: hidden_states are the graph convolutions' outputs
            self.hidden_size = config_fields["gcn_hidden_sizes"][0]
            self.expected_num_hidden_layers = len(config_fields["gcn_hidden_sizes"]) + 1
        # hidden_states (Inter-AU) and vision_hidden_states (backbone stages) are both added by output_hidden_states.
        self.num_hidden_states_types = 2

    def get_config(self):
        fields = dict(
            backbone="test_resnet",
            image_size=IMAGE_SIZE,
            text_hidden_size=16,
            inter_au_hidden_size=24,
            inter_au_num_layers=2,
            inter_au_num_heads=2,
            inter_au_intermediate_size=32,
            inter_au_dropout=0.0,
            aus=AUS,
        )
        fields.update(self.config_fields)
        return self.config_class(**fields)

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class _AUModelTest(ModelTesterMixin, TrainingTesterMixin):
    test_resize_embeddings = False
    test_torch_exportable = True
    config_class = SEVNetConfig
    config_fields: dict = {}
    # TrainingTesterMixin: fewer steps than its 300 default keep the overfit test at a few seconds on CPU.
    training_overfit_steps = 60

    def setUp(self):
        self.model_tester = AUModelTester(self, self.config_class, **self.config_fields)
        self.config_tester = ConfigTester(self, config_class=self.config_class, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is not SEVNetModel:  # the heads' targets: multi-label, one column per AU
            inputs["labels"] = (torch.arange(self.model_tester.batch_size * len(AUS)) % 3 == 0).float().view(-1, len(AUS))
        return inputs


@_skip_not_applicable
class SEVNetModelTest(_AUModelTest, unittest.TestCase):
    all_model_classes = (SEVNetModel, SEVNetForAUDetection)


@_skip_not_applicable
class AUResNetModelTest(_AUModelTest, unittest.TestCase):
    all_model_classes = (AUResNetForAUDetection,)
    config_class = AUResNetConfig
    has_attentions = False

    def test_hidden_states_output(self):
        # No AU sequence: hidden_states are the backbone stages (B x C x h x w, as transformers' ResNet), which the
        # mixin's (seq_length, hidden_size) check cannot describe; checked here the way transformers' ResNet test does.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for flag_in_config in (False, True):
            config.output_hidden_states = flag_in_config
            model = AUResNetForAUDetection(config).eval()
            with torch.no_grad():
                out = model(**inputs) if flag_in_config else model(**inputs, output_hidden_states=True)
            stages = out.hidden_states
            self.assertEqual(len(stages), len(model.backbone.feature_info))
            self.assertEqual(list(stages[0].shape[:2]), [self.model_tester.batch_size, stages[0].shape[1]])
            self.assertEqual(stages[-1].shape, out.visual_features.shape)
            self.assertIs(out.vision_hidden_states, stages)


@_skip_not_applicable
class AUMLGCNModelTest(_AUModelTest, unittest.TestCase):
    all_model_classes = (AUMLGCNForAUDetection,)
    config_class = AUMLGCNConfig
    config_fields = {"graph": GRAPH, "gcn_hidden_sizes": [20]}
    has_attentions = False


@_skip_not_applicable
class AUMSCAMModelTest(_AUModelTest, unittest.TestCase):
    all_model_classes = (AUMSCAMForAUDetection,)
    config_class = AUMSCAMConfig
    config_fields = {"graph": GRAPH, "gcn_hidden_sizes": [20]}
    has_attentions = False


class SEVNetImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("size", {"shortest_edge": 20})
        kwargs.setdefault("crop_size", {"height": 18, "width": 18})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_center_crop", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.5, 0.5, 0.5])
        kwargs.setdefault("image_std", [0.5, 0.5, 0.5])
        super().__init__(parent, batch_size=7, min_resolution=30, max_resolution=80, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin finds in-library processors by the test folder's model name; ours is registered at import.
        return {"torchvision": SEVNetImageProcessor}


class SEVNetImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = SEVNetImageProcessingTester
