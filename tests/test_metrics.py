"""The AU F1 protocol: agrees with scikit-learn on masked data, and loads offline as an evaluate module."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from sevnet_hf.metrics import AU_F1_MODULE_PATH, au_f1_scores, frequency_prior_f1, probabilities_to_predictions


def random_labels(seed=0, n=400, k=6):
    rng = np.random.default_rng(seed)
    refs = (rng.random((n, k)) < rng.uniform(0.1, 0.6, k)).astype(int)
    refs[rng.random((n, k)) < 0.1] = 9
    refs[rng.random((n, k)) < 0.05] = -1
    preds = (rng.random((n, k)) < 0.4).astype(int)
    return preds, refs


def test_agrees_with_sklearn_per_label_on_masked_data():
    preds, refs = random_labels()
    scores = au_f1_scores(preds, refs, [f"AU{i}" for i in range(6)])
    for k in range(6):
        keep = (refs[:, k] == 0) | (refs[:, k] == 1)
        assert scores["f1"][f"AU{k}"] == pytest.approx(100 * f1_score(refs[keep, k], preds[keep, k]))
        assert scores["precision"][f"AU{k}"] == pytest.approx(100 * precision_score(refs[keep, k], preds[keep, k]))
        assert scores["recall"][f"AU{k}"] == pytest.approx(100 * recall_score(refs[keep, k], preds[keep, k]))
        assert scores["support"][f"AU{k}"] == keep.sum()
    assert scores["f1_mean"] == pytest.approx(np.mean(list(scores["f1"].values())))


def test_known_small_case_and_zero_division():
    refs = np.array([[1, 0], [1, 0], [0, 9], [9, 0]])
    preds = np.array([[1, 0], [0, 0], [1, 1], [1, 0]])
    scores = au_f1_scores(preds, refs, ["AU1", "AU2"])
    assert scores["f1"]["AU1"] == pytest.approx(100 * 2 / (2 + 1 + 1))  # TP1 FP1 FN1
    assert scores["f1"]["AU2"] == 0.0  # no positives anywhere among known labels
    with pytest.raises(ValueError, match="must both be"):
        au_f1_scores(preds[:, :1], refs)


def test_evaluate_module_loads_offline_and_matches():
    import evaluate

    preds, refs = random_labels(1)
    metric = evaluate.load(AU_F1_MODULE_PATH)
    for start in range(0, len(preds), 100):  # accumulated over batches, like an evaluation loop
        metric.add_batch(predictions=preds[start : start + 100], references=refs[start : start + 100])
    result = metric.compute(au_names=[f"AU{i}" for i in range(6)])
    direct = au_f1_scores(preds, refs, [f"AU{i}" for i in range(6)])
    assert result["f1_mean"] == pytest.approx(direct["f1_mean"])
    assert result["f1_AU3"] == pytest.approx(direct["f1"]["AU3"])


def test_thresholds_and_frequency_prior():
    probs = np.array([[0.5, 0.49], [0.2, 0.9]])
    assert probabilities_to_predictions(probs).tolist() == [[1, 0], [0, 1]]
    assert probabilities_to_predictions(probs, [0.6, 0.4]).tolist() == [[0, 1], [0, 1]]
    _, refs = random_labels(2, n=4000)
    base = frequency_prior_f1(refs, refs)
    known = (refs == 0) | (refs == 1)
    rate = np.array([(refs[known[:, k], k] == 1).mean() for k in range(refs.shape[1])])
    # Sampling at the base rate gives F1 close to the rate; always-present gives 2p/(1+p).
    assert base["prior"]["f1_mean"] == pytest.approx(100 * rate.mean(), abs=2.5)
    assert base["all_present"]["f1_mean"] == pytest.approx(100 * np.mean(2 * rate / (1 + rate)), abs=1e-6)
