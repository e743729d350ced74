"""Configurations of the SEV-Net ablation baselines: ResNet, ML-GCN and MS-CAM (paper Section 4.4, Fig. 3).

They extend [`SEVNetConfig`] so the backbone, AU set, text table, dropout, initialisation and thresholds are set the
same way for every model of the comparison. The AU graph is computed from training labels by the caller
(``config.set_graph_from_labels(train_labels)``) and stored in the config as a plain JSON list of lists.

Travels with checkpoints for ``trust_remote_code``: only relative imports of sibling files.
"""

from __future__ import annotations

import math
from typing import Any

from .au_graphs import GRAPH_TYPES, conditional_probability_graph, pcc_graph
from .configuration_sevnet import SEVNetConfig

GLOBAL_POOLS: tuple[str, ...] = ("avg", "max")


class AUBaselineConfig(SEVNetConfig):
    r"""Shared configuration of the ablation baselines ([`AUResNetConfig`], [`AUMLGCNConfig`], [`AUMSCAMConfig`]).

    Takes every [`SEVNetConfig`] argument (backbone, `aus`/`id2label`, text encoder fields, `classifier_dropout`,
    `shared_classifier`, `au_projection_bias_init`, `initializer_range`, `thresholds`); the Inter-AU transformer
    fields are stored but unused. Graph fields are only used by the graph models.

    Args:
        global_pool (`str`, *optional*):
            `"avg"` or `"max"` pooling of the backbone map for the ResNet and ML-GCN heads. `None` takes the model's
            own choice: `"avg"` for ResNet, `"max"` for ML-GCN (its official code max-pools the last feature map).
            MS-CAM pools with its attention maps and ignores it.
        graph (`list[list[float]]`, *optional*):
            The AU relation graph A (num AUs x num AUs, rows/columns in `id2label` order), before normalisation. Fill
            it with `set_graph_from_labels` on the training labels. The graph models refuse to build without it.
        graph_type (`str`, *optional*, defaults to `"pcc"`):
            `"pcc"`: the SEV-Net paper's signed Pearson-correlation graph (+1/-1/0). `"conditional"`: ML-GCN's own
            re-weighted conditional-probability graph.
        graph_positive_threshold (`float`, *optional*, defaults to 0.2):
            PCC above which two AUs get a positive edge (`"pcc"` graphs).
        graph_negative_threshold (`float`, *optional*, defaults to -0.03):
            PCC below which two AUs get a negative edge (`"pcc"` graphs).
        graph_tau (`float`, *optional*, defaults to 0.4):
            Binarisation threshold of the conditional probabilities (`"conditional"` graphs).
        graph_p (`float`, *optional*, defaults to 0.25):
            Total weight given to a node's neighbours by the re-weighting (`"conditional"` graphs).
        gcn_hidden_sizes (`list[int]`, *optional*, defaults to `[1024]`):
            Widths of the hidden GCN layers between the AU text table and the d_v-wide output (ML-GCN: one hidden
            layer of 1024, i.e. two graph convolutions).
        gcn_leaky_slope (`float`, *optional*, defaults to 0.2):
            Negative slope of the LeakyReLU between graph convolutions.
        graph_embedding_loss_weight (`float`, *optional*, defaults to 0.1):
            MS-CAM only: weight of the auxiliary loss that pulls the cosine similarity of every pair of AU embeddings
            towards the sign of their graph edge (mean squared difference over off-diagonal pairs). Small because
            the BCE term is summed over all AUs; 0 turns it off.
    """

    model_type = "au_baseline"
    default_global_pool = "avg"

    def __init__(
        self,
        global_pool: str | None = None,
        graph: list[list[float]] | None = None,
        graph_type: str = "pcc",
        graph_positive_threshold: float = 0.2,
        graph_negative_threshold: float = -0.03,
        graph_tau: float = 0.4,
        graph_p: float = 0.25,
        gcn_hidden_sizes: list[int] | None = None,
        gcn_leaky_slope: float = 0.2,
        graph_embedding_loss_weight: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.global_pool = global_pool if global_pool is not None else self.default_global_pool
        self.graph = [[float(v) for v in row] for row in graph] if graph is not None else None
        self.graph_type = graph_type
        self.graph_positive_threshold = graph_positive_threshold
        self.graph_negative_threshold = graph_negative_threshold
        self.graph_tau = graph_tau
        self.graph_p = graph_p
        self.gcn_hidden_sizes = [int(v) for v in gcn_hidden_sizes] if gcn_hidden_sizes is not None else [1024]
        self.gcn_leaky_slope = gcn_leaky_slope
        self.graph_embedding_loss_weight = graph_embedding_loss_weight
        self._validate_baseline()

    @property
    def _class_name(self) -> str:
        return type(self).__name__

    def _validate_baseline(self) -> None:
        name = self._class_name
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"{name}.global_pool must be one of {GLOBAL_POOLS} or None, got {self.global_pool!r}")
        if self.graph_type not in GRAPH_TYPES:
            raise ValueError(f"{name}.graph_type must be one of {GRAPH_TYPES}, got {self.graph_type!r}")
        if not -1.0 <= self.graph_negative_threshold < self.graph_positive_threshold <= 1.0:
            raise ValueError(
                f"{name}: need -1 <= graph_negative_threshold < graph_positive_threshold <= 1, got "
                f"{self.graph_negative_threshold} and {self.graph_positive_threshold} (the paper uses -0.03 and 0.2)"
            )
        for field in ("graph_tau", "graph_p"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{name}.{field} must lie in [0, 1], got {getattr(self, field)}")
        if any(size < 1 for size in self.gcn_hidden_sizes):
            raise ValueError(f"{name}.gcn_hidden_sizes must hold positive widths, got {self.gcn_hidden_sizes}")
        if self.gcn_leaky_slope < 0:
            raise ValueError(f"{name}.gcn_leaky_slope must be >= 0, got {self.gcn_leaky_slope}")
        if self.graph_embedding_loss_weight < 0:
            raise ValueError(
                f"{name}.graph_embedding_loss_weight must be >= 0 (0 turns the loss off), got "
                f"{self.graph_embedding_loss_weight}"
            )
        if self.graph is not None:
            self._check_graph(self.graph)

    def _check_graph(self, graph: list[list[float]]) -> None:
        rows = len(graph)
        if rows != self.num_labels or any(len(row) != self.num_labels for row in graph):
            shape = f"{rows}x{len(graph[0]) if rows else 0}"
            raise ValueError(
                f"{self._class_name}.graph is {shape} but the config has {self.num_labels} AUs ({', '.join(self.au_labels)}); "
                "recompute it with config.set_graph_from_labels(train_labels), one label column per AU in id2label order"
            )
        if not all(math.isfinite(v) for row in graph for v in row):
            raise ValueError(f"{self._class_name}.graph holds NaN or infinite entries; recompute it from the labels")

    def set_graph_from_labels(self, labels: Any) -> list[list[float]]:
        """Compute the AU graph of ``graph_type`` from training labels (images x AUs, id2label order) and store it.

        Use the training subjects only. Unknown labels (negative or 9) are ignored pairwise. Returns the stored graph.
        """
        shape = getattr(labels, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.num_labels:
            raise ValueError(
                f"{self._class_name}.set_graph_from_labels: labels must be (images x {self.num_labels}) with columns "
                f"{', '.join(self.au_labels)}; got shape {tuple(shape) if shape is not None else None}"
            )
        if self.graph_type == "pcc":
            graph, _ = pcc_graph(labels, self.graph_positive_threshold, self.graph_negative_threshold)
        else:
            graph = conditional_probability_graph(labels, tau=self.graph_tau, p=self.graph_p)
        stored = [[float(v) for v in row] for row in graph]
        self._check_graph(stored)
        self.graph = stored
        return stored


class AUResNetConfig(AUBaselineConfig):
    r"""Configuration of [`AUResNetForAUDetection`]: backbone, global average pooling, one linear output per AU.

    Same arguments as [`AUBaselineConfig`]; the text and graph fields are unused.
    """

    model_type = "au_resnet"
    default_global_pool = "avg"

    def __init__(self, **kwargs):
        # transformers 5 turns a config subclass without its own __init__ into a dataclass whose generated __init__
        # skips AUBaselineConfig.__init__ (and its defaults and checks); defining one keeps the parent's.
        super().__init__(**kwargs)


class AUMLGCNConfig(AUBaselineConfig):
    r"""Configuration of [`AUMLGCNForAUDetection`] (ML-GCN, Chen et al. CVPR 2019, re-implemented for AUs).

    Same arguments as [`AUBaselineConfig`]; `global_pool` defaults to `"max"` as in ML-GCN's code.
    """

    model_type = "au_mlgcn"
    default_global_pool = "max"

    def __init__(self, **kwargs):
        # transformers 5 turns a config subclass without its own __init__ into a dataclass whose generated __init__
        # skips AUBaselineConfig.__init__ (and its defaults and checks); defining one keeps the parent's.
        super().__init__(**kwargs)


class AUMSCAMConfig(AUBaselineConfig):
    r"""Configuration of [`AUMSCAMForAUDetection`] (MS-CAM / MS-CMA, You et al. AAAI 2020, re-implemented for AUs).

    Same arguments as [`AUBaselineConfig`]; `global_pool` is unused (attention pooling), `shared_classifier` and
    `au_projection_bias_init` act as in SEV-Net, `graph_embedding_loss_weight` sets the auxiliary graph loss.
    """

    model_type = "au_mscam"
    default_global_pool = "avg"

    def __init__(self, **kwargs):
        # transformers 5 turns a config subclass without its own __init__ into a dataclass whose generated __init__
        # skips AUBaselineConfig.__init__ (and its defaults and checks); defining one keeps the parent's.
        super().__init__(**kwargs)
