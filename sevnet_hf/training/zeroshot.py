"""``sevnet-hf zeroshot``: AUs the model was never trained on, scored from their descriptions alone, and measured.

1. Trains SEV-Net (the demo's recipe; shared classifier without per-AU biases) on the dataset's AUs minus
   ``--holdout_aus`` (``TrainArguments.exclude_aus``: the held-out AUs' labels are not read).
2. Gives each trained model the held-out AUs with ``SEVNetForAUDetection.add_aus`` (their descriptions through the
   same frozen text encoder; no weight changes) and tests every AU on the fold's unseen test subjects: ROC-AUC, F1 at
   0.5, F1 at the threshold that marks as many test faces as the AU's training base rate (its labels were held out of
   training, not of the count), and the frequency prior's F1.
3. Controls, so a number means something: the held-out AUs get (a) ``shuffled``: another held-out AU's description
   (rotated; with one held-out AU, the first trained AU's) and (b) ``unrelated``: descriptions of places no AU moves
   (ears, hair, neck, background; :data:`UNRELATED_DESCRIPTIONS`), each scored on its own and averaged. Several
   texts, not one: every added text's embedding lands close to one trained AU's, so one control text reports which
   trained AU it came near (on the synthetic set both ears texts land on AU25's, lips part, a good detector of AU26
   and AU2 by co-occurrence; the background text on AU17's) rather than whether the held-out AU's own text matters.
   A zero-shot signal beats both; the text that scored highest is reported too.
4. References, to read the figures by: for each held-out AU and text, the trained AU whose embedding the added one
   lands nearest (``SEVNetForAUDetection.zero_shot_neighbours``) and the ROC-AUC of that trained AU's own logit on
   the held-out AU's labels; and the best trained AU's logit (picked on the test labels: a ceiling for a zero-shot
   AU that borrows a trained AU's map, not a result). For each control text, the AU description nearest to it in the
   frozen encoder's space (``text_check``). With ``--supervised_reference``, also a model of the same recipe and seed
   trained on every AU, the held-out ones included: what the held-out AUs score when their labels are used (the
   supervised figure a zero-shot AU is read against; one more training per seed).

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

# Control (b): descriptions of places no AU moves, written after a first look at seed 0 and not changed since. The
# first is the protocol's one control text up to commit 9ec5238 (it names the face parts it excludes; its nearest AU
# description in the encoder is AU25's); the others name no part an AU moves.
UNRELATED_DESCRIPTIONS: dict[str, str] = {
    "ears_scalp": (
        "The ears stay where they are and the hair on top of the head does not move; this describes the ears and the "
        "scalp, not the brows, eyes, nose, cheeks, lips or jaw."
    ),
    "ears": "The ears: the outer rim and the lobe of each ear on the sides of the head.",
    "hair": "The hair and the scalp on top of the head.",
    "neck": "The neck and the shoulders below the head.",
    "background": "The background of the picture behind the person.",
}
UNRELATED = "unrelated"
# Reference entries of a seed's results, beside the conditions: the best trained AU's logit on each held-out AU's
# labels, and (``--supervised_reference``) a model trained with the held-out AUs' labels.
BEST_TRAINED, SUPERVISED = "best_trained", "supervised"
REFERENCES = (BEST_TRAINED, SUPERVISED)


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
    unrelated_descriptions: str | None = field(
        default=None,
        metadata={
            "help": "JSON file {name: text} of control texts about places no AU moves, each scored on its own "
            "(default: the five built-in ones: ears and scalp, ears, hair, neck, background)."
        },
    )
    unrelated_description: str | None = field(
        default=None, metadata={"help": "One control text instead of the set (named 'custom' in the results)."}
    )
    supervised_reference: bool = field(
        default=False,
        metadata={
            "help": "Also train each seed on every AU, the held-out ones included (same recipe, same split), and "
            "report what the held-out AUs score when trained on their labels (one more training per seed)."
        },
    )


def known_labels(labels: np.ndarray) -> np.ndarray:
    """True where a label is a real 0/1 code (unknown labels, negative or 9, are left out of every figure)."""
    return (labels == 0) | (labels == 1)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (sklearn's) over the known 0/1 labels; NaN if one class is missing."""
    from sklearn.metrics import roc_auc_score

    known = known_labels(labels)
    if len(np.unique(labels[known])) < 2:
        return float("nan")
    return float(roc_auc_score(labels[known], scores[known]))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """One AU's F1 (%) as the field counts it (``metrics.au_f1_scores``: unknown labels left out)."""
    return au_f1_scores(predictions[:, None], labels[:, None])["f1_mean"]


