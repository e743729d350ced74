"""SEV-Net: semantic embedding and visual attention for facial action unit detection (Yang et al., CVPR 2021).

Image -> timm backbone -> V (B x d_v x h x w). AU descriptions -> frozen sentence encoder (Intra-AU, computed once and
kept as the buffer ``au_text_embeddings``) -> post-LN transformer over the AU vectors (Inter-AU, Eq. 2-3) -> projection
to d_v -> cross-modality attention over V (Eq. 4-6) -> one shared linear classifier (Eq. 7).

Travels with checkpoints for ``trust_remote_code``: only relative imports of sibling files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .au_descriptions import load_au_descriptions, read_description_file
from .configuration_sevnet import SEVNetConfig
from .protocols import BP4D_UNKNOWN_CODE, DEFAULT_THRESHOLD, au_label, parse_au
from .text_encoder import TextEncoder, encode_texts, load_text_encoder

try:  # transformers >= 5: initialisers that leave weights loaded from a checkpoint alone
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init

try:  # transformers >= 4.52: layers that transformers' gradient checkpointing switches on and off
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # pragma: no cover - older transformers

    class GradientCheckpointingLayer(nn.Module):
        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                return self._gradient_checkpointing_func(super().__call__, *args, **kwargs)
            return super().__call__(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------
_OUTPUT_SHAPES = """
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The Inter-AU sequence (one token per AU): the encoder's input and each layer's output, each of shape
            `(1, num_aus, inter_au_hidden_size)`.
            Returned when `output_hidden_states=True`. The batch dimension is 1: the text path is the same for every
            image, so the tensors the model computed are returned (gradients reach them) and broadcast over images.
            For the graph baselines: each graph convolution's output (widths change per layer); for the ResNet
            baseline (no AU sequence): the backbone stages.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The backbone's stage outputs (timm `forward_intermediates`: stem, then each stage), each of shape
            `(batch_size, channels_i, h_i, w_i)`; the last one is `visual_features`. Returned when
            `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            The Inter-AU self-attention weights, one tensor per layer of shape
            `(1, inter_au_num_heads, num_aus, num_aus)` (batch dimension 1, as `hidden_states`). Returned when
            `output_attentions=True`.
        cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
            The cross-modality attention (Eq. 5) in transformers' layout: a tuple with one tensor (one attention layer,
            one head) of shape `(batch_size, 1, num_aus, h * w)`. The same weights as `au_attention_maps`.
            Returned when `output_attentions=True`."""


@dataclass
class SEVNetModelOutput(ModelOutput):
    """Output of [`SEVNetModel`].

    Args:
        attended_features (`torch.FloatTensor` of shape `(batch_size, num_aus, d_v)`):
            x_k of Eq. 6: the visual map pooled with each AU's attention map.
        visual_features (`torch.FloatTensor` of shape `(batch_size, d_v, h, w)`):
            The backbone's spatial map V.
        au_embeddings (`torch.FloatTensor` of shape `(num_aus, d_v)`):
            The projected Inter-AU embeddings w̄_k (Eq. 4).
        au_attention_maps (`torch.FloatTensor` of shape `(batch_size, num_aus, h, w)`, *optional*):
            alpha_k of Eq. 5 as images: each AU's map over V, non-negative and summing to 1 (for figures). Returned
            when `output_attentions=True`.
    """

    attended_features: torch.FloatTensor | None = None
    visual_features: torch.FloatTensor | None = None
    au_embeddings: torch.FloatTensor | None = None
    au_attention_maps: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AUDetectionOutput(ModelOutput):
    """Output of the AU detection heads ([`SEVNetForAUDetection`] and the baselines).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Masked binary cross-entropy (Eq. 7: summed over AUs, averaged over images); unknown labels are ignored.
            Returned when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_aus)`):
            Per-AU logits; `sigmoid(logits) >= threshold` is the occurrence decision.
        au_attention_maps (`torch.FloatTensor` of shape `(batch_size, num_aus, h, w)`, *optional*):
            Per-AU attention maps (each sums to 1), when `output_attentions=True` and the model has them.
        visual_features (`torch.FloatTensor` of shape `(batch_size, d_v, h, w)`, *optional*):
            The backbone's spatial map.
        au_embeddings (`torch.FloatTensor` of shape `(num_aus, d_v)`, *optional*):
            The AU embeddings used for attention (or as classifiers, for ML-GCN).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    au_attention_maps: torch.FloatTensor | None = None
    visual_features: torch.FloatTensor | None = None
    au_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


