"""``sevnet-hf zeroshot``: AUs the model was never trained on, scored from their descriptions alone, and measured.

1. Trains SEV-Net (the demo's recipe; shared classifier without per-AU biases) on the dataset's AUs minus
   ``--holdout_aus`` (``TrainArguments.exclude_aus``: the held-out AUs' labels are not read).
2. Gives each trained model the held-out AUs with ``SEVNetForAUDetection.add_aus`` (their descriptions through the
   same frozen text encoder; no weight changes) and tests every AU on the fold's unseen test subjects: ROC-AUC, F1 at
   0.5, F1 at the threshold that marks as many test faces as the AU's training base rate (its labels were held out of
   training, not of the count), and the frequency prior's F1.
3. Controls, so a number means something: the held-out AUs get (a) ``shuffled``: another held-out AU's description
   (rotated; with one held-out AU, the first trained AU's) and (b) ``unrelated``: a description of a region no AU moves.
   A zero-shot signal beats both.

Without ``--dataset`` the synthetic demo set is made (as ``sevnet-hf demo`` does). Defaults hold out one brow, one
eye/cheek and one mouth AU of the synthetic set (AU2, AU7, AU26). Results go to ``zeroshot.json`` and print as tables.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic_io import write_json_atomic
from ..metrics import au_f1_scores
from ..protocols import au_label, parse_au
from .demo import DemoArguments

CONDITIONS = ("descriptions", "shuffled", "unrelated")
UNRELATED_DESCRIPTION = (
    "The ears stay where they are and the hair on top of the head does not move; this describes the ears and the "
    "scalp, not the brows, eyes, nose, cheeks, lips or jaw."
)


@dataclass
class ZeroShotArguments(DemoArguments):
    output_dir: str = field(default="outputs/zeroshot", metadata={"help": "Where data, models and results go."})
    dataset: str | None = field(
        default=None, metadata={"help": "Prepared dataset folder; default: make the synthetic set (--preset)."}
    )
    holdout_aus: str = field(
        default="2,7,26",
        metadata={"help": "AUs left out of training and tested from their descriptions (brow, eye, mouth)."},
    )
    seeds: str = field(default="0,1", metadata={"help": "Training seeds, comma-separated (one model each)."})
    descriptions: str | None = field(
        default=None, metadata={"help": "JSON file of descriptions for the held-out AUs (default: the shipped ones)."}
    )
    unrelated_description: str = field(
        default=UNRELATED_DESCRIPTION, metadata={"help": "The control text about a region no AU moves."}
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (sklearn's) over the known 0/1 labels; NaN if one class is missing."""
    from sklearn.metrics import roc_auc_score

    known = (labels == 0) | (labels == 1)
    if len(np.unique(labels[known])) < 2:
        return float("nan")
    return float(roc_auc_score(labels[known], scores[known]))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """One AU's F1 (%) as the field counts it (``metrics.au_f1_scores``: unknown labels left out)."""
    return au_f1_scores(predictions[:, None], labels[:, None])["f1_mean"]


def au_scores(probabilities: np.ndarray, labels: np.ndarray, base_rate: float, seed: int = 0) -> dict:
    """ROC-AUC, F1 at 0.5, F1 at the base-rate threshold (the top ``base_rate`` share of faces marked present) and the
    frequency prior's F1 (each face marked present with probability ``base_rate``) for one AU."""
    known = (labels == 0) | (labels == 1)
    threshold = float(np.quantile(probabilities[known], 1 - base_rate)) if known.any() and base_rate > 0 else 1.0
    prior = (np.random.default_rng(seed).random(len(labels)) < base_rate).astype(int)
    return {
        "roc_auc": roc_auc(probabilities, labels),
        "f1_at_0.5": _f1((probabilities >= 0.5).astype(int), labels),
        "f1_at_base_rate": _f1((probabilities >= threshold).astype(int), labels),
        "base_rate_threshold": threshold,
        "f1_frequency_prior": _f1(prior, labels),
        "base_rate": base_rate,
    }


def control_descriptions(holdout: list[str], texts: dict[str, str], trained: list[str], unrelated: str) -> dict:
    """The held-out AUs' texts per condition: their own, another held-out AU's (rotated by one), an unrelated one."""
    if len(holdout) > 1:
        shuffled = {au: texts[holdout[(i + 1) % len(holdout)]] for i, au in enumerate(holdout)}
    else:
        shuffled = {holdout[0]: texts[trained[0]]}
    return {
        "descriptions": {au: texts[au] for au in holdout},
        "shuffled": shuffled,
        "unrelated": {au: unrelated for au in holdout},
    }


def evaluate_seed(model_dir: Path, test, train_labels: dict[str, np.ndarray], holdout, texts, args, encoder) -> dict:
    """Every condition's scores for one trained model."""
    from .demo import load_trained, predict_probabilities

    base, processor = load_trained(model_dir)
    trained = list(base.config.au_labels)
    faces = list(test["image"])
    out = {}
    for condition, descriptions in control_descriptions(holdout, texts, trained, args.unrelated_description).items():
        model = copy.deepcopy(base)  # each condition adds the held-out AUs to the trained model as saved
        model.add_aus(descriptions, text_encoder=encoder)
        probabilities = predict_probabilities(model, processor, faces)
        out[condition] = {}
        for k, au in enumerate(model.config.au_labels):
            if condition != "descriptions" and au not in holdout:
                continue
            labels = np.asarray(test[au], dtype=float)
            rate = float(np.mean(train_labels[au][(train_labels[au] == 0) | (train_labels[au] == 1)]))
            out[condition][au] = au_scores(probabilities[:, k], labels, rate)
    return out


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def _table_row(au: str, condition: str, rows: list[dict]) -> str:
    """One line of the printed table: an AU's figures under one condition, averaged over seeds."""
    figures = [_mean(r[key] for r in rows) for key in ("roc_auc", "f1_at_0.5", "f1_at_base_rate", "f1_frequency_prior")]
    return f"{au:<7} {condition:<13} {figures[0]:8.3f} {figures[1]:7.1f} {figures[2]:8.1f} {figures[3]:9.1f}"


