"""Arguments files: the paper-strict recipe parses into exactly the paper's numbers; bad files get one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevnet_hf import SEVNetConfig
from sevnet_hf.training.loop import parse_args

PAPER_STRICT = Path(__file__).resolve().parents[1] / "examples" / "paper_strict.yaml"


def test_paper_strict_recipe_holds_every_setting_the_paper_states():
    args = parse_args([str(PAPER_STRICT), "--dataset", "prepared/bp4d", "--fold", "2"])
    assert args.dataset == "prepared/bp4d" and args.fold == 2  # flags after the file
    assert args.model_type == "sevnet" and args.backbone == "resnet18" and args.backbone_weights == "none"
    assert args.text_encoder == "sentence-transformers/bert-large-nli-mean-tokens"
    assert (args.image_size, args.resize_size) == (224, 256)
    assert (args.learning_rate, args.lr_decay, args.batch_size, args.epochs) == (1e-3, 0.85, 100, 50)
    config = SEVNetConfig(**json.loads(args.config_overrides))
    assert config.shared_classifier and not config.classifier_per_au_bias
    assert config.backbone_output_stride is None and config.au_diversity_weight == 0.0
    assert config.backbone_feature_stage is None  # V from resnet18's last stage
    assert config.backbone_kwargs == {"zero_init_last": False}  # torchvision's random ResNet-18, not timm's
    assert (config.inter_au_num_layers, config.inter_au_hidden_size, config.inter_au_num_heads) == (2, 768, 6)
    assert config.inter_au_intermediate_size == 1024 and config.text_hidden_size == 1024


def test_flags_after_the_file_override_it():
    args = parse_args([str(PAPER_STRICT), "--dataset", "d", "--epochs", "3"])
    assert args.epochs == 3


def test_an_unknown_key_in_an_arguments_file_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: d\nepochz: 3\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: unknown argument\(s\) epochz"):
        parse_args([str(path)])
