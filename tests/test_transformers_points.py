"""One test per transformers convention the models follow (issue: transformers conformance, points 1-9), and a
folder saved by an older sevnet_hf that must still load. The mixin suite is tests/test_transformers_conformance.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sevnet_hf import (
    AUMSCAMConfig,
    AUMSCAMForAUDetection,
    AUResNetConfig,
    AUResNetForAUDetection,
    SEVNetConfig,
    SEVNetForAUDetection,
    SEVNetImageProcessor,
    SEVNetModel,
)

AUS = [1, 2, 4, 6, 12]
LEGACY = Path(__file__).parent / "data" / "legacy_sevnet_f0bb8dd"
GRAPH = [[1.0 if i == j else 0.5 for j in range(len(AUS))] for i in range(len(AUS))]


def config(config_class=SEVNetConfig, **fields):
    base = dict(
        backbone="test_resnet",
        image_size=64,
        text_hidden_size=16,
        inter_au_hidden_size=24,
        inter_au_num_heads=2,
        inter_au_intermediate_size=32,
        inter_au_dropout=0.0,
        aus=AUS,
    )
    if config_class is AUMSCAMConfig:
        base.update(graph=GRAPH, gcn_hidden_sizes=[20])
    base.update(fields)
    return config_class(**base)


def model(model_class=SEVNetForAUDetection, config_class=SEVNetConfig, seed=0, **fields):
    torch.manual_seed(seed)
    built = model_class(config(config_class, **fields))
    table = getattr(built, "au_text_embeddings", None)
    if table is not None:
        built.set_au_text_embeddings(torch.randn(len(AUS), 16))
    return built.eval()


def pixels(batch=2, seed=1):
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# 1 -------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_class,config_class",
    [
        (SEVNetModel, SEVNetConfig),
        (SEVNetForAUDetection, SEVNetConfig),
        (AUResNetForAUDetection, AUResNetConfig),
        (AUMSCAMForAUDetection, AUMSCAMConfig),
    ],
)
def test_from_pretrained_returns_loading_info_when_asked(tmp_path, model_class, config_class):
    model(model_class, config_class).save_pretrained(tmp_path)
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is model_class
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert not info["unexpected_keys"]


# 2 -------------------------------------------------------------------------------------------------------------------
def test_keys_missing_from_a_checkpoint_are_initialised_not_left_as_memory(tmp_path):
    model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    stem_conv = next(k for k in weights if k.startswith("sevnet.backbone.conv1") and k.endswith("weight"))
    dropped = [
        "sevnet.au_text_embeddings",
        "sevnet.backbone.bn1.running_var",
        "sevnet.backbone.bn1.running_mean",
        "sevnet.backbone.layer1.0.bn2.weight",
        stem_conv,
        "sevnet.au_projection.bias",
    ]
    save_file({k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors")
    loaded, info = SEVNetForAUDetection.from_pretrained(tmp_path, output_loading_info=True)
    assert set(dropped) <= set(info["missing_keys"])
    backbone = loaded.sevnet.backbone
    assert torch.equal(loaded.au_text_embeddings, torch.zeros(len(AUS), 16)) and not loaded.has_au_text_embeddings
    assert torch.equal(backbone.bn1.running_var, torch.ones_like(backbone.bn1.running_var))
    assert torch.equal(backbone.bn1.running_mean, torch.zeros_like(backbone.bn1.running_mean))
    assert torch.equal(backbone.layer1[0].bn2.weight, torch.zeros_like(backbone.layer1[0].bn2.weight))  # timm: 0
    conv = loaded.get_parameter(stem_conv)  # Kaiming normal, fan-out: sqrt(2 / (out * k * k))
    expected_std = math.sqrt(2.0 / (conv.shape[0] * conv.shape[2] * conv.shape[3]))
    assert abs(float(conv.std()) / expected_std - 1) < 0.25
    assert torch.equal(loaded.sevnet.au_projection.bias, torch.full_like(loaded.sevnet.au_projection.bias, 1.0))
    # What was in the file was kept.
    assert torch.equal(backbone.layer1[0].conv1.weight, weights["sevnet.backbone.layer1.0.conv1.weight"])
    assert torch.isfinite(loaded.eval()(pixels()).logits).all()


def test_graph_buffer_missing_from_a_checkpoint_is_recomputed_from_the_config(tmp_path):
    original = model(AUMSCAMForAUDetection, AUMSCAMConfig)
    original.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "graph_adjacency"}, tmp_path / "model.safetensors")
    loaded = AUMSCAMForAUDetection.from_pretrained(tmp_path)
    assert torch.equal(loaded.graph_adjacency, original.graph_adjacency)


# 3 -------------------------------------------------------------------------------------------------------------------
def test_output_hidden_states_returns_inter_au_and_backbone_states():
    sevnet = model()
    with torch.no_grad():
        plain = sevnet(pixels())
        out = sevnet(pixels(), output_hidden_states=True)
    assert plain.hidden_states is None and plain.vision_hidden_states is None
    assert len(out.hidden_states) == sevnet.config.inter_au_num_layers + 1
    assert all(h.shape == (1, len(AUS), 24) for h in out.hidden_states)
    stages = out.vision_hidden_states
    assert len(stages) == len(sevnet.sevnet.backbone.feature_info)
    assert torch.equal(stages[-1], out.visual_features)
    assert torch.equal(out.logits, plain.logits)  # asking for states changes nothing else


# 4 -------------------------------------------------------------------------------------------------------------------
def test_device_map_auto_with_disk_offload_gives_the_same_logits(tmp_path):
    pytest.importorskip("accelerate")
    original = model()
    original.save_pretrained(tmp_path / "model")
    # A CPU budget smaller than the model: accelerate must place modules on disk, keeping each no-split module whole.
    loaded = SEVNetForAUDetection.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": "600KB"}, offload_folder=str(tmp_path / "offload")
    )
    placement = set(loaded.hf_device_map.values())
    assert "disk" in placement, loaded.hf_device_map
    with torch.no_grad():
        assert torch.allclose(loaded(pixels()).logits, original(pixels()).logits, atol=1e-6)


def test_no_split_modules_keep_attention_and_blocks_whole():
    names = set(SEVNetForAUDetection._no_split_modules)
    sevnet = model()
    classes = {type(m).__name__ for m in sevnet.modules()}
    assert {"InterAULayer", "BasicBlock"} <= names & classes


# 5 -------------------------------------------------------------------------------------------------------------------
def test_text_encoder_field_does_not_take_transformers_text_sub_config_name():
    built = config()
    assert built.get_text_config() is built  # a string named text_encoder used to come back here
    assert "text_encoder" not in built.to_dict()
    assert built.text_encoder_name_or_path == "sentence-transformers/bert-large-nli-mean-tokens"
    old = SEVNetConfig.from_dict({**built.to_dict(), "text_encoder": "my/encoder"})  # a config saved before the rename
    assert old.text_encoder_name_or_path == "my/encoder" and not hasattr(old, "text_encoder")


# 6 -------------------------------------------------------------------------------------------------------------------
def test_attention_outputs_follow_transformers_layout():
    bare = model(SEVNetModel)
    with torch.no_grad():
        out = bare(pixels(3), output_attentions=True)
    assert isinstance(out.attentions, tuple) and len(out.attentions) == bare.config.inter_au_num_layers
    for weights in out.attentions:  # Inter-AU self-attention: (1, heads, N, N), rows sum to 1
        assert weights.shape == (1, 2, len(AUS), len(AUS))
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, len(AUS)))
    height, width = out.visual_features.shape[-2:]
    assert isinstance(out.cross_attentions, tuple) and len(out.cross_attentions) == 1
    assert out.cross_attentions[0].shape == (3, 1, len(AUS), height * width)
    assert out.au_attention_maps.shape == (3, len(AUS), height, width)  # the same weights, as images
    assert torch.equal(out.cross_attentions[0][:, 0], out.au_attention_maps.flatten(2))
    with torch.no_grad():
        assert bare(pixels(3)).attentions is None


# 7 -------------------------------------------------------------------------------------------------------------------
def test_image_processor_takes_per_call_overrides_and_stores_dict_sizes(tmp_path):
    processor = SEVNetImageProcessor(size=72, crop_size=64)
    assert processor.to_dict()["size"] == {"shortest_edge": 72}
    assert processor.to_dict()["crop_size"] == {"height": 64, "width": 64}
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    default = processor(image)["pixel_values"]
    assert default.shape == (1, 3, 64, 64)
    assert processor(image, crop_size={"height": 40, "width": 48}, size=50)["pixel_values"].shape == (1, 3, 40, 48)
    raw = processor(image, do_normalize=False)["pixel_values"]
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0 and not torch.equal(raw, default)
    assert processor(image, do_resize=False, do_center_crop=False)["pixel_values"].shape == (1, 3, 90, 120)
    assert processor.crop_size.height == 64  # a call does not change the processor
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 72} and saved["crop_size"] == {"height": 64, "width": 64}


def test_image_processor_loads_load_without_the_torchvision_fallback_warning(tmp_path, caplog):
    from transformers import AutoImageProcessor
    from transformers.utils import logging as hf_logging

    SEVNetImageProcessor(size=72, crop_size=64).save_pretrained(tmp_path)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            loaded = AutoImageProcessor.from_pretrained(tmp_path)
    finally:
        hf_logging.disable_propagation()
    assert isinstance(loaded, SEVNetImageProcessor)
    assert "backend is not available" not in caplog.text


# 8: AutoModel -> SEVNetModel, task class -> head: tests/test_modeling.py (in-process and trust_remote_code) --------


# 9 -------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_class,config_class", [(SEVNetForAUDetection, SEVNetConfig), (AUResNetForAUDetection, AUResNetConfig)]
)
def test_gradient_checkpointing_gives_the_same_gradients(model_class, config_class):
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]])
    gradients = []
    for checkpointing in (False, True):
        built = model(model_class, config_class).train()
        if checkpointing:
            if hasattr(built, "activation_checkpointing_enable"):  # transformers >= 5.24's name
                built.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                built.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert built.is_activation_checkpointing
            assert built.get_backbone().grad_checkpointing  # timm checkpoints the backbone's blocks
        built(pixels(), labels=labels).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in built.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert model_class.supports_gradient_checkpointing


def test_gradient_checkpointing_reaches_the_inter_au_layers():
    built = model()
    getattr(built, "activation_checkpointing_enable", built.gradient_checkpointing_enable)()
    layers = [m for m in built.modules() if type(m).__name__ == "InterAULayer"]
    assert layers and all(layer.gradient_checkpointing for layer in layers)
    getattr(built, "activation_checkpointing_disable", built.gradient_checkpointing_disable)()
    assert not built.is_activation_checkpointing


# Old folders -----------------------------------------------------------------------------------------------------
def test_folder_saved_before_the_renames_still_loads():
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

    reference = torch.load(LEGACY / "reference.pt")
    assert "text_encoder" in json.loads((LEGACY / "config.json").read_text())  # really the old field name
    loaded, info = SEVNetForAUDetection.from_pretrained(LEGACY, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # nn.TransformerEncoder's keys still fit
    assert loaded.config.text_encoder_name_or_path == "sentence-transformers/bert-large-nli-mean-tokens"
    with torch.no_grad():
        out = loaded.eval()(reference["pixel_values"], output_attentions=True)
    torch.testing.assert_close(out.logits, reference["logits"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.au_attention_maps, reference["attention_maps"], atol=1e-6, rtol=1e-5)
    assert type(AutoModelForImageClassification.from_pretrained(LEGACY)) is SEVNetForAUDetection
    assert type(AutoModel.from_pretrained(LEGACY)) is SEVNetModel
    assert AutoImageProcessor.from_pretrained(LEGACY).square_sizes() == (72, 64)  # ints in the old file