def summary_table(per_seed: dict[int, dict], holdout: list[str]) -> tuple[str, dict]:
    """A text table of the held-out AUs per condition and of the trained AUs (means over seeds), and the headline
    numbers."""
    lines = ["AU      condition      ROC-AUC  F1@0.5  F1@base  prior-F1"]
    headline = {}
    for condition in CONDITIONS:
        for au in holdout:
            lines.append(_table_row(au, condition, [per_seed[s][condition][au] for s in per_seed]))
        headline[condition] = _mean(_mean(per_seed[s][condition][au]["roc_auc"] for s in per_seed) for au in holdout)
    trained = [au for au in next(iter(per_seed.values()))["descriptions"] if au not in holdout]
    for au in trained:  # the same figures for the AUs the model was trained on
        lines.append(_table_row(au, "trained", [per_seed[s]["descriptions"][au] for s in per_seed]))
    headline["trained_aus"] = _mean(per_seed[s]["descriptions"][au]["roc_auc"] for s in per_seed for au in trained)
    headline["per_seed"] = {
        s: {c: _mean(per_seed[s][c][au]["roc_auc"] for au in holdout) for c in CONDITIONS} for s in per_seed
    }
    lines.append(
        f"mean ROC-AUC over held-out AUs: own descriptions {headline['descriptions']:.3f}, shuffled "
        f"{headline['shuffled']:.3f}, unrelated {headline['unrelated']:.3f}; trained AUs {headline['trained_aus']:.3f}"
    )
    return "\n".join(lines), headline


def run(args: ZeroShotArguments) -> dict:
    from ..au_descriptions import load_au_descriptions
    from ..data.schema import load_prepared, read_metadata
    from ..offline_assets import minilm_encoder_path
    from ..text_encoder import load_text_encoder
    from .demo import _test_part, _train_or_reuse, demo_train_arguments, make_synthetic_data

    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    holdout_numbers = [parse_au(a) for a in args.holdout_aus.split(",") if a.strip()]
    holdout = [au_label(n) for n in holdout_numbers]
    data_dir = Path(args.dataset) if args.dataset else out / "data"
    if not args.dataset:
        make_synthetic_data(data_dir, args)
    metadata = read_metadata(data_dir)
    columns = list(metadata["au_columns"])
    missing = [au for au in holdout if au not in columns]
    if missing:
        raise SystemExit(f"sevnet-hf zeroshot: --holdout_aus {', '.join(missing)} not in {data_dir} ({columns})")
    if not args.shared_classifier or args.per_au_bias:
        raise SystemExit("sevnet-hf zeroshot: new AUs need the shared classifier without per-AU biases")
    texts = load_au_descriptions(holdout_numbers, args.descriptions)
    texts.update(load_au_descriptions([parse_au(c) for c in columns if c not in holdout]))
    encoder_path = args.text_encoder or minilm_encoder_path()
    encoder = load_text_encoder(encoder_path)
    dataset = load_prepared(data_dir)

    per_seed, trainings = {}, {}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        args.seed = seed
        train_args = demo_train_arguments(args, data_dir, out / f"train_seed{seed}", encoder_path)
        train_args.exclude_aus = ",".join(holdout)
        print(f"[seed {seed}] training on {len(columns) - len(holdout)} AUs (held out: {', '.join(holdout)})", flush=True)
        results, _ = _train_or_reuse(train_args)
        train_subjects = set(results["subjects"]["train"])
        train_rows = [i for i, s in enumerate(dataset["subject"]) if s in train_subjects]
        train_labels = {au: np.asarray(dataset.select(train_rows)[au], dtype=float) for au in columns}
        test = _test_part(data_dir, results)
        print(f"[seed {seed}] testing {len(test)} faces of unseen subjects: own, shuffled, unrelated texts", flush=True)
        per_seed[seed] = evaluate_seed(out / f"train_seed{seed}" / "model", test, train_labels, holdout, texts, args, encoder)
        trainings[seed] = {"test_f1_mean_trained_aus": results.get("test", {}).get("f1_mean")}
    table, headline = summary_table(per_seed, holdout)
    summary = {
        "holdout_aus": holdout,
        "seeds": list(per_seed),
        "fold": args.fold,
        "dataset": str(data_dir),
        "text_encoder": Path(encoder_path).name,
        "headline_mean_roc_auc": headline,
        "per_seed": per_seed,
        "trainings": trainings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "zeroshot.json", summary)
    print(table, flush=True)
    print(f"Results: {out / 'zeroshot.json'} ({summary['seconds']:.0f} s)", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    from ..cli_args import parse_args

    args = parse_args(argv, ZeroShotArguments, "sevnet-hf zeroshot")
    from .loop import TrainingDataError

    try:
        run(args)
    except TrainingDataError as error:  # a fold without test or validation faces: one line, before training
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
