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

from .au_descriptions import load_au_descriptions
from .configuration_sevnet import SEVNetConfig
from .protocols import BP4D_UNKNOWN_CODE, au_label, parse_au
from .text_encoder import TextEncoder, encode_texts, load_text_encoder

try:  # transformers >= 5: initialisers that leave weights loaded from a checkpoint alone
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------
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
        cross_attentions (`torch.FloatTensor` of shape `(batch_size, num_aus, h, w)`, *optional*):
            alpha_k of Eq. 5, each map non-negative and summing to 1. Returned when `output_attentions=True`.
    """

    attended_features: torch.FloatTensor | None = None
    visual_features: torch.FloatTensor | None = None
    au_embeddings: torch.FloatTensor | None = None
    cross_attentions: torch.FloatTensor | None = None


@dataclass
class AUDetectionOutput(ModelOutput):
    """Output of the AU detection heads ([`SEVNetForAUDetection`] and the baselines).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Masked binary cross-entropy (Eq. 7: summed over AUs, averaged over images); unknown labels are ignored.
            Returned when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_aus)`):
            Per-AU logits; `sigmoid(logits) >= threshold` is the occurrence decision.
        cross_attentions (`torch.FloatTensor` of shape `(batch_size, num_aus, h, w)`, *optional*):
            Per-AU attention maps (each sums to 1), when `output_attentions=True` and the model has them.
        visual_features (`torch.FloatTensor` of shape `(batch_size, d_v, h, w)`, *optional*):
            The backbone's spatial map.
        au_embeddings (`torch.FloatTensor` of shape `(num_aus, d_v)`, *optional*):
            The AU embeddings used for attention (or as classifiers, for ML-GCN).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cross_attentions: torch.FloatTensor | None = None
    visual_features: torch.FloatTensor | None = None
    au_embeddings: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks (shared with the baselines)
# ----------------------------------------------------------------------------------------------------------------------
def create_backbone(name: str, output_stride: int | None = None) -> nn.Module:
    """A timm model that returns its un-pooled spatial map from ``forward`` (no download: weights come later).

    ``output_stride`` (8, 16 or 32; ``None``: the model's own) makes the last stages dilated instead of strided, as
    timm's ``output_stride`` does: the same weights, a finer map (resnet18 at 96 px: 6x6 at 16 instead of 3x3).
    """
    kwargs = {} if output_stride is None else {"output_stride": int(output_stride)}
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    except TypeError as err:
        raise ValueError(
            f"timm model {name!r} does not take output_stride={output_stride} ({err}); set backbone_output_stride=None"
        ) from err


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
        encoder = resolve_text_encoder(text_encoder, self.config)
        if encoder.hidden_size != self.config.text_hidden_size:
            raise ValueError(
                f"text encoder {encoder.name!r} is {encoder.hidden_size} wide but this model's Intra-AU table is "
                f"{self.config.text_hidden_size} wide; use the encoder the model was built with ({self.config.text_encoder!r})"
            )
        table = encode_texts(encoder, list(texts.values()), max_length=self.config.text_max_length)
        if numbers != self.config.aus:
            self._change_au_set(numbers)
        self.config.au_descriptions = texts
        self.config.text_encoder = encoder.name
        self.set_au_text_embeddings(table)

    # Why the AU set is fixed, for models that cannot change it (None: ``_change_au_set`` adapts the model).
    fixed_au_set_reason: str | None = "build a new model for the new AUs"

    def _change_au_set(self, numbers: list[int]) -> None:
        raise NotImplementedError


def resolve_text_encoder(text_encoder: str | os.PathLike | TextEncoder | None, config) -> TextEncoder:
    """A loaded encoder as given, or loaded from a Hub id / folder (default: the one named in ``config``)."""
    if isinstance(text_encoder, TextEncoder):
        return text_encoder
    return load_text_encoder(str(text_encoder or config.text_encoder), pooling=config.text_pooling)


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
    _no_split_modules = []

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise SEV-Net's own layers; the timm backbone keeps timm's initialisation (or loaded weights)."""
        std = self.config.initializer_range
        if isinstance(module, AUProjection):
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
        elif isinstance(module, nn.Linear) and not getattr(module, "_in_backbone", False):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and not getattr(module, "_in_backbone", False):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; when registered for auto classes, also map ``AutoModel`` to this class in ``auto_map``.

        So ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` returns the detection model with its head.
        """
        if self._auto_class is not None:
            entry = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": entry}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as usual, then copy tensors that the loader left at unaligned addresses.

        Weights memory-mapped from safetensors can sit at addresses that make BLAS pick other kernels; copying
        them makes a loaded model compute bit-for-bit what the saved one did.
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        return model

    # Whether the model reads the frozen AU text table (the plain ResNet baseline does not).
    uses_au_text = True

    def _build_backbone(self, config) -> nn.Module:
        """The timm backbone, marked so ``_init_weights`` leaves it to timm; sets/validates ``visual_hidden_size``."""
        backbone = create_backbone(config.backbone, getattr(config, "backbone_output_stride", None))
        for module in backbone.modules():
            module._in_backbone = True
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
            text_encoder: Hub id, local folder or a loaded [`TextEncoder`]; defaults to ``config.text_encoder``.
                Models that read no text (``uses_au_text = False``) ignore it.
            au_descriptions: dict, JSON file, or ``None`` for ``config.au_descriptions`` / the shipped descriptions.
        """
        config = config if config is not None else cls.config_class()
        encoder = resolve_text_encoder(text_encoder, config) if cls.uses_au_text else None
        if encoder is not None:
            config.text_encoder = encoder.name
            config.text_pooling = encoder.pooling
            config.text_hidden_size = encoder.hidden_size
        model = cls(config)
        if backbone_weights is not None:
            load_backbone_weights(model.get_backbone(), config.backbone, backbone_weights)
        if encoder is not None:
            model.set_au_descriptions(au_descriptions, text_encoder=encoder)
        return model


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
        layer = nn.TransformerEncoderLayer(
            d_model=config.inter_au_hidden_size,
            nhead=config.inter_au_num_heads,
            dim_feedforward=config.inter_au_intermediate_size,
            dropout=config.inter_au_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,  # post-LN, Eq. 2-3
        )
        self.inter_au_encoder = nn.TransformerEncoder(
            layer, num_layers=config.inter_au_num_layers, enable_nested_tensor=False
        )
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
        table = self.au_text_embeddings.to(self.text_projection.weight.dtype)
        encoded = self.inter_au_encoder(self.text_projection(table).unsqueeze(0)).squeeze(0)
        embeddings = self.au_projection(encoded)
        if cacheable:
            self._au_embedding_cache = (key, embeddings)
        return embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SEVNetModelOutput | tuple:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        visual_features = self.backbone(pixel_values)
        au_embeddings = self.compute_au_embeddings().to(visual_features.dtype)
        attended, alpha = cross_modality_attention(visual_features, au_embeddings)
        attentions = alpha.unflatten(-1, visual_features.shape[-2:]) if output_attentions else None
        output = SEVNetModelOutput(attended, visual_features, au_embeddings, attentions)
        return output if return_dict else output.to_tuple()


