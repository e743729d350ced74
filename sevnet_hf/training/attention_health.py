"""Attention health: does each AU still get its own attention map?

SEV-Net's mechanism fails silently: if the projected AU embeddings collapse into one direction, every AU gets the
same map, the shared classifier gives one logit per image, and the model is global average pooling in disguise.
Every training epoch therefore records, on the validation faces:

- ``au_embedding_cosine``: mean pairwise cosine between the projected AU embeddings w̄_k (1.0: collapsed);
- ``au_map_tv``: mean total variation distance between the attention maps of two different AUs on one face
  (0: identical maps, 1: disjoint);
- ``dead_map_share``: share of (face, AU) maps whose Eq. 4 is zero everywhere (the uniform fallback, no gradient);
- ``attention_entropy``: map entropy over that of a uniform map (1.0: uniform);
- ``text_path_grad_norm`` (training only): mean L2 norm of the gradient reaching the text path per step.

A run whose embeddings have collapsed (cosine >= :data:`COLLAPSE_COSINE`) says so in a warning.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling_sevnet import mean_pairwise_cosine

# Mean pairwise cosine of the AU embeddings at or above which they count as collapsed. Measured: a collapsed run sits
# at 1.000 (3 decimals) with TV 0.000 between AU maps; the demo recipe with the diversity term sits at 0.04-0.15.
COLLAPSE_COSINE = 0.98
# Modules of the text path (after the frozen table): their gradient norm is recorded per step.
TEXT_PATH_MODULES = ("text_projection", "inter_au_encoder", "au_projection")
# The per-epoch record's keys written by this module (grouped under ``attention/`` in TensorBoard).
ATTENTION_KEYS = (
    "au_embedding_cosine",
    "au_map_tv",
    "dead_map_share",
    "attention_entropy",
    "text_path_grad_norm",
    "attention_collapsed",
)


class AttentionCollapseWarning(UserWarning):
    """The AU embeddings of a run have collapsed into one direction."""


def pairwise_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean cosine between the rows of ``embeddings`` (N x d) over the N (N - 1) ordered pairs of different rows."""
    return mean_pairwise_cosine(embeddings)


def pairwise_map_tv(maps: torch.Tensor) -> torch.Tensor:
    """Per face: mean total variation distance between the maps of two different AUs. ``maps``: B x N x h x w."""
    flat = maps.flatten(2).float()
    count = flat.shape[1]
    if count < 2:
        return flat.new_zeros(flat.shape[0])
    distance = 0.5 * (flat[:, :, None] - flat[:, None]).abs().sum(-1)  # B x N x N, zero on the diagonal
    return distance.sum((1, 2)) / (count * (count - 1))


def dead_maps(visual_features: torch.Tensor, au_embeddings: torch.Tensor) -> torch.Tensor:
    """B x N booleans: Eq. 4's ReLU(cos) is zero at every location (the map fell back to uniform)."""
    locations = F.normalize(visual_features.float().flatten(2).transpose(1, 2), dim=-1)  # B x L x d
    cosine = locations @ F.normalize(au_embeddings.float(), dim=-1).t()  # B x L x N
    return ~(cosine > 0).any(dim=1)


def text_path_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters between the frozen AU table and Eq. 4 (empty for models without a text path)."""
    parameters = []
    for name, module in model.named_modules():
        if name.split(".")[-1] in TEXT_PATH_MODULES:
            parameters.extend(p for p in module.parameters() if p.requires_grad)
    return parameters


def grad_norm(parameters: list[nn.Parameter]) -> torch.Tensor | None:
    """L2 norm of the gradients of ``parameters`` as a device tensor (no host sync); None without gradients."""
    grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class AttentionHealth:
    """Accumulates the health statistics over batches of model outputs (sums on the device, one sync at the end)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.embeddings: torch.Tensor | None = None

    def _add(self, name: str, total: torch.Tensor, count: float) -> None:
        pair = torch.stack([total.detach().float().sum(), total.new_tensor(float(count), dtype=torch.float32)])
        self.sums[name] = self.sums[name] + pair if name in self.sums else pair

    def update(self, outputs) -> None:
        """Add one batch: needs ``au_attention_maps`` (B x N x h x w), ``visual_features`` and ``au_embeddings``."""
        maps = getattr(outputs, "au_attention_maps", None)
        embeddings = getattr(outputs, "au_embeddings", None)
        if maps is None or embeddings is None:
            return
        self.embeddings = embeddings.detach()
        flat = maps.detach().flatten(2).float()
        entropy = -(flat.clamp_min(1e-12) * flat.clamp_min(1e-12).log()).sum(-1) / math.log(max(2, flat.shape[-1]))
        self._add("au_map_tv", pairwise_map_tv(maps.detach()), maps.shape[0])
        self._add("attention_entropy", entropy, entropy.numel())
        dead = dead_maps(outputs.visual_features.detach(), embeddings.detach())
        self._add("dead_map_share", dead.float(), dead.numel())

    def compute(self, reduce=None) -> dict[str, float]:
        """The epoch's statistics; ``reduce`` (e.g. ``accelerator.reduce`` with sum) combines processes' sums."""
        if self.embeddings is None:
            return {}
        result = {"au_embedding_cosine": float(pairwise_cosine(self.embeddings))}
        for name, pair in self.sums.items():
            pair = reduce(pair) if reduce is not None else pair
            result[name] = float(pair[0] / pair[1].clamp_min(1))
        return result


def collapse_message(health: dict[str, float], epoch: int | None = None) -> str | None:
    """A warning text when the AU embeddings have collapsed, else None."""
    cosine = health.get("au_embedding_cosine")
    if cosine is None or cosine < COLLAPSE_COSINE:
        return None
    where = f"epoch {epoch}: " if epoch is not None else ""
    return (
        f"{where}the AU embeddings have collapsed (mean pairwise cosine {cosine:.3f} >= {COLLAPSE_COSINE}; maps of "
        f"different AUs differ by TV {health.get('au_map_tv', float('nan')):.3f}): every AU gets the same attention "
        "map and the shared classifier one logit per image. Raise au_diversity_weight (config) to keep them apart."
    )


def warn_if_collapsed(health: dict[str, float], epoch: int | None = None) -> bool:
    """Warn (:class:`AttentionCollapseWarning`) and return True when the AU embeddings have collapsed."""
    message = collapse_message(health, epoch)
    if message:
        warnings.warn(message, AttentionCollapseWarning, stacklevel=2)
    return message is not None