def au_scores(probabilities: np.ndarray, labels: np.ndarray, base_rate: float, seed: int = 0) -> dict:
    """ROC-AUC, F1 at 0.5, F1 at the base-rate threshold (the top ``base_rate`` share of faces marked present) and the
    frequency prior's F1 (each face marked present with probability ``base_rate``) for one AU."""
    known = known_labels(labels)
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


def unrelated_texts(args: ZeroShotArguments) -> dict[str, str]:
    """The control texts of condition (b): ``--unrelated_description``, ``--unrelated_descriptions`` or the set."""
    if args.unrelated_description:
        return {"custom": args.unrelated_description}
    if not args.unrelated_descriptions:
        return dict(UNRELATED_DESCRIPTIONS)
    from ..au_descriptions import read_description_file

    path = Path(args.unrelated_descriptions)
    texts = {k: v for k, v in read_description_file(path).items() if not str(k).startswith("_")}
    bad = [k for k, v in texts.items() if not isinstance(v, str) or not v.strip()]
    if bad or not texts:
        raise ValueError(
            f"{path}: expected {{name: non-empty text}} control descriptions; bad entries: {bad or 'none'}"
        )
    return texts


def control_descriptions(holdout: list[str], texts: dict[str, str], trained: list[str], unrelated: dict[str, str]):
    """The held-out AUs' texts per condition: their own (``descriptions``), another held-out AU's (``shuffled``,
    rotated by one), and one condition ``unrelated:NAME`` per control text."""
    if len(holdout) > 1:
        shuffled = {au: texts[holdout[(i + 1) % len(holdout)]] for i, au in enumerate(holdout)}
    else:
        shuffled = {holdout[0]: texts[trained[0]]}
    conditions = {"descriptions": {au: texts[au] for au in holdout}, "shuffled": shuffled}
    for name, text in unrelated.items():
        conditions[f"{UNRELATED}:{name}"] = {au: text for au in holdout}
    return conditions


def text_check(encoder, unrelated: dict[str, str], au_texts: dict[str, str]) -> dict:
    """For each control text, the AU description nearest to it in the frozen encoder's space and their cosine, next
    to how close the AU descriptions come to each other (the mean over AUs of the nearest other AU's cosine)."""
    import torch.nn.functional as F

    from ..text_encoder import encode_texts

    names = list(au_texts)
    aus = F.normalize(encode_texts(encoder, list(au_texts.values())).float(), dim=-1)
    controls = F.normalize(encode_texts(encoder, list(unrelated.values())).float(), dim=-1)
    among = aus @ aus.t()
    among.fill_diagonal_(-1.0)
    check = {"au_descriptions_nearest_mean": float(among.max(dim=1).values.mean())}
    for name, row in zip(unrelated, controls @ aus.t()):
        check[name] = {"nearest_au": names[int(row.argmax())], "cosine": float(row.max())}
    return check


def _base_rate(labels: np.ndarray) -> float:
    return float(np.mean(labels[known_labels(labels)]))


