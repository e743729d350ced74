"""AU relation graphs for the graph baselines (ML-GCN, MS-CAM) of the SEV-Net ablation.

Two constructions, both computed from the training labels only (the caller picks the training subjects):

- ``pcc_graph``: the SEV-Net paper's re-implementation. Pearson correlation between every pair of AU label columns;
  +1 (positive edge) where it exceeds 0.2, -1 (negative edge) where it is below -0.03, 0 otherwise.
- ``conditional_probability_graph``: ML-GCN's own graph (conditional co-occurrence probabilities, binarised and
  re-weighted exactly as the official ML-GCN code does; see that function).

Labels are an (images x AUs) array, numpy or torch, holding 1 (present), 0 (absent) and unknown codes (any negative
value, or BP4D's 9): the same rule as ``known_label_mask`` in ``modeling_sevnet``. Unknown labels are ignored pairwise:
a statistic of AUs i and j uses only the images where both are known.

Travels with checkpoints for ``trust_remote_code``: numpy (and torch, only to accept tensors) and nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRAPH_TYPES: tuple[str, ...] = ("pcc", "conditional")


def _label_arrays(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values with unknowns set to 0, known mask) as float64 arrays of shape images x AUs."""
    if hasattr(labels, "detach"):  # torch tensor
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"AU labels must be a 2-D array (images x AUs), got shape {array.shape}")
    known = (array >= 0) & (array <= 1)
    values = np.where(known, array, 0.0)
    return values, known.astype(np.float64)


def pcc_matrix(labels: Any) -> np.ndarray:
    """Pearson correlation between every pair of AU columns (AUs x AUs), over the images where both are known.

    A pair with fewer than two jointly known images, or where either column is constant on them, gets 0 (no NaN).
    """
    x, known = _label_arrays(labels)
    count = known.T @ known  # n_ij: images where i and j are both known
    sum_i = x.T @ known  # sum of AU i over those images
    sum_j = sum_i.T
    sum_ij = x.T @ x  # unknowns are 0, so only jointly known images contribute
    sq_i = (x * x).T @ known
    sq_j = sq_i.T
    safe = np.maximum(count, 1.0)
    covariance = sum_ij - sum_i * sum_j / safe
    variance_i = sq_i - sum_i**2 / safe
    variance_j = sq_j - sum_j**2 / safe
    tolerance = 1e-12 * np.maximum(count, 1.0)
    defined = (count >= 2) & (variance_i > tolerance) & (variance_j > tolerance)
    denominator = np.sqrt(np.where(defined, variance_i * variance_j, 1.0))
    return np.clip(np.where(defined, covariance / denominator, 0.0), -1.0, 1.0)


def pcc_graph(labels: Any, positive: float = 0.2, negative: float = -0.03) -> tuple[np.ndarray, np.ndarray]:
    """The SEV-Net paper's AU graph: ``(A, pcc)`` with A_ij = +1 if pcc_ij > positive, -1 if pcc_ij < negative, else 0.

    The diagonal of A is 0 (self-loops are added by ``normalize_adjacency``); ``pcc`` is the full correlation matrix.
    """
    if not negative < positive:
        raise ValueError(f"pcc_graph: negative threshold ({negative}) must be below the positive one ({positive})")
    pcc = pcc_matrix(labels)
    graph = np.where(pcc > positive, 1.0, np.where(pcc < negative, -1.0, 0.0))
    np.fill_diagonal(graph, 0.0)
    return graph, pcc


def conditional_probability_matrix(labels: Any) -> np.ndarray:
    """P_ij = P(AU j present | AU i present) = M_ij / N_i, with a zero diagonal.

    M_ij counts images where both AUs are present; N_i counts images where AU i is present, both taken over the images
    where AUs i and j are known. Where N_i is 0 the probability is 0.
    """
    x, known = _label_arrays(labels)
    present = (x == 1.0).astype(np.float64)
    together = present.T @ present
    occurrences = present.T @ known  # N_i, counted where j is known too
    probability = np.where(occurrences > 0, together / np.maximum(occurrences, 1.0), 0.0)
    np.fill_diagonal(probability, 0.0)
    return probability


def conditional_probability_graph(labels: Any, tau: float = 0.4, p: float = 0.25) -> np.ndarray:
    """ML-GCN's correlation matrix, computed the way its official code (``gen_A`` in ML_GCN's ``util.py``) does.

    1. P_ij = M_ij / N_i (``conditional_probability_matrix``; the diagonal is 0, as the co-occurrence counts of the
       official adjacency files are).
    2. B_ij = 1 if P_ij >= tau else 0.
    3. A_ij = p * B_ij / sum_k B_kj: each COLUMN is divided by its sum (the code's ``sum(0)``; a column without
       edges stays 0 - the code adds 1e-6 to the sum instead, which changes nothing else), then
    4. A = A + I: the identity is added with weight 1.

    This differs from the ML-GCN paper's Eq. 8 (row sums, and 1 - p on the diagonal); we follow the code, which
    produced the published numbers. ``gcn_propagation_matrix`` applies the code's normalisation (``gen_adj``).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"conditional_probability_graph: tau must lie in [0, 1], got {tau}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"conditional_probability_graph: p must lie in [0, 1], got {p}")
    binary = (conditional_probability_matrix(labels) >= tau).astype(np.float64)
    np.fill_diagonal(binary, 0.0)
    column_sums = binary.sum(axis=0, keepdims=True)
    reweighted = np.where(column_sums > 0, binary * p / np.maximum(column_sums, 1.0), 0.0)
    return reweighted + np.eye(binary.shape[0])


def normalize_adjacency(adjacency: Any, add_identity: bool = True) -> np.ndarray:
    """D^-1/2 Â D^-1/2 with Â = A + I (``add_identity``, Kipf and Welling's renormalisation) or Â = A.

    D_ii = sum_j |Â_ij|: absolute values, so negative edges of a signed graph (the PCC graph) keep every degree
    positive; for a non-negative A this is the usual row sum. A node of degree 0 gets an all-zero row and column.
    """
    if hasattr(adjacency, "detach"):
        adjacency = adjacency.detach().cpu().numpy()
    matrix = np.asarray(adjacency, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"normalize_adjacency: expected a square matrix, got shape {matrix.shape}")
    if add_identity:
        matrix = matrix + np.eye(matrix.shape[0])
    degree = np.abs(matrix).sum(axis=1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    return scale[:, None] * matrix * scale[None, :]


def gcn_propagation_matrix(graph: Any, graph_type: str) -> np.ndarray:
    """The matrix a GCN layer multiplies node features with (H' = M H W), for a stored graph of either type.

    ``"pcc"``: M = normalize_adjacency(A, add_identity=True) (symmetric). ``"conditional"``: the identity is already
    in A, and ML-GCN's ``gen_adj`` returns (A D)^T D = (D A D)^T with D = diag(row sums)^-1/2, so
    M = normalize_adjacency(A, add_identity=False).T.
    """
    if graph_type == "pcc":
        return normalize_adjacency(graph, add_identity=True)
    if graph_type == "conditional":
        return normalize_adjacency(graph, add_identity=False).T.copy()
    raise ValueError(f"graph_type must be one of {GRAPH_TYPES}, got {graph_type!r}")
