"""Localisation, map diversity and test F1 after every epoch of the demo's recipe, trained longer than the demo.

    python benchmarks/attention_curve.py [--dataset outputs/demo/data] [--epochs 20] [--seed 0]

Trains SEV-Net with ``sevnet-hf demo``'s recipe (``demo_train_arguments``; its learning rate decays 0.85 per epoch, so
the first 8 epochs are the demo's) for ``--epochs`` epochs, keeping every epoch's checkpoint, then scores each
checkpoint on the fold's unseen test subjects: test mean F1 at 0.5, mean total variation between two AUs' maps,
attention mass inside the AU's region over a uniform map's (the attention issue's bars, as the demo computes them)
and, every ``--probe_every`` epochs, the feature-locality probes (mean ROC-AUC of region cells vs other cells,
:func:`sevnet_hf.training.attention_analysis.feature_locality`). A finished training in ``--workdir`` is resumed
(nothing left to train) and only scored again. Writes benchmarks/results/attention_curve.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_runs  # noqa: E402
from feature_locality import mean_scores  # noqa: E402


def score_checkpoints(run_dir: Path, dataset: Path, results: dict, probe_every: int) -> list[dict]:
    from sevnet_hf.data.schema import read_metadata
    from sevnet_hf.metrics import au_f1_scores
    from sevnet_hf.training.attention_analysis import feature_locality
    from sevnet_hf.training.demo import _attention_on_test, _test_part, load_trained, predict_probabilities
    from sevnet_hf.training.loop import _complete_checkpoints, _load_best_state

    metadata = read_metadata(dataset)
    columns, aligned = list(metadata["au_columns"]), int(metadata.get("image_size", 256))
    test = _test_part(dataset, results)
    labels = np.stack([np.asarray(test[c]) for c in columns], axis=1)
    model, processor = load_trained(run_dir / "model")
    steps_per_epoch = -(-results["images"]["train"] // results["arguments"]["batch_size"])  # one process, no drop_last
    rows = []
    for checkpoint in _complete_checkpoints(run_dir):
        epoch = int(checkpoint.name.split("_")[1])
        model.load_state_dict(_load_best_state(checkpoint), strict=True)
        model.eval()
        attention = _attention_on_test(model, processor, test, columns, aligned)
        probabilities = predict_probabilities(model, processor, list(test["image"]))
        row = {
            "epoch": epoch,
            "steps": steps_per_epoch * epoch,
            "test_f1_mean": au_f1_scores((probabilities >= 0.5).astype(int), labels)["f1_mean"],
            "map_tv": attention["map_tv"],
            "mass_over_uniform": attention["mass_over_uniform"],
        }
        if probe_every and epoch % probe_every == 0:
            means = mean_scores(feature_locality(model, processor, test, columns, aligned_size=aligned))
            row["probe_roc_auc_region"], row["probe_roc_auc_other"] = means["roc_auc_region"], means["roc_auc_other"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| epoch | steps | test mean F1 | map TV | mass in region / uniform | probe ROC-AUC region / other cells |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        probe = (
            f"{r['probe_roc_auc_region']:.3f} / {r['probe_roc_auc_other']:.3f}" if "probe_roc_auc_region" in r else "-"
        )
        lines.append(
            f"| {r['epoch']} | {r['steps']} | {r['test_f1_mean']:.1f} | {r['map_tv']:.3f} | "
            f"{r['mass_over_uniform']:.2f} | {probe} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="outputs/demo/data")
    parser.add_argument("--workdir", default="outputs/attention_curve")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe_every", type=int, default=4, help="epochs between feature-locality probes (0: none)")
    parser.add_argument("--name", default="attention_curve", help="JSON file name (no .json) under benchmarks/results")
    args = parser.parse_args(argv)
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.training.demo import DemoArguments, demo_train_arguments
    from sevnet_hf.training.loop import train

    dataset = Path(args.dataset)
    if not (dataset / "metadata.json").is_file():
        from sevnet_hf.datasets_scripts import synthetic

        synthetic.main(["--output", str(dataset), "--preset", "demo", "--seed", "0"])
    demo = DemoArguments(epochs=args.epochs, seed=args.seed, progress=False)
    train_args = demo_train_arguments(demo, dataset, Path(args.workdir), minilm_encoder_path())
    train_args.keep_checkpoints = 0  # every epoch's checkpoint is scored
    train_args.report_to = "none"
    results = train(train_args)
    rows = score_checkpoints(Path(args.workdir), dataset, results, args.probe_every)
    return write_runs(args.name, rows, table(rows))


if __name__ == "__main__":
    main()
