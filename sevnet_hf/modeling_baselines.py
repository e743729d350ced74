"""Baselines of SEV-Net's ablation (paper Section 4.4, Fig. 3): ResNet, ML-GCN and MS-CAM, re-implemented for AUs.

All three share SEV-Net's building blocks so the comparison changes one thing at a time: the same timm backbone, the
same frozen AU text table (``au_text_embeddings``, filled by ``set_au_descriptions``), the same masked BCE loss and
the same ``AUDetectionOutput``.

- [`AUResNetForAUDetection`]: backbone -> global pooling -> one linear output per AU.
- [`AUMLGCNForAUDetection`]: a GCN over the AU nodes (inputs: the AU text table; graph: ``config.graph``) turns
  each AU into a d_v-wide classifier vector; logits = pooled image feature @ those vectors (ML-GCN, Chen et al. 2019).
- [`AUMSCAMForAUDetection`]: the same GCN's node outputs serve as the AU embeddings w̄_k of SEV-Net's
  cross-modality attention (Eq. 4-6), followed by SEV-Net's classifier (MS-CAM / MS-CMA, You et al. 2020).

Travels with checkpoints for ``trust_remote_code``: only relative imports of sibling files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .au_graphs import gcn_propagation_matrix
from .configuration_baselines import AUBaselineConfig, AUMLGCNConfig, AUMSCAMConfig, AUResNetConfig
from .configuration_sevnet import SEVNetConfig
from .modeling_sevnet import (
    AUDetectionOutput,
    AUTextTableMixin,
    SEVNetForAUDetection,
    SEVNetPreTrainedModel,
    attention_outputs,
    backbone_features,
    cross_modality_attention,
    masked_bce_loss,
)

try:  # transformers >= 5: initialisers that leave weights loaded from a checkpoint alone
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------
def global_pool(visual_features: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool a B x d_v x h x w map to B x d_v by ``"avg"`` or ``"max"``."""
    if mode == "max":
        return visual_features.amax(dim=(-2, -1))
    return visual_features.mean(dim=(-2, -1))


