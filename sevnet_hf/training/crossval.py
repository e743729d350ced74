"""``sevnet-hf crossval``: the field's 3-fold subject-exclusive protocol in one command.

Trains and tests folds 1-3 (ME-GraphAU numbering) with the same recipe and writes the paper-format table: per-AU F1
and Avg for each fold and the mean over folds, as Markdown and CSV, plus a bar chart PNG. A fold whose
``results.json`` exists is not trained again, and an interrupted fold resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..atomic_io import save_atomic, write_text_atomic
from .args import TrainArguments


@dataclass
class CrossvalArguments(TrainArguments):
    folds: str = field(default="1,2,3", metadata={"help": "Comma-separated folds to run."})


def run_folds(args: TrainArguments, folds: list[int], output_root: Path) -> dict[int, dict]:
    """Train/test each fold under ``output_root/fold_k``; reuse finished folds. Returns fold -> results."""
    from .loop import train

    results = {}
    for fold in folds:
        fold_dir = output_root / f"fold_{fold}"
        done = fold_dir / "results.json"
        if done.is_file():
            print(f"fold {fold}: reusing {done}", flush=True)
            results[fold] = json.loads(done.read_text(encoding="utf-8"))
            continue
        run_args = TrainArguments(
            **{
                **{f.name: getattr(args, f.name) for f in fields(TrainArguments)},
                "fold": fold,
                "output_dir": str(fold_dir),
                "resume": True,
            }
        )
        results[fold] = train(run_args)
    return results


def fold_table(results: dict[int, dict], label: str = "") -> tuple[list[str], list[list]]:
    """Rows ``[name, F1 per AU..., Avg]`` for each fold and the mean over folds."""
    names = list(next(iter(results.values()))["test"]["f1"])
    rows = []
    for fold, result in sorted(results.items()):
        f1 = result["test"]["f1"]
        rows.append([f"{label}fold {fold}".strip(), *[f1[n] for n in names], result["test"]["f1_mean"]])
    if len(results) > 1:
        mean = np.mean([row[1:] for row in rows], axis=0).tolist()
        rows.append([f"{label}mean over {len(results)} folds".strip(), *mean])
    return ["", *names, "Avg"], rows


def to_markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([str(row[0]), *[f"{v:.1f}" for v in row[1:]]]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", *header[1:]])
    for row in rows:
        writer.writerow([row[0], *[f"{v:.2f}" for v in row[1:]]])
    return buffer.getvalue()


def bar_chart(series: dict[str, list[float]], names: list[str], path: Path, title: str) -> None:
    """Grouped bars: one group per AU (and Avg), one bar per series (fold, or model for the ablation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.7), 3.6))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(4, len(series)))
    fig.tight_layout()
    save_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def write_tables(header, rows, output_root: Path, stem: str, title: str) -> dict[str, Path]:
    paths = {
        "markdown": output_root / f"{stem}.md",
        "csv": output_root / f"{stem}.csv",
        "png": output_root / f"{stem}.png",
    }
    write_text_atomic(paths["markdown"], to_markdown(header, rows))
    write_text_atomic(paths["csv"], to_csv(header, rows))
    bar_chart({row[0]: row[1:] for row in rows}, header[1:], paths["png"], title)
    return paths


def main(argv: list[str] | None = None) -> int:
    from ..cli_args import parse_args

    args = parse_args(argv, CrossvalArguments, "sevnet-hf crossval")
    folds = [int(f) for f in args.folds.split(",") if f.strip()]
    output_root = Path(args.output_dir)
    output_root.mkdir(parents=True, exist_ok=True)
    from .loop import TrainingDataError

    try:
        results = run_folds(args, folds, output_root)
    except TrainingDataError as error:  # a fold without test or validation faces: one line, before any training
        print(f"error: {error}", file=sys.stderr)
        return 2
    header, rows = fold_table(results)
    paths = write_tables(header, rows, output_root, "crossval_f1", f"{args.model_type}: test F1 per AU")
    print(to_markdown(header, rows))
    print(f"Tables: {paths['markdown']}, {paths['csv']}; chart: {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