def evaluate_seed(
    model_dir: Path,
    test,
    train_labels: dict[str, np.ndarray],
    holdout,
    texts,
    unrelated,
    encoder,
    supervised_dir: Path | None = None,
):
    """Every condition's scores for one trained model, with the references (module docstring, 4); with
    ``supervised_dir`` (a model of the same recipe trained on the held-out AUs too) its scores on the held-out AUs."""
    from .demo import load_trained, predict_probabilities_of_models

    base, processor = load_trained(model_dir)
    trained = list(base.config.au_labels)
    models, neighbours = {}, {}
    for condition, descriptions in control_descriptions(holdout, texts, trained, unrelated).items():
        model = copy.deepcopy(base)  # each condition adds the held-out AUs to the trained model as saved
        model.add_aus(descriptions, text_encoder=encoder)
        models[condition], neighbours[condition] = model, model.zero_shot_neighbours()
    scored = dict(models)
    if supervised_dir is not None:  # scored in the same pass over the faces, so it must read them the same way
        supervised, supervised_processor = load_trained(supervised_dir)
        scored[SUPERVISED] = supervised
        missing = [au for au in holdout if au not in supervised.config.au_labels]
        if missing:
            raise ValueError(f"{supervised_dir}: the supervised reference model has no {', '.join(missing)}")
        if supervised_processor.to_dict() != processor.to_dict():
            raise ValueError(
                f"{supervised_dir}: its image processor differs from the zero-shot model's in {model_dir}"
            )
    probabilities = predict_probabilities_of_models(scored, processor, list(test["image"]))
    trained_probabilities = probabilities["descriptions"][:, : len(trained)]  # the same in every condition
    labels = {au: np.asarray(test[au], dtype=float) for au in [*trained, *holdout]}
    out = {BEST_TRAINED: {}}
    for au in holdout:
        by_trained = {t: roc_auc(trained_probabilities[:, k], labels[au]) for k, t in enumerate(trained)}
        best = max(by_trained, key=lambda t: by_trained[t] if by_trained[t] == by_trained[t] else -1.0)
        out[BEST_TRAINED][au] = {"au": best, "roc_auc": by_trained[best]}
    for condition, model in models.items():
        out[condition] = {}
        for k, au in enumerate(model.config.au_labels):
            if condition != "descriptions" and au not in holdout:
                continue
            scores = au_scores(probabilities[condition][:, k], labels[au], _base_rate(train_labels[au]))
            if au in holdout:
                nearest, cosine = neighbours[condition][au]
                scores["nearest_trained_au"], scores["nearest_cosine"] = nearest, cosine
                scores["nearest_trained_roc_auc"] = roc_auc(
                    trained_probabilities[:, trained.index(nearest)], labels[au]
                )
            out[condition][au] = scores
    if supervised_dir is not None:
        columns = supervised.config.au_labels
        out[SUPERVISED] = {
            au: au_scores(probabilities[SUPERVISED][:, columns.index(au)], labels[au], _base_rate(train_labels[au]))
            for au in holdout
        }
    return out


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def _unrelated_conditions(per_seed: dict) -> list[str]:
    return [c for c in next(iter(per_seed.values())) if c.startswith(f"{UNRELATED}:")]


def _table_row(au: str, condition: str, rows: list[dict]) -> str:
    """One line of the printed table: an AU's figures under one condition, averaged over seeds; for a held-out AU the
    trained AU its embedding landed nearest in each seed (with the cosine) and that AU's logit's ROC-AUC."""
    figures = [
        _mean(r[key] for r in rows) for key in ("roc_auc", "f1_at_0.5", "f1_at_base_rate", "f1_frequency_prior")
    ]
    line = f"{au:<7} {condition:<24} {figures[0]:8.3f} {figures[1]:7.1f} {figures[2]:8.1f} {figures[3]:9.1f}"
    if "nearest_trained_au" in rows[0]:
        nearest = " ".join(f"{r['nearest_trained_au']}:{r['nearest_cosine']:.2f}" for r in rows)
        line += f"   {_mean(r['nearest_trained_roc_auc'] for r in rows):8.3f}  {nearest}"
    return line


