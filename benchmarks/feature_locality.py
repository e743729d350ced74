"""Do the trained models' visual maps hold each AU where the AU is? Linear probes per map cell.

    python benchmarks/feature_locality.py [--workdir outputs/attention_benchmark] [--dataset outputs/demo/data]

For every finished run of ``attention_benchmark.py`` in ``--workdir`` (``sevnet_seed0``, ``resnet_seed0``, ...), or a
training folder given with ``--runs``, the model's visual map (``visual_features``, 6x6 x 512 for the demo recipe) on
the fold's unseen test subjects goes into :func:`sevnet_hf.training.attention_analysis.feature_locality`: per AU and
cell a logistic-regression probe fitted on half of the test subjects and scored (ROC-AUC) on the other half. Printed
per run: mean probe ROC-AUC over the cells inside the AUs' regions and over the other cells, the best cell's, and for
how many AUs the best cell lies in the region. Attention (Eq. 4-5) can only prefer an AU's region if the region's
cells tell the AU apart better than the others. Writes benchmarks/results/feature_locality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import add_run_arguments, finished_runs, write_runs  # noqa: E402


def probe_run(run_dir: Path, dataset: Path) -> dict:
    from sevnet_hf.data.schema import read_metadata
    from sevnet_hf.training.attention_analysis import feature_locality
    from sevnet_hf.training.demo import _test_part, load_trained

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    metadata = read_metadata(dataset)
    model, processor = load_trained(run_dir / "model")
    test = _test_part(dataset, results)
    per_au = feature_locality(
        model, processor, test, list(metadata["au_columns"]), aligned_size=int(metadata.get("image_size", 256))
    )
    return {"run": run_dir.name, **mean_scores(per_au), "per_au": per_au}


def mean_scores(per_au: dict) -> dict:
    """Means over AUs of ``feature_locality``'s per-AU scores (region cells: AUs that have any), and the counts."""
    with_region = [s for s in per_au.values() if s["region_cells"] > 0]
    return {
        "roc_auc_region": float(np.mean([s["roc_auc_region"] for s in with_region])),
        "roc_auc_other": float(np.mean([s["roc_auc_other"] for s in per_au.values()])),
        "roc_auc_best": float(np.mean([s["roc_auc_best"] for s in per_au.values()])),
        "best_cell_in_region": sum(s["best_cell_in_region"] for s in per_au.values()),
        "aus": len(per_au),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| run | probe ROC-AUC, region cells | other cells | best cell | AUs whose best cell is in the region |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['roc_auc_region']:.3f} | {r['roc_auc_other']:.3f} | {r['roc_auc_best']:.3f} | "
            f"{r['best_cell_in_region']} of {r['aus']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument(
        "--name", default="feature_locality", help="JSON file name (no .json) under benchmarks/results"
    )
    args = parser.parse_args(argv)
    runs = finished_runs(parser, args)
    rows = []
    for run_dir in runs:
        rows.append(probe_run(run_dir, Path(args.dataset)))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_au"}), flush=True)
    return write_runs(args.name, rows, table(rows))


if __name__ == "__main__":
    main()
