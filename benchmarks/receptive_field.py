"""How much of the face each cell of the trained models' visual maps sees (effective receptive field).

    python benchmarks/receptive_field.py [--workdir outputs/attention_benchmark] [--dataset outputs/demo/data]

For every finished run of ``attention_benchmark.py`` in ``--workdir`` (or the training folders given with ``--runs``),
the backbone of the trained model, and the same architecture at its random start, go through
:func:`sevnet_hf.training.attention_analysis.receptive_field` on ``--faces`` test faces of the fold's unseen subjects:
per map cell, the share of the input gradient inside the cell's own pixels and the radius that holds half of it.
Attention can only single out an AU's region if the cells there see mostly the region. Printed per run; writes
benchmarks/results/receptive_field.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_run_arguments, finished_runs, write_runs  # noqa: E402


def measure_run(run_dir: Path, dataset: Path, faces: int) -> dict:
    from sevnet_hf.training.attention_analysis import receptive_field
    from sevnet_hf.training.demo import _test_part, load_trained

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    model, processor = load_trained(run_dir / "model")
    test = _test_part(dataset, results)
    step = max(1, len(test) // faces)
    images = [np.asarray(test[i]["image"].convert("RGB")) for i in range(0, len(test), step)][:faces]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    torch.manual_seed(0)
    untrained = type(model)(model.config).get_backbone()
    return {
        "run": f"{run_dir.parent.name}/{run_dir.name}",
        "trained": receptive_field(model.get_backbone(), pixels),
        "random_start": receptive_field(untrained, pixels),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| run | map | crop (px) | trained: own cell share | radius holding 50% (px) | edge cells: own share | "
        "edge radius (px) | random start: own share | radius (px) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, u = r["trained"], r["random_start"]
        lines.append(
            f"| {r['run']} | {t['grid'][0]}x{t['grid'][1]} | {t['crop']} | {t['own_cell']:.3f} "
            f"(uniform {t['uniform_own_cell']:.3f}) | {t['radius_50']:.1f} | {t['edge_own_cell']:.3f} | "
            f"{t['edge_radius_50']:.1f} | {u['own_cell']:.3f} | {u['radius_50']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--faces", type=int, default=32, help="test faces the gradients are averaged over")
    parser.add_argument("--name", default="receptive_field", help="JSON file name (no .json) under benchmarks/results")
    args = parser.parse_args(argv)
    runs = finished_runs(parser, args)
    rows = []
    for run_dir in runs:
        rows.append(measure_run(run_dir, Path(args.dataset), args.faces))
        print(json.dumps(rows[-1]), flush=True)
    return write_runs(args.name, rows, table(rows))


if __name__ == "__main__":
    main()
