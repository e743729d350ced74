"""Build the model and image processor a training run starts from (new from pretrained parts, or a checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import torch

from ..image_processing_sevnet import SEVNetImageProcessor
from ..protocols import au_label
from .args import TrainArguments


def model_classes(model_type: str):
    """(config class, model class) for ``--model_type`` (sevnet and the ablation baselines)."""
    from ..modeling_baselines import MODEL_TYPES

    if model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
    return MODEL_TYPES[model_type]


def build_model(args: TrainArguments, aus: list[int], train_labels: np.ndarray):
    """Return ``(model, image_processor)`` for a run on a dataset with AU numbers ``aus``.

    ``train_labels`` (training subjects only) build the label graph of the graph baselines.
    """
    from transformers import AutoModelForImageClassification

    resize = args.resize_size or int(round(args.image_size * 256 / 224))
    if args.model_name_or_path:
        model = AutoModelForImageClassification.from_pretrained(args.model_name_or_path)
        if model.config.aus != list(aus) or args.descriptions:
            # New AU set: new descriptions, recomputed AU table; backbone and Inter-AU weights are reused.
            model.set_au_descriptions(args.descriptions, text_encoder=args.text_encoder, aus=list(aus))
        try:
            processor = SEVNetImageProcessor.from_pretrained(args.model_name_or_path)
        except OSError:
            processor = SEVNetImageProcessor.from_backbone(
                model.config.backbone, size=resize, crop_size=args.image_size
            )
        processor.size, processor.crop_size = resize, args.image_size
        return model, processor
    config_class, model_class = model_classes(args.model_type)
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    config = config_class(
        backbone=args.backbone,
        image_size=args.image_size,
        text_encoder=args.text_encoder,
        id2label={i: au_label(a) for i, a in enumerate(aus)},
        **overrides,
    )
    if hasattr(config, "set_graph_from_labels"):
        config.set_graph_from_labels(train_labels)
    weights = None if args.backbone_weights.lower() == "none" else args.backbone_weights
    model = model_class.from_backbones(
        config, backbone_weights=weights, text_encoder=args.text_encoder, au_descriptions=args.descriptions
    )
    init_au_bias_from_base_rates(model, train_labels)
    processor = SEVNetImageProcessor.from_backbone(args.backbone, size=resize, crop_size=args.image_size)
    return model, processor


def init_au_bias_from_base_rates(model, train_labels: np.ndarray) -> None:
    """Start each per-AU bias (``classifier_per_au_bias``) at the logit of that AU's training base rate.

    The head then starts at the loss of the frequency prior instead of spending its first hundreds of Adam steps
    (each moving a bias by about the learning rate) getting there. Known labels only; rates clipped to [0.01, 0.99].
    """
    au_bias = getattr(getattr(model, "classifier", None), "au_bias", None)
    if au_bias is None:
        return
    labels = np.asarray(train_labels, dtype=np.float64)
    known = (labels == 0) | (labels == 1)
    rates = np.clip((labels * known).sum(0) / np.maximum(known.sum(0), 1), 0.01, 0.99)
    with torch.no_grad():
        au_bias.copy_(torch.from_numpy(np.log(rates / (1 - rates))).to(au_bias.dtype))
