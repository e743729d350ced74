"""The main job (`sevnet-hf demo`) in a reduced size: synthetic data -> train -> test -> figures -> detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevnet_hf.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_in_reduced_size(tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "demo"
    argv = [
        "demo",
        "--output_dir",
        str(out),
        "--preset",
        "quick",
        "--epochs",
        "1",
        "--max_steps_per_epoch",
        "3",
        "--batch_size",
        "8",
        "--image_size",
        "56",
        "--num_workers",
        "0",
        "--progress",
        "false",
        "--baseline",
        "true",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Trained SEV-Net (the paper's shared classifier" in printed and "Next: sevnet-hf detect" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["photo_faces"] == 1  # the astronaut portrait: one face row
    assert 0 <= summary["test_f1_mean"] <= 100 and 0 < summary["frequency_prior_f1_mean"] < 100
    assert "frequency prior" in summary["table"]
    # The paper's head by default, the ResNet-18 baseline beside it, and the attention bars measured on test faces.
    assert summary["shared_classifier"] is True
    assert "| ResNet-18 |" in summary["table"] and 0 <= summary["baselines_f1_mean"]["ResNet-18"] <= 100
    assert summary["attention_map_grid"] == [4, 4]  # 56 px, layer3's stride 16
    assert 0 <= summary["test_map_tv"] <= 1 and summary["test_mass_over_uniform"] > 0
    for path in (summary["training_curve"], summary["attention_figure"], out / "photo_aus.csv"):
        assert Path(path).is_file(), path
    model = AutoModelForImageClassification.from_pretrained(summary["model_dir"])
    assert len(model.config.au_labels) >= 15 and model.has_au_text_embeddings
    assert model.config.text_hidden_size == 384  # the offline MiniLM sentence encoder
    assert model.config.shared_classifier and not model.config.classifier_per_au_bias
    assert model.config.backbone_output_stride == 16 and model.config.au_diversity_weight == 10.0
    assert model.config.backbone_feature_stage == 3 and model.config.visual_hidden_size == 256  # resnet18's layer3
    assert model.config.au_projection_bias_init == 0.1 and model.config.backbone_kwargs == {"zero_init_last": False}
    # It leaves what a user needs (model folders, figures, CSV, metrics, the prepared faces) and says how much.
    for run in (out / "train", out / "baseline_resnet"):
        assert not (run / "checkpoints").exists() and not (run / "best_model").exists(), run
        assert (run / "model" / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    assert not (out / "data" / "decoded").exists() and not (out / "data" / "shards").exists()
    assert (out / "data" / "dataset").is_dir()
    left = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert 0 <= left - summary["disk_left_bytes"] < 4096  # all but demo_summary.json itself
    assert summary["disk_removed_bytes"] > 2 * left  # checkpoints with optimizer state, model copies, caches
    assert f"Left {left / 1e6:.1f} MB in {out}: attention_maps.png" in printed
    # Running again reuses the prepared data and the finished trainings (resumable main job).
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing the prepared faces" in printed and printed.count("reusing the finished training") == 2
    assert not (out / "train" / "checkpoints").exists()


def test_demo_recipe_defaults_and_their_switches(tmp_path):
    """The demo's recipe fields reach the training arguments: center-crop training, torchvision's block start and the
    AU projection's bias start by default, and each switch gives the paper's / the library's setting back."""
    from sevnet_hf.training.demo import DemoArguments, demo_train_arguments

    recipe = demo_train_arguments(DemoArguments(), tmp_path / "data", tmp_path / "train", "minilm")
    overrides = json.loads(recipe.config_overrides)
    assert recipe.random_crop is False
    assert overrides["backbone_kwargs"] == {"zero_init_last": False}
    assert overrides["au_projection_bias_init"] == 0.1
    assert overrides["backbone_feature_stage"] == 3 and recipe.image_size == 128  # layer3's 8x8 map
    switched = DemoArguments(
        random_crop=True, zero_init_last=True, au_projection_bias_init=1.0, backbone_feature_stage=-1, image_size=96
    )
    recipe = demo_train_arguments(switched, tmp_path / "data", tmp_path / "train", "minilm")
    overrides = json.loads(recipe.config_overrides)
    assert recipe.random_crop is True and overrides["backbone_kwargs"] is None
    assert overrides["au_projection_bias_init"] == 1.0
    assert overrides["backbone_feature_stage"] == -1 and recipe.image_size == 96  # layer4's recipe back


def test_demo_mixed_precision_auto_takes_bf16_only_on_a_cpu_with_native_bf16(tmp_path, monkeypatch):
    """``--mixed_precision auto`` (the demo's default) gives bf16 and 8 epochs where oneDNN runs bf16 natively, fp32 and
    6 epochs where bf16 would be emulated (slower); explicit choices reach the training arguments unchanged."""
    import torch

    from sevnet_hf.training.demo import DemoArguments, demo_mixed_precision, demo_train_arguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert demo_mixed_precision("auto") == "bf16"
    recipe = demo_train_arguments(DemoArguments(), tmp_path, tmp_path / "t", "minilm")
    assert (recipe.mixed_precision, recipe.epochs) == ("bf16", 8)  # the time bf16 saves goes to more epochs
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert demo_mixed_precision("auto") == "no"
    recipe = demo_train_arguments(DemoArguments(), tmp_path, tmp_path / "t", "minilm")
    assert (recipe.mixed_precision, recipe.epochs) == ("no", 6)
    assert demo_train_arguments(DemoArguments(epochs=3), tmp_path, tmp_path / "t", "minilm").epochs == 3
    for choice in ("no", "bf16", "fp16"):
        recipe = demo_train_arguments(DemoArguments(mixed_precision=choice), tmp_path, tmp_path / "t", "minilm")
        assert recipe.mixed_precision == choice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # on a GPU: what train's auto resolves to
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    recipe = demo_train_arguments(DemoArguments(), tmp_path, tmp_path / "t", "minilm")
    assert (recipe.mixed_precision, recipe.epochs) == ("bf16", 8)
