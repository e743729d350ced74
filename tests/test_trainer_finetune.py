"""The Trainer path: fine-tune a saved SEV-Net on a dataset with a different AU set (the documented example)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from sevnet_hf import SEVNetForAUDetection, SEVNetImageProcessor
from sevnet_hf.training.trainer_utils import make_compute_metrics
from tests.conftest import tiny_config
from tests.fixtures_data import make_prepared_dataset

EXAMPLE = Path(__file__).parents[1] / "examples" / "finetune_with_trainer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_compute_metrics_matches_the_protocol():
    from transformers import EvalPrediction

    logits = np.array([[2.0, -1.0], [-3.0, 0.5], [1.0, 1.0]])
    labels = np.array([[1, 0], [1, -1], [0, 1]])
    metrics = make_compute_metrics(["AU1", "AU2"])(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics["f1_AU1"] == 100 * 2 / (2 + 1 + 1)  # TP 1, FN 1, FP 1
    assert metrics["f1_AU2"] == 100.0  # the unknown row is ignored
    assert metrics["f1_mean"] == (metrics["f1_AU1"] + metrics["f1_AU2"]) / 2


def test_example_finetunes_a_saved_model_on_another_au_set(tmp_path, tiny_text_encoder_dir):
    data = make_prepared_dataset(tmp_path / "new_aus", aus=(9, 25, 26), size=72)
    torch.manual_seed(0)
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    SEVNetImageProcessor(size=64, crop_size=56).save_pretrained(saved)
    out = tmp_path / "finetuned"
    metrics = load_example().main(
        [
            "--model",
            str(saved),
            "--dataset",
            str(data),
            "--text_encoder",
            tiny_text_encoder_dir,
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--batch_size",
            "4",
        ]
    )
    assert np.isfinite(metrics["test_loss"])
    assert {"test_f1_AU9", "test_f1_AU25", "test_f1_AU26", "test_f1_mean"} <= set(metrics)
    tuned = SEVNetForAUDetection.from_pretrained(out)
    assert tuned.config.au_labels == ["AU9", "AU25", "AU26"]
    assert tuned.au_text_embeddings.shape == (3, 32) and tuned.has_au_text_embeddings
    assert tuned.config.au_descriptions["AU26"].startswith("Jaw drop")
    assert not torch.equal(tuned.sevnet.backbone.conv1.weight, model.sevnet.backbone.conv1.weight)  # it trained