class GraphConvolution(nn.Module):
    """One graph convolution H' = M H W (+ b) (Kipf and Welling), with M given at call time, as in ML-GCN.

    Weights start uniform in +-1/sqrt(out_features) like ML-GCN's layer; the optional bias starts at ``bias_init``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bias_init = bias_init
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, init=nn.init) -> None:
        bound = 1.0 / math.sqrt(self.out_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.constant_(self.bias, self.bias_init)

    def forward(self, node_features: torch.Tensor, propagation: torch.Tensor) -> torch.Tensor:
        """node_features: N x in_features; propagation: N x N (the normalised adjacency). Returns N x out_features."""
        output = propagation @ (node_features @ self.weight)
        return output + self.bias if self.bias is not None else output

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class AUGraphEncoder(nn.Module):
    """Stacked graph convolutions with LeakyReLU between them (none after the last), mapping N x d_in to N x d_out."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: list[int],
        out_features: int,
        negative_slope: float = 0.2,
        output_bias: bool = False,
        output_bias_init: float = 0.0,
    ):
        super().__init__()
        widths = [in_features, *hidden_sizes, out_features]
        self.layers = nn.ModuleList(
            GraphConvolution(
                widths[i],
                widths[i + 1],
                bias=output_bias and i == len(widths) - 2,
                bias_init=output_bias_init,
            )
            for i in range(len(widths) - 1)
        )
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(
        self, node_features: torch.Tensor, propagation: torch.Tensor, output_hidden_states: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """N x d_in -> N x d_out; with ``output_hidden_states`` also each graph convolution's output."""
        hidden = node_features
        states = []
        for index, layer in enumerate(self.layers):
            if index > 0:
                hidden = self.activation(hidden)
            hidden = layer(hidden, propagation)
            states.append(hidden)
        return (hidden, tuple(states)) if output_hidden_states else hidden


def graph_embedding_loss(au_embeddings: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
    """MS-CAM's auxiliary term: mean over pairs i != j of (cos(e_i, e_j) - sign(A_ij + A_ji))^2.

    Related AUs are pulled together (+1), negatively related ones apart (-1), unrelated ones towards orthogonal (0).
    The symmetrised sign makes it apply to the PCC graph (+-1 entries) and the asymmetric conditional graph alike.
    """
    count = au_embeddings.shape[0]
    if count < 2:
        return au_embeddings.new_zeros(())
    normalized = F.normalize(au_embeddings.float(), dim=-1)
    cosine = normalized @ normalized.t()
    graph = graph.to(device=cosine.device, dtype=cosine.dtype)
    target = torch.sign(graph + graph.t())
    off_diagonal = 1.0 - torch.eye(count, dtype=cosine.dtype, device=cosine.device)  # a mask by product: no host sync
    return ((cosine - target) ** 2 * off_diagonal).sum() / (count * (count - 1))


# ----------------------------------------------------------------------------------------------------------------------
# Shared base classes
# ----------------------------------------------------------------------------------------------------------------------
class AUBaselinePreTrainedModel(SEVNetPreTrainedModel):
    """Base of the baselines: SEV-Net's initialisation and saving (``auto_map["AutoModel"]``), plus graph layers."""

    config_class = AUBaselineConfig
    base_model_prefix = "au_baseline"
    main_input_name = "pixel_values"
    uses_au_text = False  # the ResNet baseline reads no text; the graph models set True

    def _hidden(self, output_hidden_states: bool | None) -> bool:
        return bool(output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GraphConvolution):
            module.reset_parameters(init=_init)
        else:
            super()._init_weights(module)
        if "graph_adjacency" in module._buffers and self.config.graph is not None:  # recomputed from the config
            _init.copy_(module.graph_adjacency, self._propagation_tensor(self.config.graph, self.config.graph_type))


class AUGraphPreTrainedModel(AUTextTableMixin, AUBaselinePreTrainedModel):
    """Base of the graph models: the frozen AU text table (node inputs), the graph buffer and the GCN."""

    uses_au_text = True

    def _build_graph_parts(self, config: AUBaselineConfig, output_bias: bool, output_bias_init: float = 0.0) -> None:
        if config.graph is None:
            raise ValueError(
                f"{type(self).__name__} needs an AU graph: call config.set_graph_from_labels(train_labels) on the "
                f"training labels (images x {config.num_labels}) before building the model"
            )
        self.register_buffer("au_text_embeddings", torch.zeros(config.num_labels, config.text_hidden_size))
        self.register_buffer("graph_adjacency", self._propagation_tensor(config.graph, config.graph_type))
        self._graph_on_device: torch.Tensor | None = None  # see graph_tensor()
        self.gcn = AUGraphEncoder(
            config.text_hidden_size,
            config.gcn_hidden_sizes,
            config.visual_hidden_size,
            negative_slope=config.gcn_leaky_slope,
            output_bias=output_bias,
            output_bias_init=output_bias_init,
        )

    fixed_au_set_reason = (
        "its graph is computed for these AUs; make a new config with aus=[...] and set_graph_from_labels(train_labels)"
    )

    @staticmethod
    def _propagation_tensor(graph: list[list[float]], graph_type: str) -> torch.Tensor:
        return torch.tensor(gcn_propagation_matrix(graph, graph_type), dtype=torch.float32)

    def set_graph(self, graph: list[list[float]]) -> None:
        """Replace the AU graph (raw A, num AUs x num AUs) in the config and the normalised buffer."""
        stored = [[float(v) for v in row] for row in graph]
        self.config._check_graph(stored)
        self.config.graph = stored
        buffer = self.graph_adjacency
        self.graph_adjacency = self._propagation_tensor(stored, self.config.graph_type).to(buffer.device, buffer.dtype)
        self._graph_on_device = None

    def graph_tensor(self, device: torch.device) -> torch.Tensor:
        """The raw graph of the config as a tensor on ``device``, copied there once rather than at every step (a copy
        from a Python list blocks the host). Not a buffer: transformers leaves non-persistent buffers uninitialised
        when it loads a checkpoint (measured: garbage values)."""
        if self._graph_on_device is None or self._graph_on_device.device != device:
            self._graph_on_device = torch.tensor(self.config.graph, dtype=torch.float32, device=device)
        return self._graph_on_device

    def compute_au_embeddings(
        self, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """GCN node outputs (num AUs x d_v) from the frozen AU text table, independent of the image; and with
        ``output_hidden_states`` each graph convolution's output (else None)."""
        weight = self.gcn.layers[0].weight
        table = self.au_text_embeddings.to(weight.dtype)
        if not output_hidden_states:
            return self.gcn(table, self.graph_adjacency.to(weight.dtype)), None
        # On a 1 x N x d table, so the returned states (batch dimension 1, as SEV-Net's) are the computed tensors.
        embeddings, states = self.gcn(table.unsqueeze(0), self.graph_adjacency.to(weight.dtype), True)
        return embeddings.squeeze(0), states


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------
class AUResNetForAUDetection(AUBaselinePreTrainedModel):
    """The plain baseline: backbone, global pooling (average by default) and one linear output per AU."""

    config_class = AUResNetConfig

    def __init__(self, config: AUResNetConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.visual_hidden_size, config.num_labels)
        self.post_init()

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
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        visual_features, stages = backbone_features(self.backbone, pixel_values, self._hidden(output_hidden_states))
        pooled = global_pool(visual_features, self.config.global_pool)
        logits = self.classifier(self.dropout(pooled))
        loss = masked_bce_loss(logits, labels) if labels is not None else None
        output = AUDetectionOutput(
            loss=loss, logits=logits, visual_features=visual_features, hidden_states=stages, vision_hidden_states=stages
        )
        return output if return_dict else output.to_tuple()


class AUMLGCNForAUDetection(AUGraphPreTrainedModel):
    """ML-GCN for AUs: GCN node outputs over the AU text table are per-AU classifiers of the pooled image feature.

    Two graph convolutions (text width -> 1024 -> d_v, LeakyReLU(0.2) between, no bias, as ML-GCN) by default;
    logits = pooled @ W^T with W the N_AU x d_v node outputs.
    """

    config_class = AUMLGCNConfig

    def __init__(self, config: AUMLGCNConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        self._build_graph_parts(config, output_bias=False)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.post_init()

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
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self._hidden(output_hidden_states)
        visual_features, stages = backbone_features(self.backbone, pixel_values, hidden)
        pooled = global_pool(visual_features, self.config.global_pool)
        classifiers, states = self.compute_au_embeddings(hidden)
        classifiers = classifiers.to(pooled.dtype)
        logits = self.dropout(pooled) @ classifiers.t()
        loss = masked_bce_loss(logits, labels) if labels is not None else None
        output = AUDetectionOutput(
            loss=loss,
            logits=logits,
            visual_features=visual_features,
            au_embeddings=classifiers,
            hidden_states=states,
            vision_hidden_states=stages,
        )
        return output if return_dict else output.to_tuple()


class AUMSCAMForAUDetection(AUGraphPreTrainedModel):
    """MS-CAM for AUs: GCN-based AU embeddings drive SEV-Net's cross-modality attention (Eq. 4-6) and classifier.

    The last graph convolution has a bias that starts at ``au_projection_bias_init`` (as SEV-Net's AU projection),
    so no AU starts with an all-zero attention map. With labels, the loss adds ``graph_embedding_loss_weight`` times
    [`graph_embedding_loss`] to the masked BCE.
    """

    config_class = AUMSCAMConfig

    def __init__(self, config: AUMSCAMConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        self._build_graph_parts(config, output_bias=True, output_bias_init=config.au_projection_bias_init)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = SEVNetForAUDetection._make_classifier(config)
        self.post_init()

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
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self._hidden(output_hidden_states)
        visual_features, stages = backbone_features(self.backbone, pixel_values, hidden)
        au_embeddings, states = self.compute_au_embeddings(hidden)
        au_embeddings = au_embeddings.to(visual_features.dtype)
        attended, alpha = cross_modality_attention(visual_features, au_embeddings)
        logits = self.classifier(self.dropout(attended))
        loss = None
        if labels is not None:
            loss = masked_bce_loss(logits, labels)
            if self.config.graph_embedding_loss_weight > 0:
                loss = loss + self.config.graph_embedding_loss_weight * graph_embedding_loss(
                    au_embeddings, self.graph_tensor(logits.device)
                )
        output = AUDetectionOutput(
            loss=loss,
            logits=logits,
            visual_features=visual_features,
            au_embeddings=au_embeddings,
            hidden_states=states,
            vision_hidden_states=stages,
            **attention_outputs(alpha, visual_features, output_attentions),
        )
        return output if return_dict else output.to_tuple()


# What training's ``--model-type`` picks from: name -> (config class, model class).
MODEL_TYPES: dict[str, tuple[type[SEVNetConfig], type[SEVNetPreTrainedModel]]] = {
    "sevnet": (SEVNetConfig, SEVNetForAUDetection),
    "resnet": (AUResNetConfig, AUResNetForAUDetection),
    "mlgcn": (AUMLGCNConfig, AUMLGCNForAUDetection),
    "mscam": (AUMSCAMConfig, AUMSCAMForAUDetection),
}