SEVNetModelOutput.__doc__ += _OUTPUT_SHAPES
AUDetectionOutput.__doc__ += _OUTPUT_SHAPES


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks (shared with the baselines)
# ----------------------------------------------------------------------------------------------------------------------
def create_backbone(
    name: str, output_stride: int | None = None, extra: Mapping | None = None, feature_stage: int | None = None
) -> nn.Module:
    """A timm model that returns its un-pooled spatial map from ``forward`` (no download: weights come later).

    ``output_stride`` (8, 16 or 32; ``None``: the model's own) makes the last stages dilated instead of strided, as
    timm's ``output_stride`` does: the same weights, a finer map (resnet18 at 96 px: 6x6 at 16 instead of 3x3).
    ``extra``: more keyword arguments for ``timm.create_model`` (``SEVNetConfig.backbone_kwargs``).
    ``feature_stage``: index into the model's ``feature_info`` (negative: from the end) of the stage whose map is
    returned; the later stages are pruned (timm's ``prune_intermediate_layers``). ``None`` or the last index keeps the
    whole model.
    """
    kwargs = dict(extra or {})
    if output_stride is not None:
        kwargs["output_stride"] = int(output_stride)
    try:
        backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    except TypeError as err:
        raise ValueError(
            f"timm model {name!r} does not take {kwargs} ({err}); check backbone_output_stride and backbone_kwargs"
        ) from err
    if feature_stage is not None:
        _prune_to_stage(backbone, name, int(feature_stage))
    return backbone


def _prune_to_stage(backbone: nn.Module, name: str, stage: int) -> None:
    """Drop the stages after ``feature_info[stage]`` so ``backbone(x)`` returns that stage's map."""
    stages = [info["module"] for info in backbone.feature_info]
    if not -len(stages) <= stage < len(stages):
        raise ValueError(
            f"backbone_feature_stage={stage}: timm model {name!r} has {len(stages)} feature stages "
            f"(0-{len(stages) - 1}: {', '.join(stages)}; negative counts from the end)"
        )
    stage %= len(stages)
    if stage == len(stages) - 1:
        return
    if not hasattr(backbone, "prune_intermediate_layers"):
        raise ValueError(
            f"backbone_feature_stage={stage}: timm model {name!r} cannot drop its later stages "
            "(no prune_intermediate_layers); leave backbone_feature_stage unset"
        )
    backbone.prune_intermediate_layers(indices=[stage], prune_norm=False, prune_head=True)
    backbone.kept_feature_stages = stage + 1  # forward_intermediates still lists the pruned stages (as identities)


def backbone_features(
    backbone: nn.Module, pixel_values: torch.Tensor, output_hidden_states: bool = False
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The backbone's spatial map V, and with ``output_hidden_states`` its stage outputs (timm's
    ``forward_intermediates``: stem, then each stage; the last is V). Both paths honour timm's gradient checkpointing."""
    if not output_hidden_states:
        return backbone(pixel_values), None
    final, stages = backbone.forward_intermediates(pixel_values)
    return final, tuple(stages[: getattr(backbone, "kept_feature_stages", len(stages))])


class InterAUSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention``'s parameters (same names, so its checkpoints load), computed as plain scaled
    dot-product attention that returns the weights it used: gradients reach what ``output_attentions`` returns, and
    accelerate's offload hooks (which run on each module's own ``forward``) see every use of the weights."""

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x N x d -> (B x N x d, weights B x heads x N x N)."""
        batch, tokens, width = hidden.shape
        heads = self.num_heads
        qkv = F.linear(hidden, self.in_proj_weight, self.in_proj_bias)
        query, key, value = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((query @ key.transpose(-1, -2)) * (width // heads) ** -0.5, dim=-1)
        context = F.dropout(weights, self.dropout, self.training) @ value
        return self.out_proj(context.transpose(1, 2).reshape(batch, tokens, width)), weights


class InterAULayer(GradientCheckpointingLayer):
    """One post-LN transformer encoder layer over the AU tokens (Eq. 2-3), GELU feed-forward.

    The computation and parameter names of ``nn.TransformerEncoderLayer(norm_first=False, activation="gelu")``, so
    checkpoints saved with that module load unchanged; written out so it can return its attention weights and take
    part in transformers' gradient checkpointing.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.self_attn = InterAUSelfAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden_size, intermediate_size)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(intermediate_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(hidden)
        hidden = self.norm1(hidden + self.dropout1(attended))
        hidden = self.norm2(hidden + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(hidden))))))
        return hidden, (weights if output_attentions else None)


class InterAUEncoder(nn.Module):
    """The Inter-AU transformer: ``num_layers`` [`InterAULayer`]s (state-dict keys ``layers.{i}.*``)."""

    def __init__(self, config: SEVNetConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            InterAULayer(
                config.inter_au_hidden_size,
                config.inter_au_num_heads,
                config.inter_au_intermediate_size,
                config.inter_au_dropout,
            )
            for _ in range(config.inter_au_num_layers)
        )

    def forward(
        self, hidden: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """hidden: 1 x N_AU x d. Returns (last hidden, hidden states or None, attention weights or None)."""
        states = [hidden] if output_hidden_states else None
        weights = [] if output_attentions else None
        for layer in self.layers:
            hidden, layer_weights = layer(hidden, output_attentions)
            if states is not None:
                states.append(hidden)
            if weights is not None:
                weights.append(layer_weights)
        return hidden, (tuple(states) if states is not None else None), (tuple(weights) if weights is not None else None)


def known_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a label is a real 0/1 code; negative values and BP4D's 9 mean "unknown"."""
    return (labels >= 0) & (labels <= 1) & (labels != BP4D_UNKNOWN_CODE)


def masked_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 7: binary cross-entropy summed over known AU labels and averaged over the images of the batch."""
    mask = known_label_mask(labels)
    targets = torch.where(mask, labels, torch.zeros_like(labels)).to(logits.dtype)
    per_label = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (per_label * mask).sum() / logits.shape[0]


def mean_pairwise_cosine(embeddings: torch.Tensor, power: int = 1) -> torch.Tensor:
    """Mean of cos^power between the rows of ``embeddings`` (N x d) over the N (N - 1) ordered pairs of different
    rows; 0 for a single row."""
    count = embeddings.shape[0]
    if count < 2:
        return embeddings.new_zeros(())
    unit = F.normalize(embeddings.float(), dim=-1)
    cosine = (unit @ unit.t()).pow(power)
    return (cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1))


def au_embedding_similarity(au_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between the projected embeddings of different AUs (0: orthogonal, 1: collapsed).

    The regulariser of ``au_diversity_weight``: it keeps the AU vectors apart so Eq. 4 gives each AU its own map.
    """
    return mean_pairwise_cosine(au_embeddings, power=2)


def cross_modality_attention(
    visual_features: torch.Tensor, au_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-6. Returns (attended features B x N x d_v, attention B x N x L) for V of shape B x d_v x h x w.

    z = ReLU(cos(V_i, w_k)); alpha = z / sum_i z; x_k = sum_i alpha_i V_i. Where every z of a map is zero (possible
    because V >= 0 after a ReLU) the map is uniform instead of 0/0, so each map is defined and sums to 1.
    """
    batch, channels, height, width = visual_features.shape
    locations = visual_features.flatten(2).transpose(1, 2)  # B x L x d_v
    cosine = F.normalize(locations, dim=-1) @ F.normalize(au_embeddings, dim=-1).t()  # B x L x N
    z = torch.relu(cosine).transpose(1, 2)  # B x N x L
    total = z.sum(dim=-1, keepdim=True)
    alpha = torch.where(
        total > 0, z / total.clamp_min(torch.finfo(z.dtype).tiny), torch.full_like(z, 1.0 / z.shape[-1])
    )
    return alpha @ locations, alpha


def attention_outputs(alpha: torch.Tensor, visual_features: torch.Tensor, output_attentions: bool) -> dict:
    """Eq. 5's weights (B x N x L) as the outputs return them: ``au_attention_maps`` (B x N x h x w, for figures) and
    ``cross_attentions`` (transformers' layout: one layer, one head, B x 1 x N x L); both None unless asked for."""
    if not output_attentions:
        return {"au_attention_maps": None, "cross_attentions": None}
    maps = alpha.unflatten(-1, visual_features.shape[-2:])
    return {"au_attention_maps": maps, "cross_attentions": (alpha.unsqueeze(1),)}


class AUProjection(nn.Linear):
    """The linear map from the Inter-AU width to d_v (its bias starts at ``au_projection_bias_init``)."""


class PerAUClassifier(nn.Module):
    """One linear classifier per AU (the non-shared variant of Eq. 7)."""

    def __init__(self, num_aus: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_aus, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_aus))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features * self.weight).sum(-1) + self.bias


class SharedClassifier(nn.Linear):
    """Eq. 7's classifier f_C: R^{d_v} -> R, its weights shared by all AUs.

    With ``per_au_bias`` each AU adds its own bias (``au_bias``, N_AU scalars) to the shared linear function, so the
    head can express AU base rates that differ tenfold (AU9 ~5% vs AU7 ~55% of frames) without attention having to.
    """

    def __init__(self, hidden_size: int, num_aus: int = 1, per_au_bias: bool = False):
        super().__init__(hidden_size, 1)
        self.au_bias = nn.Parameter(torch.zeros(num_aus)) if per_au_bias else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = super().forward(features).squeeze(-1)
        return logits + self.au_bias if self.au_bias is not None else logits


class AUTextTableMixin:
    """The frozen Intra-AU table: a persistent buffer computed once from the AU descriptions.

    Expects ``self.au_text_embeddings`` (N_AU x d_text) and ``self.config``.
    """

    def set_au_text_embeddings(self, table: torch.Tensor) -> None:
        expected = (self.config.num_labels, self.config.text_hidden_size)
        if tuple(table.shape) != expected:
            raise ValueError(f"AU text table must have shape {expected} (AUs x text width), got {tuple(table.shape)}")
        buffer = self.au_text_embeddings
        self.au_text_embeddings = table.to(device=buffer.device, dtype=buffer.dtype).clone()

    @property
    def has_au_text_embeddings(self) -> bool:
        return bool(self.au_text_embeddings.abs().sum() > 0)

    def set_au_descriptions(
        self,
        au_descriptions: Mapping[str, str] | str | os.PathLike | None = None,
        text_encoder: str | os.PathLike | TextEncoder | None = None,
        aus: list[int | str] | None = None,
    ) -> None:
        """Recompute the frozen AU text table for new descriptions and/or a new AU set.

        The only place the text encoder runs. Trained weights are kept; with ``aus`` the label set changes where the
        model allows it (``_change_au_set``).
        """
        numbers = [parse_au(a) for a in aus] if aus is not None else self.config.aus
        if numbers != self.config.aus and self.fixed_au_set_reason:
            raise ValueError(
                f"{type(self).__name__} cannot change its AU set ({self.config.au_labels}) in place: "
                f"{self.fixed_au_set_reason}"
            )
        if au_descriptions is None:
            known = self.config.au_descriptions or {}
            au_descriptions = known if all(au_label(n) in known for n in numbers) else None
        texts = load_au_descriptions(numbers, au_descriptions)
        encoder = self._table_encoder(text_encoder)
        table = encode_texts(encoder, list(texts.values()), max_length=self.config.text_max_length)
        if numbers != self.config.aus:
            self._change_au_set(numbers)
        self.config.au_descriptions = texts
        self.config.text_encoder_name_or_path = encoder.name
        self.set_au_text_embeddings(table)

    def _table_encoder(self, text_encoder: str | os.PathLike | TextEncoder | None) -> TextEncoder:
        """The text encoder to (re)compute rows of the AU table with; refused if its width is not the table's."""
        encoder = resolve_text_encoder(text_encoder, self.config)
        if encoder.hidden_size != self.config.text_hidden_size:
            raise ValueError(
                f"text encoder {encoder.name!r} is {encoder.hidden_size} wide but this model's Intra-AU table is "
                f"{self.config.text_hidden_size} wide; use the encoder the model was built with "
                f"({self.config.text_encoder_name_or_path!r})"
            )
        return encoder

    # Why the AU set is fixed, for models that cannot change it (None: ``_change_au_set`` adapts the model).
    fixed_au_set_reason: str | None = "build a new model for the new AUs"

    def _change_au_set(self, numbers: list[int]) -> None:
        raise NotImplementedError


def resolve_text_encoder(text_encoder: str | os.PathLike | TextEncoder | None, config) -> TextEncoder:
    """A loaded encoder as given, or loaded from a Hub id / folder (default: the one named in ``config``)."""
    if isinstance(text_encoder, TextEncoder):
        return text_encoder
    return load_text_encoder(str(text_encoder or config.text_encoder_name_or_path), pooling=config.text_pooling)


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------
class SEVNetPreTrainedModel(PreTrainedModel):
    """Base class: config, weight initialisation, and loading/saving conventions."""

    config_class = SEVNetConfig
    base_model_prefix = "sevnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True
    # Kept whole on one device by device_map="auto": an Inter-AU layer (accelerate would otherwise split
    # nn.MultiheadAttention from the out_proj it calls into) and the timm blocks.
    _no_split_modules = ["InterAULayer", "BasicBlock", "Bottleneck"]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise every parameter and buffer, so keys missing from a checkpoint never hold uninitialised memory.

        The timm backbone gets timm's ResNet scheme (convolutions Kaiming-normal fan-out, norms 1/0, running
        statistics 0/1, the last norm of each residual block 0 where timm zero-initialises it); the frozen AU text
        table starts at zeros ("no table yet": ``has_au_text_embeddings`` is False until ``set_au_descriptions``).
        """
        std = self.config.initializer_range
        if getattr(module, "_in_backbone", False):
            _init_backbone_module(module)
        elif isinstance(module, AUProjection):
            _init.normal_(module.weight, mean=0.0, std=std)
            _init.constant_(module.bias, self.config.au_projection_bias_init)
        elif isinstance(module, SharedClassifier):
            _init.normal_(module.weight, mean=0.0, std=std)
            _init.zeros_(module.bias)
            if module.au_bias is not None:
                _init.zeros_(module.au_bias)
        elif isinstance(module, PerAUClassifier):
            _init.normal_(module.weight, mean=0.0, std=std)
            _init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            _init.xavier_uniform_(module.in_proj_weight)
            _init.zeros_(module.in_proj_bias)
            _init.zeros_(module.out_proj.bias)
        if "au_text_embeddings" in module._buffers:
            _init.zeros_(module.au_text_embeddings)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, **kwargs) -> None:
        """transformers' switch, extended to the timm backbone (timm checkpoints its blocks itself)."""
        backbone = self.get_backbone()
        if hasattr(backbone, "set_grad_checkpointing"):
            backbone.set_grad_checkpointing(enable)
        if any(isinstance(module, GradientCheckpointingLayer) for module in self.modules()):
            if gradient_checkpointing_func is not None:
                kwargs["gradient_checkpointing_func"] = gradient_checkpointing_func
            super()._set_gradient_checkpointing(enable, **kwargs)

    @property
    def is_activation_checkpointing(self) -> bool:
        """transformers' flag, also true when only the timm backbone checkpoints (the baselines have no other layers)."""
        return bool(getattr(self.get_backbone(), "grad_checkpointing", False)) or super().is_activation_checkpointing

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; when registered for auto classes, ``auto_map`` maps ``AutoModel`` to the bare model and the
        task auto class to the head (transformers' convention), so both load with ``trust_remote_code``."""
        if self._auto_class is not None:
            module = type(self).__module__.split(".")[-1]
            entries = {self._auto_class: f"{module}.{type(self).__name__}"}
            bare = getattr(self, "base_model_class_name", None)
            if bare is not None:
                entries["AutoModel"] = f"{module}.{bare}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **entries}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as usual, then copy tensors that the loader left at unaligned addresses.

        Weights memory-mapped from safetensors can sit at addresses that make BLAS pick other kernels; copying
        them makes a loaded model compute bit-for-bit what the saved one did. Returns ``(model, loading_info)`` with
        ``output_loading_info=True``, as transformers does.
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        return loaded

    # The bare model a head is built on (``auto_map["AutoModel"]`` when saved for remote code); None: no bare model.
    base_model_class_name: str | None = None

    # Whether the model reads the frozen AU text table (the plain ResNet baseline does not).
    uses_au_text = True

    def _build_backbone(self, config) -> nn.Module:
        """The timm backbone, marked so ``_init_weights`` initialises it as timm does; sets/validates
        ``visual_hidden_size``."""
        backbone = create_backbone(
            config.backbone,
            getattr(config, "backbone_output_stride", None),
            getattr(config, "backbone_kwargs", None),
            getattr(config, "backbone_feature_stage", None),
        )
        # One spelling per map: a stage index that keeps the whole backbone (e.g. -1) is stored as None.
        kept = getattr(backbone, "kept_feature_stages", None)
        config.backbone_feature_stage = kept - 1 if kept is not None else None
        for module in backbone.modules():
            module._in_backbone = True
        _mark_zero_init_norms(backbone)
        if config.visual_hidden_size is None:
            config.visual_hidden_size = int(backbone.num_features)
        elif config.visual_hidden_size != backbone.num_features:
            raise ValueError(
                f"{type(config).__name__}.visual_hidden_size={config.visual_hidden_size} but backbone "
                f"{config.backbone!r} gives {backbone.num_features} channels; set visual_hidden_size=None to read it "
                "from the backbone"
            )
        return backbone

    def get_backbone(self) -> nn.Module:
        return self.backbone

    @classmethod
    def from_backbones(
        cls,
        config=None,
        backbone_weights: str | os.PathLike | None = "timm",
        text_encoder: str | os.PathLike | TextEncoder | None = None,
        au_descriptions: Mapping[str, str] | str | os.PathLike | None = None,
    ):
        """Start a new model from pretrained parts: timm backbone weights and the frozen text encoder.

        Args:
            config: the model configuration (defaults: resnet18, BERT-Large sentence encoder, the 12 BP4D AUs).
            backbone_weights: ``"timm"`` downloads timm's pretrained weights for ``config.backbone``; a path loads a
                local ``.safetensors``/``.pth``/``.bin`` state dict; ``None`` keeps a random initialisation.
            text_encoder: Hub id, local folder or a loaded [`TextEncoder`]; defaults to ``config.text_encoder_name_or_path``.
                Models that read no text (``uses_au_text = False``) ignore it.
            au_descriptions: dict, JSON file, or ``None`` for ``config.au_descriptions`` / the shipped descriptions.
        """
        config = config if config is not None else cls.config_class()
        encoder = resolve_text_encoder(text_encoder, config) if cls.uses_au_text else None
        if encoder is not None:
            config.text_encoder_name_or_path = encoder.name
            config.text_pooling = encoder.pooling
            config.text_hidden_size = encoder.hidden_size
        model = cls(config)
        if backbone_weights is not None:
            load_backbone_weights(model.get_backbone(), config.backbone, backbone_weights)
        if encoder is not None:
            model.set_au_descriptions(au_descriptions, text_encoder=encoder)
        return model


def _init_backbone_module(module: nn.Module) -> None:
    """timm's ResNet initialisation, one module at a time: convolutions Kaiming-normal (fan-out), norms 1/0 except
    those timm starts at 0 (``zero_init_last``: the last norm of each residual block, marked by ``_build_backbone``),
    running statistics 0/1."""
    if isinstance(module, nn.Conv2d):
        _init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            _init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        if module.weight is not None:
            (_init.zeros_ if getattr(module, "_zero_init", False) else _init.ones_)(module.weight)
            _init.zeros_(module.bias)
        if module.running_mean is not None:
            _init.zeros_(module.running_mean)
            _init.ones_(module.running_var)
            _init.zeros_(module.num_batches_tracked)
    elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and module.weight is not None:
        _init.ones_(module.weight)
        _init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        _init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            _init.zeros_(module.bias)


def _mark_zero_init_norms(backbone: nn.Module) -> None:
    """Mark the norms timm starts at 0 (``zero_init_last``) so ``_init_weights`` gives them 0 again: a backbone key
    missing from a checkpoint then gets what timm would have given it. Read from the weights timm made; on the meta
    device (no values) from the blocks' structure (timm's ResNet blocks zero ``bn3``, else ``bn2``)."""
    for module in backbone.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.modules.batchnorm._NormBase) and weight is not None and not weight.is_meta:
            module._zero_init = not bool(weight.any())
        elif callable(getattr(module, "zero_init_last", None)):
            last = getattr(module, "bn3", None) or getattr(module, "bn2", None)
            if isinstance(last, nn.modules.batchnorm._NormBase):
                last._zero_init = True


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (``torch.compiler.is_compiling`` appeared in torch 2.3)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check and check())


