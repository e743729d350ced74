"""AU detection metrics as the field reports them (see ``au_protocols.md``): per-AU F1 with TP/FP/FN accumulated
over the whole test part, unknown labels ignored, and their mean ("Avg").

Also shipped as a local ``evaluate`` module: ``evaluate.load(sevnet_hf.metrics.AU_F1_MODULE_PATH)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..protocols import BP4D_UNKNOWN_CODE, DEFAULT_THRESHOLD

AU_F1_MODULE_PATH = str(Path(__file__).parent / "au_f1")


def _known(labels: np.ndarray) -> np.ndarray:
    return (labels >= 0) & (labels <= 1) & (labels != BP4D_UNKNOWN_CODE)


def au_f1_scores(
    predictions: np.ndarray | Sequence,
    references: np.ndarray | Sequence,
    au_names: Sequence[str] | None = None,
) -> dict[str, float | dict[str, float]]:
    """Per-AU F1, precision and recall (in %, like papers) and their means, over 0/1 ``predictions``.

    ``references`` use 1/0 with unknown coded negative or 9; those entries are left out of the counts.
    Returns ``{"f1": {AU: ..}, "precision": {..}, "recall": {..}, "support": {..}, "f1_mean", "precision_mean",
    "recall_mean"}``. An AU with no positive label and no positive prediction has F1 0 (as sklearn's
    ``zero_division=0``).
    """
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.shape != references.shape or predictions.ndim != 2:
        raise ValueError(
            f"predictions {predictions.shape} and references {references.shape} must both be (images, AUs)"
        )
    names = list(au_names) if au_names is not None else [f"AU{i}" for i in range(predictions.shape[1])]
    if len(names) != predictions.shape[1]:
        raise ValueError(f"au_names has {len(names)} names for {predictions.shape[1]} AU columns")
    known = _known(references)
    truth = (references == 1) & known
    said = (predictions >= 1) & known
    tp = (truth & said).sum(0).astype(float)
    fp = (~truth & said).sum(0).astype(float)
    fn = (truth & ~said).sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0) * 100
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0) * 100
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0) * 100
    result = {
        "f1": dict(zip(names, f1.tolist())),
        "precision": dict(zip(names, precision.tolist())),
        "recall": dict(zip(names, recall.tolist())),
        "support": dict(zip(names, known.sum(0).tolist())),
        "f1_mean": float(f1.mean()),
        "precision_mean": float(precision.mean()),
        "recall_mean": float(recall.mean()),
    }
    return result


def probabilities_to_predictions(
    probabilities: np.ndarray, thresholds: Sequence[float] | float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """0/1 occurrence decisions: probability >= threshold (one per AU, or one for all)."""
    return (np.asarray(probabilities) >= np.asarray(thresholds)).astype(np.int64)


def frequency_prior_f1(train_references: np.ndarray, test_references: np.ndarray, au_names=None, seed: int = 0):
    """Baselines that use only label frequencies: sample each AU from its training base rate, and always predict
    present (the best constant predictor for F1). Returns ``{"prior": scores, "all_present": scores}``."""
    train_references = np.asarray(train_references)
    rates = np.array(
        [
            train_references[_known(train_references[:, k]), k].mean() if _known(train_references[:, k]).any() else 0
            for k in range(train_references.shape[1])
        ]
    )
    rng = np.random.default_rng(seed)
    sampled = (rng.random(np.asarray(test_references).shape) < rates).astype(np.int64)
    ones = np.ones_like(sampled)
    return {
        "prior": au_f1_scores(sampled, test_references, au_names),
        "all_present": au_f1_scores(ones, test_references, au_names),
    }
