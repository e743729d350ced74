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


def build_model(args: TrainArguments, aus: list[int], train_labels: np.ndarray, verbose: bool = True):
    """Return ``(model, image_processor)`` for a run on a dataset with AU numbers ``aus``.

    ``train_labels`` (training subjects only) build the label graph of the graph baselines and start per-AU biases.
    With ``verbose``, a saved model moved to another AU set prints which of its parts carried over.
    """
    from transformers import AutoModelForImageClassification

    resize = args.resize_size or int(round(args.image_size * 256 / 224))
    if args.model_name_or_path:
        model = AutoModelForImageClassification.from_pretrained(args.model_name_or_path)
        if model.config.aus != list(aus) or args.descriptions:
            carried = adapt_au_set(
                model, aus, descriptions=args.descriptions, text_encoder=args.text_encoder, train_labels=train_labels
            )
            if verbose:
                print(carried, flush=True)
        try:
            processor = SEVNetImageProcessor.from_pretrained(args.model_name_or_path)
        except OSError:
            processor = SEVNetImageProcessor.from_backbone(
                model.config.backbone, size=resize, crop_size=args.image_size
            )
        processor.size = {"shortest_edge": resize}
        processor.crop_size = {"height": args.image_size, "width": args.image_size}
        return model, processor
    config_class, model_class = model_classes(args.model_type)
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    config = config_class(
        backbone=args.backbone,
        image_size=args.image_size,
        text_encoder_name_or_path=args.text_encoder,
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


def _model_part(key: str, prefix: str) -> str:
    """The part a weight belongs to: ``sevnet.backbone`` for ``sevnet.backbone.layer1.0.conv1.weight``,
    ``classifier`` for ``classifier.weight``."""
    pieces = key.split(".")
    return ".".join(pieces[:2]) if pieces[0] == prefix and len(pieces) > 1 else pieces[0]


def adapt_au_set(
    model,
    aus: list[int],
    *,
    descriptions=None,
    text_encoder=None,
    train_labels: np.ndarray | None = None,
) -> str:
    """Move a trained SEV-Net to the AU set ``aus`` (descriptions, recomputed AU text table) and say what carried over.

    What carries over depends on the classifier: a shared classifier (the paper's Eq. 7, one function applied to
    every AU's feature) does not depend on the AU set and is kept; a classifier with per-AU parameters (one
    classifier per AU, or per-AU biases) is rebuilt for the new AUs, untrained; its per-AU biases then start at the
    training base rates (``train_labels``) as in a new run. The answer is read from the weights before and after,
    part by part, and returned as one line to log.
    """
    prefix = getattr(model, "base_model_prefix", "")
    before = {key: value.detach().clone() for key, value in model.state_dict().items()}
    old_labels = list(model.config.au_labels)
    model.set_au_descriptions(descriptions, text_encoder=text_encoder, aus=list(aus))
    after = model.state_dict()
    changed = {
        _model_part(key, prefix)
        for key, value in after.items()
        if key not in before or before[key].shape != value.shape or not torch.equal(before[key], value.detach())
    }
    parts = list(dict.fromkeys(_model_part(key, prefix) for key in after))
    kept = [part for part in parts if part not in changed]
    new = [part for part in parts if part in changed]
    config = model.config
    if not getattr(config, "shared_classifier", True):
        head = "one classifier per AU"
    elif getattr(config, "classifier_per_au_bias", False):
        head = "a shared classifier with per-AU biases"
    else:
        head = "a shared classifier (one function for every AU)"
    if "classifier" in new:
        if train_labels is not None:
            init_au_bias_from_base_rates(model, train_labels)
        verdict = f"the model has {head}, so its classifier was re-initialised for the new AUs and must be trained"
    else:
        verdict = f"the model has {head}, so its classifier carried over"
    return (
        f"AU set {' '.join(old_labels)} -> {' '.join(config.au_labels)}: carried over {', '.join(kept) or 'nothing'}; "
        f"new: {', '.join(new) or 'nothing'} (the AU text table is recomputed from the descriptions); {verdict}."
    )