class SEVNetModel(AUTextTableMixin, SEVNetPreTrainedModel):
    """The bare SEV-Net: visual map, AU semantic embeddings and cross-modality attention (no classifier)."""

    def __init__(self, config: SEVNetConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        self.register_buffer("au_text_embeddings", torch.zeros(config.num_labels, config.text_hidden_size))
        self.text_projection = nn.Linear(config.text_hidden_size, config.inter_au_hidden_size)
        self.inter_au_encoder = InterAUEncoder(config)
        self.au_projection = AUProjection(config.inter_au_hidden_size, config.visual_hidden_size)
        self.post_init()

    def compute_au_embeddings(self) -> torch.Tensor:
        """The projected Inter-AU embeddings w̄ (N_AU x d_v) from the frozen text table; independent of the image.

        In inference (eval mode, no grad) the result is cached until a weight or the table changes in place or moves;
        not under ``torch.compile``, which cannot trace the cache's pointer checks (a graph break and a recompile) and
        runs the few small kernels of the Inter-AU encoder cheaply inside the compiled graph instead.
        """
        cacheable = not self.training and not torch.is_grad_enabled() and not _compiling()
        if cacheable:
            tensors = [
                self.au_text_embeddings,
                *self.text_projection.parameters(),
                *self.inter_au_encoder.parameters(),
                *self.au_projection.parameters(),
            ]
            key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
            cached = getattr(self, "_au_embedding_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        embeddings = self._text_path()[0]
        if cacheable:
            self._au_embedding_cache = (key, embeddings)
        return embeddings

    def _attend(self, visual_features: torch.Tensor, au_embeddings: torch.Tensor):
        """Eq. 4-6; the trained AUs and the AUs added by ``add_aus`` in separate calls, so the trained AUs' maps are
        computed exactly as before the addition."""
        trained = self.config.num_trained_aus
        if trained == au_embeddings.shape[0]:
            return cross_modality_attention(visual_features, au_embeddings)
        trained_part = cross_modality_attention(visual_features, au_embeddings[:trained])
        added_part = cross_modality_attention(visual_features, au_embeddings[trained:])
        attended, alpha = (torch.cat(pair, dim=1) for pair in zip(trained_part, added_part))
        return attended, alpha

    def _text_path(self, output_attentions: bool = False, output_hidden_states: bool = False):
        """Intra-AU table -> Inter-AU encoder (Eq. 2-3) -> projection to d_v (Eq. 4's w̄); with its states/weights.

        With AUs added by ``add_aus`` the trained AUs go through the encoder on their own, exactly as before the
        addition (bit for bit), and the added AUs take their rows of a pass over all AUs (they attend to the trained
        ones); states and weights are those of that pass.
        """
        table = self.text_projection(self.au_text_embeddings.to(self.text_projection.weight.dtype)).unsqueeze(0)
        trained = self.config.num_trained_aus
        encoded, states, weights = self.inter_au_encoder(table, output_attentions, output_hidden_states)
        if trained < table.shape[1]:
            alone = self.inter_au_encoder(table[:, :trained])[0]
            encoded = torch.cat([alone, encoded[:, trained:]], dim=1)
        return self.au_projection(encoded.squeeze(0)), states, weights

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SEVNetModelOutput | tuple:
        r"""
        output_attentions (`bool`, *optional*):
            Return the AU attention maps (`au_attention_maps`, `cross_attentions`) and the Inter-AU self-attention
            (`attentions`).
        output_hidden_states (`bool`, *optional*):
            Return the Inter-AU hidden states (`hidden_states`) and the backbone stages (`vision_hidden_states`).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        visual_features, vision_states = backbone_features(self.backbone, pixel_values, output_hidden_states)
        if output_attentions or output_hidden_states:
            au_embeddings, states, weights = self._text_path(output_attentions, output_hidden_states)
        else:
            au_embeddings, states, weights = self.compute_au_embeddings(), None, None
        au_embeddings = au_embeddings.to(visual_features.dtype)
        attended, alpha = self._attend(visual_features, au_embeddings)
        output = SEVNetModelOutput(
            attended_features=attended,
            visual_features=visual_features,
            au_embeddings=au_embeddings,
            hidden_states=states,
            vision_hidden_states=vision_states,
            attentions=weights,
            **attention_outputs(alpha, visual_features, output_attentions),
        )
        return output if return_dict else output.to_tuple()


class SEVNetForAUDetection(AUTextTableMixin, SEVNetPreTrainedModel):
    """SEV-Net with Eq. 7's classifier (shared across AUs by default) and the masked BCE loss."""

    base_model_class_name = "SEVNetModel"

    def __init__(self, config: SEVNetConfig):
        super().__init__(config)
        self.sevnet = SEVNetModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = self._make_classifier(config)
        self.post_init()

    @staticmethod
    def _make_classifier(config: SEVNetConfig) -> nn.Module:
        if config.shared_classifier:
            return SharedClassifier(config.visual_hidden_size, config.num_labels, config.classifier_per_au_bias)
        return PerAUClassifier(config.num_labels, config.visual_hidden_size)

    @property
    def au_text_embeddings(self) -> torch.Tensor:
        return self.sevnet.au_text_embeddings

    @au_text_embeddings.setter
    def au_text_embeddings(self, value: torch.Tensor) -> None:
        self.sevnet.au_text_embeddings = value

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AUDetectionOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, num_aus)`, *optional*):
            1 present, 0 absent; a negative value or 9 marks an unknown label, left out of the loss.
        output_attentions / output_hidden_states (`bool`, *optional*):
            As [`SEVNetModel`]: attention maps and Inter-AU attention; Inter-AU and backbone hidden states.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.sevnet(
            pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True
        )
        features = self.dropout(outputs.attended_features)
        trained = self.config.num_trained_aus
        if trained == features.shape[1]:
            logits = self.classifier(features)
        else:  # the shared classifier on the added AUs separately: the trained AUs' logits stay bit-identical
            logits = torch.cat([self.classifier(features[:, :trained]), self.classifier(features[:, trained:])], 1)
        loss = None
        if labels is not None:
            loss = masked_bce_loss(logits, labels)
            if self.config.au_diversity_weight > 0:
                loss = loss + self.config.au_diversity_weight * au_embedding_similarity(outputs.au_embeddings)
        output = AUDetectionOutput(
            loss=loss,
            logits=logits,
            au_attention_maps=outputs.au_attention_maps,
            visual_features=outputs.visual_features,
            au_embeddings=outputs.au_embeddings,
            hidden_states=outputs.hidden_states,
            vision_hidden_states=outputs.vision_hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
        )
        return output if return_dict else output.to_tuple()

    fixed_au_set_reason = None  # the Inter-AU encoder works on any number of AUs

    def add_aus(
        self,
        au_descriptions: Mapping[str, str] | str | os.PathLike,
        text_encoder: str | os.PathLike | TextEncoder | None = None,
    ) -> list[str]:
        """Add AUs from their descriptions alone, without training (zero-shot): each gets a row of the frozen AU text
        table, computed with the same sentence encoder, and the trained weights score it (its own Inter-AU
        embedding, attention map and shared-classifier logit). The trained AUs' outputs do not change. Returns the
        added labels; the model (config, table) saves and loads with them like any other.

        Args:
            au_descriptions: ``{"AU5": "Upper lid raiser: ..."}`` or a JSON file of that mapping.
            text_encoder: the encoder the model was built with (Hub id, folder or loaded); default: the one named in
                the config. Its width must match the table's.

        Raises ``ValueError`` for a model with per-AU parameters (per-AU heads or per-AU biases: a new AU would have
        none), for AUs the model already has, and for an encoder of another width.
        """
        if not self.config.shared_classifier or self.config.classifier_per_au_bias:
            raise ValueError(
                "add_aus needs a model whose every weight is shared by all AUs: this one has "
                + ("one classifier per AU" if not self.config.shared_classifier else "a bias per AU")
                + ", which a new AU would not have; train with shared_classifier=True, classifier_per_au_bias=False"
            )
        source = au_descriptions
        if not isinstance(source, Mapping):
            try:
                source = read_description_file(Path(source))
            except OSError as err:  # one error type for every bad input (detect reports ValueErrors in one line)
                raise ValueError(f"add_aus: {err}") from err
        new = load_au_descriptions([name for name in source if not str(name).startswith("_")], source)
        known = [label for label in new if label in self.config.au_labels]
        if known:
            raise ValueError(f"add_aus: the model already has {', '.join(known)}")
        if not new:
            raise ValueError("add_aus: no AU descriptions given")
        encoder = self._table_encoder(text_encoder)
        rows = encode_texts(encoder, list(new.values()), max_length=self.config.text_max_length)
        table = torch.cat([self.au_text_embeddings, rows.to(self.au_text_embeddings)], dim=0)
        labels = [*self.config.au_labels, *new]
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {label: i for i, label in enumerate(labels)}
        if self.config.au_descriptions is not None:  # (None only for a model whose table was set by hand)
            self.config.au_descriptions = {**self.config.au_descriptions, **new}
        self.config.zero_shot_aus = [*(self.config.zero_shot_aus or []), *new]
        if self.config.thresholds is not None:
            self.config.thresholds = [*self.config.thresholds, *[DEFAULT_THRESHOLD] * len(new)]
        self.au_text_embeddings = table
        return list(new)

    @torch.no_grad()
    def zero_shot_neighbours(self) -> dict[str, tuple[str, float]]:
        """For each AU added by ``add_aus``: the trained AU whose projected embedding (Eq. 4's w̄) is closest, and the
        cosine between the two. An added AU gets its own map and logit, but with a cosine near 1 its map is that
        trained AU's, so its score is the trained AU's detector read for the new label (on the synthetic set every
        added text, AU or not, came within 0.6-1.0 of one trained AU: README, zero-shot)."""
        trained, labels = self.config.num_trained_aus, self.config.au_labels
        if trained == len(labels):
            return {}
        training = self.sevnet.training
        self.sevnet.eval()  # the embeddings used in prediction (no Inter-AU dropout)
        unit = F.normalize(self.sevnet.compute_au_embeddings().float(), dim=-1)
        self.sevnet.train(training)
        nearest = (unit[trained:] @ unit[:trained].t()).max(dim=-1)
        return {
            labels[trained + i]: (labels[int(index)], float(cosine))
            for i, (cosine, index) in enumerate(zip(nearest.values, nearest.indices))
        }

    def get_backbone(self) -> nn.Module:
        return self.sevnet.backbone

    def _change_au_set(self, numbers: list[int]) -> None:
        device = self.au_text_embeddings.device
        self.config.id2label = {i: au_label(n) for i, n in enumerate(numbers)}
        self.config.label2id = {label: i for i, label in self.config.id2label.items()}
        self.config.thresholds = None
        self.config.zero_shot_aus = None  # a new AU set is one to train on: no AU is zero-shot any more
        self.au_text_embeddings = torch.zeros(len(numbers), self.config.text_hidden_size, device=device)
        if not self.config.shared_classifier or self.config.classifier_per_au_bias:  # per-AU parameters: new ones
            self.classifier = self._make_classifier(self.config).to(device)
            self._init_weights(self.classifier)


def load_backbone_weights(backbone: nn.Module, name: str, weights: str | os.PathLike) -> None:
    """Load pretrained weights into a timm backbone built with ``num_classes=0``.

    ``"timm"`` fetches them by model name (network needed); a path loads a local state dict. The classifier head of
    the checkpoint is dropped. Offline without a file, the error names the file to provide.
    """
    if str(weights) == "timm":
        try:
            pretrained = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
        except Exception as err:
            raise OSError(
                f"Could not fetch timm's pretrained weights for {name!r} ({type(err).__name__}: {err}). Offline, "
                f"download the weights elsewhere (e.g. the model.safetensors of https://huggingface.co/timm/{name}.a1_in1k "
                "or your own checkpoint) and pass backbone_weights=PATH_TO_FILE, or backbone_weights=None to train "
                "from scratch."
            ) from err
        state = pretrained.state_dict()
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist; pass a .safetensors/.pth/.bin file")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = backbone.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if missing:
        raise ValueError(
            f"backbone weights {weights} do not fit timm model {name!r}: {len(missing)} tensors missing or of another "
            f"shape (first: {missing[:3]}); check the backbone name in the config"
        )
    backbone.load_state_dict(usable)
