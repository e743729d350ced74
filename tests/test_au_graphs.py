"""AU relation graphs: hand-computed PCC and conditional-probability graphs, normalisation, unknown labels."""

import math

import numpy as np
import pytest
import torch

from sevnet_hf.au_graphs import (
    conditional_probability_graph,
    conditional_probability_matrix,
    gcn_propagation_matrix,
    normalize_adjacency,
    pcc_graph,
)

# Columns a, b, c, d; 9 and -1 are unknown codes. d is constant wherever it is known.
LABELS = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 1, -1],
        [0, 1, 0, 0],
        [1, 9, 0, 0],
        [0, 0, -1, 0],
    ]
)


def test_pcc_graph_matches_hand_computation():
    graph, pcc = pcc_graph(LABELS)
    # By hand, each pair over the rows where both are known:
    # a,b (rows 1-4, 6): a=[1,1,0,0,0], b=[1,1,0,1,0] -> cov 0.8 / sqrt(1.2 * 1.2) = 2/3
    # a,c (rows 1-5):    a=[1,1,0,0,1], c=[0,1,1,0,0] -> -0.2 / 1.2 = -1/6
    # b,c (rows 1-4):    b=[1,1,0,1],   c=[0,1,1,0]   -> -0.5 / sqrt(0.75 * 1) = -1/sqrt(3)
    # d is constant -> 0 with everything, itself included.
    expected_pcc = np.array(
        [
            [1, 2 / 3, -1 / 6, 0],
            [2 / 3, 1, -1 / math.sqrt(3), 0],
            [-1 / 6, -1 / math.sqrt(3), 1, 0],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_allclose(pcc, expected_pcc, atol=1e-12)
    assert not np.isnan(pcc).any()
    expected_graph = np.array([[0, 1, -1, 0], [1, 0, -1, 0], [-1, -1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(graph, expected_graph)


def test_pcc_graph_thresholds_are_strict_cuts():
    graph, _ = pcc_graph(LABELS, positive=0.7, negative=-0.2)
    # 2/3 is not above 0.7; -1/6 is not below -0.2; -1/sqrt(3) is.
    np.testing.assert_array_equal(graph[:3, :3], np.array([[0, 0, 0], [0, 0, -1], [0, -1, 0]]))
    with pytest.raises(ValueError, match="negative threshold"):
        pcc_graph(LABELS, positive=0.1, negative=0.2)


def test_unknown_codes_are_ignored_whatever_their_spelling():
    swapped = LABELS.copy()
    swapped[swapped == 9] = -5
    swapped[swapped == -1] = 9
    for other in (swapped, torch.tensor(swapped, dtype=torch.float32)):
        np.testing.assert_allclose(pcc_graph(other)[1], pcc_graph(LABELS)[1], atol=1e-12)
        np.testing.assert_allclose(conditional_probability_graph(other), conditional_probability_graph(LABELS))
    # Treating the unknown row-5 b label as absent would change P(b | a) from 2/2 to 2/3.
    as_absent = LABELS.copy()
    as_absent[4, 1] = 0
    assert conditional_probability_matrix(as_absent)[0, 1] == pytest.approx(2 / 3)
    assert conditional_probability_matrix(LABELS)[0, 1] == pytest.approx(1.0)


def test_conditional_probability_graph_matches_hand_computation():
    # P(j | i) over rows where i is present and j known:
    # a present in rows 1, 2, 5: P(b|a) = 2/2 (row 5 b unknown), P(c|a) = 1/3, P(d|a) = 0
    # b present in rows 1, 2, 4: P(a|b) = 2/3, P(c|b) = 1/3
    # c present in rows 2, 3:    P(a|c) = 1/2, P(b|c) = 1/2, P(d|c) = 0/1 (row 3 d unknown)
    expected_p = np.array([[0, 1, 1 / 3, 0], [2 / 3, 0, 1 / 3, 0], [1 / 2, 1 / 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(conditional_probability_matrix(LABELS), expected_p, atol=1e-12)
    # tau = 0.4 keeps (a,b), (b,a), (c,a), (c,b). Column sums: a 2, b 2, c 0, d 0 -> each edge 0.25 / 2;
    # then the identity is added.
    expected = np.array(
        [[1, 0.125, 0, 0], [0.125, 1, 0, 0], [0.125, 0.125, 1, 0], [0, 0, 0, 1]],
    )
    np.testing.assert_allclose(conditional_probability_graph(LABELS, tau=0.4, p=0.25), expected, atol=1e-12)
    # tau = 0.3 adds (a,c) and (b,c): column c then sums to 2 as well.
    expected[0, 2] = expected[1, 2] = 0.125
    np.testing.assert_allclose(conditional_probability_graph(LABELS, tau=0.3, p=0.25), expected, atol=1e-12)


def test_normalize_adjacency_by_hand():
    graph = np.array([[0, 1, 0], [1, 0, -1], [0, -1, 0]])
    # A + I = [[1,1,0],[1,1,-1],[0,-1,1]], |row| sums 2, 3, 2.
    s6 = 1 / math.sqrt(6)
    expected = np.array([[1 / 2, s6, 0], [s6, 1 / 3, -s6], [0, -s6, 1 / 2]])
    np.testing.assert_allclose(normalize_adjacency(graph), expected, atol=1e-12)
    np.testing.assert_allclose(normalize_adjacency(torch.tensor(graph)), expected, atol=1e-12)
    # Without the identity a node with no edges keeps an all-zero row instead of dividing by zero.
    bare = normalize_adjacency(np.zeros((2, 2)), add_identity=False)
    np.testing.assert_array_equal(bare, np.zeros((2, 2)))


def test_conditional_propagation_follows_ml_gcn_gen_adj():
    graph = conditional_probability_graph(LABELS)
    # Row sums 1.125, 1.125, 1.25, 1; ML-GCN's gen_adj returns (A D)^T D with D = diag(row sums)^-1/2.
    rows = np.array([1.125, 1.125, 1.25, 1.0])
    by_hand = np.array(
        [
            [1 / 1.125, 0.125 / 1.125, 0.125 / math.sqrt(1.125 * 1.25), 0],
            [0.125 / 1.125, 1 / 1.125, 0.125 / math.sqrt(1.125 * 1.25), 0],
            [0, 0, 1 / 1.25, 0],
            [0, 0, 0, 1],
        ]
    )
    propagation = gcn_propagation_matrix(graph, "conditional")
    np.testing.assert_allclose(propagation, by_hand, atol=1e-12)
    a = torch.tensor(graph)
    d = torch.diag(torch.tensor(rows) ** -0.5)
    np.testing.assert_allclose(propagation, ((a @ d).t() @ d).numpy(), atol=1e-12)
    np.testing.assert_allclose(
        gcn_propagation_matrix(pcc_graph(LABELS)[0], "pcc"), normalize_adjacency(pcc_graph(LABELS)[0])
    )
    with pytest.raises(ValueError, match="graph_type"):
        gcn_propagation_matrix(graph, "knn")


def test_bad_label_shapes_are_reported():
    with pytest.raises(ValueError, match="2-D"):
        pcc_graph(np.zeros(5))
    with pytest.raises(ValueError, match="tau"):
        conditional_probability_graph(LABELS, tau=1.5)