def summary_table(per_seed: dict[int, dict], holdout: list[str]) -> tuple[str, dict]:
    """A text table of the held-out AUs per condition and of the trained AUs (means over seeds), and the headline
    numbers: own, shuffled, unrelated (the mean over the control texts; ``unrelated_max``: the text that scored
    highest), per control text, the best-trained-AU reference, and the margins the bar reads."""
    unrelated = _unrelated_conditions(per_seed)
    with_reference = [SUPERVISED in results for results in per_seed.values()]
    if any(with_reference) and not all(with_reference):
        raise ValueError("summary_table: the supervised reference is in some seeds' results and not in others")
    supervised = all(with_reference)
    lines = [
        f"{'AU':<7} {'condition':<24}  ROC-AUC  F1@0.5  F1@base  prior-F1   nearest-ROC  nearest trained AU (per seed)"
    ]

    def held_out_mean(condition: str, seeds=per_seed) -> float:
        return _mean(_mean(per_seed[s][condition][au]["roc_auc"] for s in seeds) for au in holdout)

    for au in holdout:
        for condition in ["descriptions", "shuffled", *unrelated]:
            lines.append(_table_row(au, condition, [per_seed[s][condition][au] for s in per_seed]))
        best = [per_seed[s][BEST_TRAINED][au] for s in per_seed]
        lines.append(
            f"{au:<7} {'best trained AU (ceiling)':<24} {_mean(b['roc_auc'] for b in best):8.3f}   "
            + " ".join(b["au"] for b in best)
        )
        if supervised:
            lines.append(_table_row(au, "trained on its labels", [per_seed[s][SUPERVISED][au] for s in per_seed]))
    trained = [au for au in next(iter(per_seed.values()))["descriptions"] if au not in holdout]
    for au in trained:  # the same figures for the AUs the model was trained on
        lines.append(_table_row(au, "trained", [per_seed[s]["descriptions"][au] for s in per_seed]))
    per_text = {c.split(":", 1)[1]: held_out_mean(c) for c in unrelated}
    headline = {
        "descriptions": held_out_mean("descriptions"),
        "shuffled": held_out_mean("shuffled"),
        UNRELATED: _mean(per_text.values()),
        "unrelated_max": max(per_text.values()),
        "unrelated_per_text": per_text,
        "best_trained_reference": held_out_mean(BEST_TRAINED),
        "trained_aus": _mean(per_seed[s]["descriptions"][au]["roc_auc"] for s in per_seed for au in trained),
    }
    if supervised:
        headline["supervised_reference"] = held_out_mean(SUPERVISED)
    headline["margin_over_shuffled"] = headline["descriptions"] - headline["shuffled"]
    headline["margin_over_unrelated"] = headline["descriptions"] - headline[UNRELATED]
    headline["per_seed"] = {}
    for s in per_seed:
        seed_texts = [held_out_mean(c, [s]) for c in unrelated]
        headline["per_seed"][s] = {
            "descriptions": held_out_mean("descriptions", [s]),
            "shuffled": held_out_mean("shuffled", [s]),
            UNRELATED: _mean(seed_texts),
            "unrelated_max": max(seed_texts),
        }
        if supervised:
            headline["per_seed"][s][SUPERVISED] = held_out_mean(SUPERVISED, [s])
    texts = ", ".join(f"{name} {value:.3f}" for name, value in per_text.items())
    lines.append(
        f"mean ROC-AUC over held-out AUs: own descriptions {headline['descriptions']:.3f}, shuffled "
        f"{headline['shuffled']:.3f}, unrelated {headline[UNRELATED]:.3f} (mean of {len(per_text)} texts: {texts}); "
        f"trained AUs {headline['trained_aus']:.3f}; best trained AU's logit {headline['best_trained_reference']:.3f}"
        + (f"; held-out AUs trained on their labels {headline['supervised_reference']:.3f}" if supervised else "")
    )
    lines.append(
        f"own - shuffled {headline['margin_over_shuffled']:+.3f}, own - unrelated {headline['margin_over_unrelated']:+.3f}"
        + "; per seed (own / shuffled / unrelated / highest text): "
        + "; ".join(
            f"{s}: {v['descriptions']:.3f} / {v['shuffled']:.3f} / {v[UNRELATED]:.3f} / {v['unrelated_max']:.3f}"
            for s, v in headline["per_seed"].items()
        )
    )
    return "\n".join(lines), headline


