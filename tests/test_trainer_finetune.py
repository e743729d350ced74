"""The Trainer path: fine-tune a saved SEV-Net on a dataset with a different AU set (the documented example)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
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


@pytest.mark.parametrize(
    ("head", "carried"),
    [
        ({}, True),  # the paper's shared classifier
        ({"classifier_per_au_bias": True}, False),
        ({"shared_classifier": False}, False),
    ],
)
def test_moving_to_another_au_set_says_what_carried_over_per_head_type(tiny_text_encoder_dir, head, carried):
    from sevnet_hf.training.build import adapt_au_set

    torch.manual_seed(0)
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(**head), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    before = {key: value.clone() for key, value in model.state_dict().items()}
    labels = np.array([[1, 0, -1], [1, 0, 0], [0, 1, 1], [1, 0, 1]])
    line = adapt_au_set(model, [9, 25, 26], text_encoder=tiny_text_encoder_dir, train_labels=labels)
    after = model.state_dict()
    assert line.startswith("AU set AU1 AU2 AU4 AU6 AU12 -> AU9 AU25 AU26: carried over sevnet.backbone")
    assert torch.equal(after["sevnet.backbone.conv1.weight"], before["sevnet.backbone.conv1.weight"])
    classifier_kept = all(
        key in before and before[key].shape == value.shape and torch.equal(before[key], value)
        for key, value in after.items()
        if key.startswith("classifier.")
    )
    assert classifier_kept == carried
    if carried:
        assert "so its classifier carried over" in line and "new: sevnet.au_text_embeddings (" in line
    else:
        assert "classifier was re-initialised for the new AUs and must be trained" in line
        assert "new: sevnet.au_text_embeddings, classifier" in line
    if "classifier_per_au_bias" in head:  # new per-AU biases start at the training base rates, as in a new run
        rates = np.clip([3 / 4, 1 / 4, 2 / 3], 0.01, 0.99)
        torch.testing.assert_close(
            model.classifier.au_bias, torch.tensor(np.log(rates / (1 - rates)), dtype=torch.float32)
        )


def test_example_finetunes_a_saved_model_on_another_au_set(tmp_path, tiny_text_encoder_dir, capsys):
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
    printed = capsys.readouterr().out
    assert "AU set AU1 AU2 AU4 AU6 AU12 -> AU9 AU25 AU26: carried over sevnet.backbone" in printed
    assert "a shared classifier (one function for every AU), so its classifier carried over" in printed
    assert np.isfinite(metrics["test_loss"])
    assert {"test_f1_AU9", "test_f1_AU25", "test_f1_AU26", "test_f1_mean"} <= set(metrics)
    tuned = SEVNetForAUDetection.from_pretrained(out)
    assert tuned.config.au_labels == ["AU9", "AU25", "AU26"]
    assert tuned.au_text_embeddings.shape == (3, 32) and tuned.has_au_text_embeddings
    assert tuned.config.au_descriptions["AU26"].startswith("Jaw drop")
    assert not torch.equal(tuned.sevnet.backbone.conv1.weight, model.sevnet.backbone.conv1.weight)  # it trained
