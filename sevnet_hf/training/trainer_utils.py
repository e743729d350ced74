"""``transformers.Trainer`` support: a data collator (crop/flip/normalise) and ``compute_metrics`` (AU F1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.transforms import DeviceAugment, collate_uint8
from ..metrics import au_f1_scores, probabilities_to_predictions


class AUDataCollator:
    """Stacks :class:`~sevnet_hf.data.transforms.AUImageDataset` items and applies the training (random crop + flip)
    or test (center crop) transform with the image processor's statistics; ``random_crop=False`` trains on the center
    crop (``TrainArguments.random_crop``)."""

    def __init__(self, processor, train: bool = True, seed: int = 0, random_crop: bool = True):
        self.augment = DeviceAugment(
            processor.square_sizes()[1], processor.image_mean, processor.image_std, random_crop=random_crop
        )
        self.train = train
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate_uint8(items)
        batch["pixel_values"] = self.augment(batch["pixel_values"], train=self.train, generator=self.generator)
        return batch


def make_compute_metrics(au_names: Sequence[str], thresholds: Sequence[float] | float = 0.5):
    """``compute_metrics`` for Trainer: per-AU F1 (``f1_AU1`` ...) and ``f1_mean``, unknown labels ignored."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        scores = au_f1_scores(probabilities_to_predictions(probabilities, thresholds), np.asarray(labels), au_names)
        return {"f1_mean": scores["f1_mean"], **{f"f1_{name}": value for name, value in scores["f1"].items()}}

    return compute_metrics