class SEVNetForAUDetection(AUTextTableMixin, SEVNetPreTrainedModel):
    """SEV-Net with Eq. 7's classifier (shared across AUs by default) and the masked BCE loss."""

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
        return_dict: bool | None = None,
        **kwargs,
    ) -> AUDetectionOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, num_aus)`, *optional*):
            1 present, 0 absent; a negative value or 9 marks an unknown label, left out of the loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.sevnet(pixel_values, output_attentions=output_attentions, return_dict=True)
        logits = self.classifier(self.dropout(outputs.attended_features))
        loss = None
        if labels is not None:
            loss = masked_bce_loss(logits, labels)
            if self.config.au_diversity_weight > 0:
                loss = loss + self.config.au_diversity_weight * au_embedding_similarity(outputs.au_embeddings)
        output = AUDetectionOutput(
            loss, logits, outputs.cross_attentions, outputs.visual_features, outputs.au_embeddings
        )
        return output if return_dict else output.to_tuple()

    fixed_au_set_reason = None  # the Inter-AU encoder works on any number of AUs

    def get_backbone(self) -> nn.Module:
        return self.sevnet.backbone

    def _change_au_set(self, numbers: list[int]) -> None:
        device = self.au_text_embeddings.device
        self.config.id2label = {i: au_label(n) for i, n in enumerate(numbers)}
        self.config.label2id = {label: i for i, label in self.config.id2label.items()}
        self.config.thresholds = None
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
