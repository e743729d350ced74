"""``sevnet-hf ablate``: ResNet-18, ML-GCN, MS-CAM and SEV-Net on the same folds, recipe and seeds (the paper's Fig. 3).

Writes ``ablation_f1.{md,csv,png}`` (per-AU F1 and mean, averaged over the folds run, one row per model; grouped bar
chart), ``attention_localisation.{md,json}`` when the data has AU regions (the synthetic set), and
``attention_side_by_side.png`` (SEV-Net's and MS-CAM's maps on the same test faces). Finished runs are reused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..atomic_io import write_text_atomic
from .args import TrainArguments
from .crossval import bar_chart, run_folds, to_csv, to_markdown

MODEL_ORDER = ("resnet", "mlgcn", "mscam", "sevnet")


@dataclass
class AblateArguments(TrainArguments):
    folds: str = field(default="1", metadata={"help": "Comma-separated folds (the paper's figure averages 3)."})
    model_types: str = field(default="resnet,mlgcn,mscam,sevnet", metadata={"help": "Models to compare."})
    attention_faces: int = field(default=3, metadata={"help": "Test faces in the side-by-side attention figure."})
    localisation_images: int = field(default=400, metadata={"help": "Test images scored for attention localisation."})


def main(argv: list[str] | None = None) -> int:
    from ..cli_args import parse_args

    args = parse_args(argv, AblateArguments, "sevnet-hf ablate")  # before the imports below: --help needs no torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..data.schema import load_prepared, read_metadata

    folds = [int(f) for f in args.folds.split(",") if f.strip()]
    model_types = [m.strip() for m in args.model_types.split(",") if m.strip()]
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = {f.name: getattr(args, f.name) for f in fields(TrainArguments)}

    from .loop import TrainingDataError

    per_model = {}
    for model_type in model_types:
        run_args = TrainArguments(**{**base, "model_type": model_type, "output_dir": str(root / model_type)})
        try:
            per_model[model_type] = run_folds(run_args, folds, root / model_type)
        except TrainingDataError as error:  # a fold without test or validation faces: one line, before training
            print(f"error: {error}", file=sys.stderr)
            return 2

    names = list(next(iter(next(iter(per_model.values())).values()))["test"]["f1"])
    header = ["", *names, "Avg"]
    rows = []
    for model_type, results in per_model.items():
        values = np.mean([[r["test"]["f1"][n] for n in names] + [r["test"]["f1_mean"]] for r in results.values()], 0)
        rows.append([model_type, *values.tolist()])
    first = next(iter(next(iter(per_model.values())).values()))
    rows.append(
        ["frequency prior", *[first["frequency_prior"]["f1"][n] for n in names], first["frequency_prior"]["f1_mean"]]
    )
    write_text_atomic(root / "ablation_f1.md", to_markdown(header, rows))
    write_text_atomic(root / "ablation_f1.csv", to_csv(header, rows))
    bar_chart(
        {row[0]: row[1:] for row in rows},
        header[1:],
        root / "ablation_f1.png",
        f"Ablation: test F1 per AU (folds {args.folds})",
    )
    print(to_markdown(header, rows))

    # Attention: localisation against known regions, and the side-by-side figure (models that have maps).
    dataset = load_prepared(args.dataset)
    metadata = read_metadata(args.dataset)
    fold = folds[0]
    test_subjects = set(first["subjects"]["test"]) if fold == first["fold"] else set()
    test = dataset.filter(lambda s: s in test_subjects, input_columns="subject") if test_subjects else dataset
    attention_models = {}
    for model_type in model_types:
        folder = root / model_type / f"fold_{fold}" / "model"
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        probe = model(
            **AutoImageProcessor.from_pretrained(folder)(np.zeros((64, 64, 3), np.uint8)), output_attentions=True
        )
        if probe.au_attention_maps is not None:
            attention_models[model_type] = (model, AutoImageProcessor.from_pretrained(folder))
    if attention_models:
        from .attention_analysis import localisation_scores, side_by_side_attention

        if "au_regions" in test.column_names:
            scores = {
                name: localisation_scores(
                    model,
                    processor,
                    test,
                    metadata["au_columns"],
                    args.localisation_images,
                    aligned_size=int(metadata.get("image_size", 256)),
                )
                for name, (model, processor) in attention_models.items()
            }
            write_text_atomic(root / "attention_localisation.json", json.dumps(scores, indent=2))
            lines = [
                "| model | AU | faces | mass in region % | peak in region % | uniform map % |",
                "|---|---|---|---|---|---|",
            ]
            for name, per_au in scores.items():
                for au, s in per_au.items():
                    lines.append(
                        f"| {name} | {au} | {s['faces']} | {s['mass_in_region']:.1f} | "
                        f"{s['peak_in_region']:.1f} | {s['uniform_mass']:.1f} |"
                    )
            write_text_atomic(root / "attention_localisation.md", "\n".join(lines) + "\n")
            print("\n".join(lines))
        else:
            print("No au_regions column (only the synthetic set has known AU regions): localisation not scored.")
        step = max(1, len(test) // max(1, args.attention_faces))
        faces = [np.asarray(test[i]["image"].convert("RGB")) for i in range(0, len(test), step)][
            : args.attention_faces
        ]
        processor = next(iter(attention_models.values()))[1]
        side_by_side_attention(
            {k: m for k, (m, _) in attention_models.items()}, processor, faces, root / "attention_side_by_side.png"
        )
    print(f"Ablation outputs in {root}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