def supervised_training(args: ZeroShotArguments, data_dir: Path, out: Path, encoder_path, subjects: dict):
    """Train (or reuse) the seed's model on every AU, the held-out ones included, with the zero-shot model's recipe;
    ``(model folder, training results)``. Stops if its subjects differ from the zero-shot model's (the reference
    must see the same faces)."""
    from .demo import _train_or_reuse, demo_train_arguments

    train_args = demo_train_arguments(args, data_dir, out / f"supervised_seed{args.seed}", encoder_path)
    print(f"[seed {args.seed}] supervised reference: training on every AU, the held-out ones included", flush=True)
    results, _ = _train_or_reuse(train_args)
    if results["subjects"] != subjects:
        raise RuntimeError(
            f"{train_args.output_dir}: the supervised reference split its subjects differently from the zero-shot "
            "model's; the two are not comparable"
        )
    return Path(train_args.output_dir) / "model", results


def run(args: ZeroShotArguments) -> dict:
    from ..au_descriptions import load_au_descriptions
    from ..data.schema import load_prepared, read_metadata
    from ..offline_assets import minilm_encoder_path
    from ..text_encoder import load_text_encoder
    from .demo import _train_or_reuse, demo_train_arguments, make_synthetic_data, subjects_part

    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    holdout_numbers = [parse_au(a) for a in args.holdout_aus.split(",") if a.strip()]
    holdout = [au_label(n) for n in holdout_numbers]
    try:
        unrelated = unrelated_texts(args)
    except (OSError, ValueError) as error:  # before any data is made or model trained
        raise SystemExit(f"sevnet-hf zeroshot: --unrelated_descriptions: {error}") from None
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
        print(
            f"[seed {seed}] training on {len(columns) - len(holdout)} AUs (held out: {', '.join(holdout)})", flush=True
        )
        results, _ = _train_or_reuse(train_args)
        train = subjects_part(dataset, results["subjects"]["train"])
        train_labels = {au: np.asarray(train[au], dtype=float) for au in columns}
        test = subjects_part(dataset, results["subjects"]["test"])
        supervised_dir, supervised_results = None, {}
        if args.supervised_reference:
            supervised_dir, supervised_results = supervised_training(
                args, data_dir, out, encoder_path, results["subjects"]
            )
        print(
            f"[seed {seed}] testing {len(test)} faces of unseen subjects: own, shuffled and {len(unrelated)} unrelated "
            "texts",
            flush=True,
        )
        model_dir = out / f"train_seed{seed}" / "model"
        per_seed[seed] = evaluate_seed(
            model_dir, test, train_labels, holdout, texts, unrelated, encoder, supervised_dir
        )
        trainings[seed] = {"test_f1_mean_trained_aus": results.get("test", {}).get("f1_mean")}
        if supervised_results:
            trainings[seed]["test_f1_mean_supervised_all_aus"] = supervised_results.get("test", {}).get("f1_mean")
    table, headline = summary_table(per_seed, holdout)
    summary = {
        "holdout_aus": holdout,
        "seeds": list(per_seed),
        "fold": args.fold,
        "dataset": str(data_dir),
        "text_encoder": Path(encoder_path).name,
        "unrelated_descriptions": unrelated,
        "text_check": text_check(encoder, unrelated, texts),
        "headline_mean_roc_auc": headline,
        "per_seed": per_seed,
        "trainings": trainings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "zeroshot.json", summary)
    print(table, flush=True)
    check = summary["text_check"]
    print(
        "control texts' nearest AU description (frozen encoder; AU descriptions come within "
        f"{check['au_descriptions_nearest_mean']:.2f} of each other): "
        + ", ".join(f"{name} {check[name]['nearest_au']} {check[name]['cosine']:.2f}" for name in unrelated),
        flush=True,
    )
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
