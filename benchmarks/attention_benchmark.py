"""SEV-Net (the paper's shared classifier) against the ResNet-18 baseline with the demo's recipe, several seeds.

    python benchmarks/attention_benchmark.py [--dataset outputs/demo/data] [--seeds 0,1,2] [--models sevnet,resnet]

Both models train with ``sevnet-hf demo``'s recipe (``demo_train_arguments``: random resnet18 at output stride 16,
96 px center crops with flips, torchvision's block start, Adam 1e-3 x 0.85 per epoch, batch 16, the demo's epochs and precision (8, bf16 on a CPU with native bf16;
RESULTS.md also holds the earlier table of 6 epochs in fp32: ``--mixed_precision no``); SEV-Net with the MiniLM table, the shared classifier,
the demo's ``au_diversity_weight`` (10 since 6a9018e; RESULTS.md's earlier tables are 1) and the AU projection's bias started at 0.1) on the synthetic ``demo`` set, fold 1, one run per training seed (initialisation,
order, augmentation and the validation carve-out). Test on the 16 unseen subjects. Printed per seed and averaged:

- test mean F1 (%) and mean ROC-AUC over the AUs (ranking, free of the 0.5 threshold);
- map diversity: mean total variation between the attention maps of two AUs on one face (SEV-Net only);
- localisation: attention mass inside the AU's known region / a uniform map's, faces where the AU is present;
- the last epoch's AU-embedding cosine and whether the run warned that its AU embeddings collapsed.

The data set is made when missing (``sevnet-hf prepare synthetic --preset demo --seed 0``). Finished runs are reused
(``--workdir``). Writes benchmarks/results/attention_benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_runs  # noqa: E402


def run_one(
    model_type: str, seed: int, dataset: Path, workdir: Path, epochs: int | None, mixed_precision: str = "auto"
) -> dict:
    from sevnet_hf.data.schema import read_metadata
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.training.demo import (
        DemoArguments,
        _attention_on_test,
        _test_part,
        demo_train_arguments,
        load_trained,
        predict_probabilities,
    )
    from sevnet_hf.training.loop import train
    from sevnet_hf.training.zeroshot import roc_auc

    demo = DemoArguments(
        seed=seed, progress=False, mixed_precision=mixed_precision, **({"epochs": epochs} if epochs else {})
    )
    args = demo_train_arguments(demo, dataset, workdir / f"{model_type}_seed{seed}", minilm_encoder_path())
    args.model_type = model_type
    args.report_to = "none"
    started = time.perf_counter()
    results = train(args)
    row = {
        "model": model_type,
        "seed": seed,
        "test_f1_mean": results["test"]["f1_mean"],
        "test_f1": results["test"]["f1"],
        "frequency_prior_f1_mean": results["frequency_prior"]["f1_mean"],
        "all_present_f1_mean": results["all_present"]["f1_mean"],
        "epochs": results["epochs_run"],
        "seconds": time.perf_counter() - started,
    }
    metadata = read_metadata(dataset)
    model, processor = load_trained(Path(args.output_dir) / "model")
    test = _test_part(dataset, results)
    probabilities = predict_probabilities(model, processor, list(test["image"]))
    row["test_roc_auc"] = {
        au: roc_auc(probabilities[:, k], np.asarray(test[au], dtype=float))
        for k, au in enumerate(model.config.au_labels)
    }
    row["test_roc_auc_mean"] = float(np.mean(list(row["test_roc_auc"].values())))
    last = results["history"][-1]
    if "au_map_tv" in last:
        attention = _attention_on_test(
            model, processor, test, list(metadata["au_columns"]), int(metadata.get("image_size", 256))
        )
        row.update(
            map_tv=attention["map_tv"],
            mass_over_uniform=attention["mass_over_uniform"],
            grid=attention["grid"],
            au_embedding_cosine=last["au_embedding_cosine"],
            collapse_warning=any(h.get("attention_collapsed", False) for h in results["history"]),
            dead_map_share=last["dead_map_share"],
            per_au_localisation=attention["per_au"],
        )
    return row


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = [
        "| model | seed | test mean F1 | mean ROC-AUC | map TV | mass in region / uniform | AU cosine | collapse warning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['seed']} | {row['test_f1_mean']:.1f} | {_fmt(row.get('test_roc_auc_mean'), '.3f')} | "
            f"{_fmt(row.get('map_tv'), '.3f')} | "
            f"{_fmt(row.get('mass_over_uniform'), '.2f')} | {_fmt(row.get('au_embedding_cosine'), '.3f')} | "
            f"{'yes' if row.get('collapse_warning') else ('no' if 'collapse_warning' in row else '-')} |"
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in rows if r["model"] == model]

        def mean(key, own=own):
            values = [r[key] for r in own if r.get(key) is not None]
            return float(np.mean(values)) if values else None

        lines.append(
            f"| **{model} mean** | {len(own)} seeds | **{mean('test_f1_mean'):.1f}** | "
            f"{_fmt(mean('test_roc_auc_mean'), '.3f')} | {_fmt(mean('map_tv'), '.3f')} | "
            f"{_fmt(mean('mass_over_uniform'), '.2f')} | {_fmt(mean('au_embedding_cosine'), '.3f')} | "
            f"{sum(bool(r.get('collapse_warning')) for r in own)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="outputs/demo/data")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="sevnet,resnet")
    parser.add_argument("--workdir", default="outputs/attention_benchmark")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epochs (default: the demo's)")
    parser.add_argument(
        "--mixed_precision", default="auto", help="the demo's --mixed_precision (no: 6 fp32 epochs, the 851d291 table)"
    )
    parser.add_argument("--name", default="attention_benchmark", help="JSON file name (no .json) under benchmarks/results")
    args = parser.parse_args(argv)
    dataset = Path(args.dataset)
    if not (dataset / "metadata.json").is_file():
        from sevnet_hf.datasets_scripts import synthetic

        synthetic.main(["--output", str(dataset), "--preset", "demo", "--seed", "0"])
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for model in args.models.split(","):
            rows.append(run_one(model, seed, dataset, Path(args.workdir), args.epochs, args.mixed_precision))
            skip = ("test_f1", "per_au_localisation", "test_roc_auc")
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in skip}), flush=True)
    return write_runs(args.name, rows, table(rows))


if __name__ == "__main__":
    main()
