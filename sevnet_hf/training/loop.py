"""Accelerate training: ``sevnet-hf train ...`` or ``accelerate launch -m sevnet_hf.train ...``.

One GPU, many GPUs or many machines through Accelerate. The text encoder never runs here: the AU text table was
computed when the model was built. Each epoch: train, validate on held-out training subjects (mean F1, for early
stopping), ``save_state``; ``--resume`` continues from the newest complete epoch. At the end the best model is
tested on the fold's test part and saved with ``save_pretrained`` plus its image processor and a filled model card.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset

from ..atomic_io import save_atomic, write_json_atomic, write_text_atomic
from ..data.decoded_cache import build_decoded_cache, number_rows
from ..data.transforms import AUImageDataset, DeviceAugment, collate_uint8
from ..metrics import au_f1_scores, frequency_prior_f1, probabilities_to_predictions
from ..protocols import au_label, fold_name, fold_parts, parse_au
from .args import TrainArguments
from .attention_health import ATTENTION_KEYS, AttentionHealth, grad_norm, text_path_parameters, warn_if_collapsed

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best_model"
FINAL_DIR = "model"
STATE_FILE = "run_state.json"
TRACKER_RUN = "runs"
COMPLETE_MARKER = "COMPLETE"


class TrainingDataError(ValueError):
    """The dataset cannot train this fold (a split without faces); ``main`` prints it and exits with status 2."""


class EpochShuffleSampler(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so an interrupted run resumes on the same order.

    The same order on every process; Accelerate shards the batches between processes.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def _save_model_atomic(model, processor, folder: Path) -> None:
    """save_pretrained into a temporary sibling folder, then swap it in, so a crash never leaves half a model."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    folders = [p for p in (output_dir / CHECKPOINTS_DIR).glob("epoch_*") if (p / COMPLETE_MARKER).is_file()]
    return sorted(folders, key=lambda p: int(p.name.split("_")[1]))


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def allow_precision_change(mixed_precision: str) -> None:
    """Let a process that trains twice change precision (the demo's bf16 after a ``train`` in fp32, in tests or a
    notebook). Accelerate keeps one ``AcceleratorState`` per process and refuses a second ``Accelerator`` with another
    ``mixed_precision``; in a single process that state is reset here (the process state, device and any process
    group, is kept). Distributed runs keep Accelerate's error: every rank must agree on a precision from the start."""
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:
        return
    state = AcceleratorState()
    if getattr(state, "_mixed_precision", mixed_precision) != mixed_precision and state.num_processes == 1:
        AcceleratorState._reset_state()


def _trackers(report_to: str) -> list[str]:
    """Tracker names for ``Accelerator(log_with=...)``: 'auto' is TensorBoard when it is installed, else none."""
    choice = report_to.strip().lower()
    if choice == "none":
        return []
    if choice == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else []
    return [name.strip() for name in choice.split(",") if name.strip()]


def _scalar_hparams(args: TrainArguments) -> dict:
    """The run's arguments that trackers can store as hyper-parameters (TensorBoard takes scalars and strings)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (bool, int, float, str))}


def _tracker_scalars(record: dict) -> dict:
    """One epoch's record as flat scalars: per-AU F1 under ``val_f1/<AU column>``."""
    scalars = {
        (f"attention/{k}" if k in ATTENTION_KEYS else k): float(v) if isinstance(v, bool) else v
        for k, v in record.items()
        if k not in ("epoch", "val_f1") and v is not None
    }
    scalars.update({f"val_f1/{name}": value for name, value in record["val_f1"].items()})
    return scalars


def _open_decoded_cache(accelerator, args: TrainArguments, size: int, num_workers: int):
    """Build the decoded cache once: the main process first; then the first process of any machine that does not
    see that file (no shared disk) builds its own copy; then everyone opens it. No two processes write one file."""

    def build(progress: bool):
        return build_decoded_cache(
            args.dataset, size, cache_dir=args.decoded_cache_dir, num_workers=num_workers, progress=progress
        )

    decoded = build(progress=True) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if decoded is None and accelerator.is_local_main_process:
        decoded = build(progress=True)  # reuses the main process's cache where the disk is shared
    accelerator.wait_for_everyone()
    return decoded if decoded is not None else build(progress=False)


def check_fold_splits(args: TrainArguments, splits, partition: dict[str, int]) -> None:
    """Refuse, before any training, a fold whose split has no faces: no test faces (every run would end in a crash
    after its last epoch), or no validation faces while ``--val_fraction`` asks for some. Names what is missing."""
    sizes = {name: len(splits[name]) for name in ("train", "validation", "test")}
    train_subjects = len(set(splits["train"]["subject"]))
    train_parts, test_part = fold_parts(args.fold)
    missing = []
    if not sizes["test"]:
        in_part = sum(1 for part in partition.values() if part == test_part)
        missing.append(
            f"no test faces (part {test_part} has "
            + (f"{in_part} subjects but none of their faces)" if in_part else "no subjects)")
        )
    if not sizes["train"]:
        missing.append(f"no training faces (parts {train_parts[0]} and {train_parts[1]} have none)")
    elif not sizes["validation"] and args.val_fraction > 0:
        missing.append(
            f"no validation faces (--val_fraction {args.val_fraction:g} of {train_subjects} training "
            f"subject{'s' if train_subjects != 1 else ''} holds none out; it needs 2 or more, or pass --val_fraction 0)"
        )
    if not missing:
        return
    by_part = {part: sorted(s for s, p in partition.items() if p == part) for part in sorted(set(partition.values()))}
    listed = "; ".join(
        f"part {part}: {' '.join(members[:6])}{' ...' if len(members) > 6 else ''}"
        for part, members in by_part.items()
    )
    raise TrainingDataError(
        f"{args.dataset}: {fold_name(args.fold)} has " + " and ".join(missing) + f". The dataset has "
        f"{len(partition)} subject{'s' if len(partition) != 1 else ''}: {listed}. Every fold trains on two parts and "
        "tests on the third, so each part needs subjects: prepare more subjects or assign them to parts "
        "(sevnet-hf prepare folder --parts FILE)."
    )


def aus_without_positives(labels: np.ndarray, au_columns: list[str], warn: bool = True) -> dict[str, int]:
    """AUs with no positive label among the training faces, each with its count of known labels; warns for each.

    The model never sees such an AU present, so its test F1 (0 when it is never predicted) says nothing about it.
    """
    known = (labels == 0) | (labels == 1)
    absent = {au_columns[i]: int(known[:, i].sum()) for i in range(len(au_columns)) if not (labels[:, i] == 1).any()}
    for column, count in absent.items() if warn else ():
        warnings.warn(
            f"{column} is never present in the training faces (0 of {count} known labels are 1): the model cannot "
            f"learn it and its test F1 measures nothing; results.json lists it under aus_without_training_positives",
            UserWarning,
            stacklevel=2,
        )
    return absent


def default_num_workers(device: torch.device, processes_per_node: int = 1) -> int:
    """DataLoader workers when none are given: 2 on a CPU (the model is the bottleneck there: measured 59x); on a
    GPU every core this process can spare (one stays with the step loop), at most 16."""
    if device.type != "cuda":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(16, cores // max(1, processes_per_node) - 1))


@torch.no_grad()
def predict_loader(model, loader, augment, accelerator, health: AttentionHealth | None = None):
    """Sigmoid probabilities and labels for every image of ``loader``, gathered across processes exactly once each.

    With ``health``, the attention maps of the batches are added to it (models that return maps only).
    """
    model.eval()
    probabilities, labels = [], []
    for batch in loader:
        pixels = augment(batch["pixel_values"], train=False)
        with accelerator.autocast():
            outputs = model(pixels, output_attentions=True) if health is not None else model(pixels)
        logits = outputs.logits
        if health is not None:
            health.update(outputs)
        logits, batch_labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        probabilities.append(torch.sigmoid(logits).cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


def train(args: TrainArguments) -> dict:
    """Run one training job (one fold). Returns the results dict written to ``results.json``."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm.auto import tqdm

    from ..data.folds import split_fold
    from ..data.schema import load_prepared, read_metadata
    from .build import build_model

    output_dir = Path(args.output_dir)
    precision = _mixed_precision(args.mixed_precision)
    allow_precision_change(precision)
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=_trackers(args.report_to) or None,
        project_dir=str(output_dir),
        # Batches come from pinned memory on a GPU, so their copy need not stop the host (no sync per step).
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
    )
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(TRACKER_RUN, config=_scalar_hparams(args))  # TensorBoard: <output_dir>/runs

    dataset = load_prepared(args.dataset)
    metadata = read_metadata(args.dataset)
    aus = [int(a) for a in metadata["aus"]]
    au_columns = list(metadata["au_columns"])
    if args.exclude_aus:  # the zero-shot protocol: these AUs' labels are never read
        excluded = {au_label(parse_au(a)) for a in args.exclude_aus.split(",") if a.strip()}
        unknown = sorted(excluded - set(au_columns))
        if unknown:
            raise SystemExit(f"sevnet-hf train: --exclude_aus {', '.join(unknown)} not in {args.dataset} ({au_columns})")
        kept = [(a, c) for a, c in zip(aus, au_columns) if c not in excluded]
        aus, au_columns = [a for a, _ in kept], [c for _, c in kept]
    resize = args.resize_size or int(round(args.image_size * 256 / 224))
    num_workers = args.num_workers
    if num_workers is None:
        # processes on this machine, as torchrun / accelerate launch tell them
        num_workers = default_num_workers(accelerator.device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    decoded = None
    if args.decoded_cache == "always" or (args.decoded_cache == "auto" and accelerator.device.type == "cuda"):
        decoded = _open_decoded_cache(accelerator, args, resize, num_workers)
        dataset = number_rows(dataset)
    splits = split_fold(
        dataset, args.fold, metadata=metadata, val_fraction=args.val_fraction, seed=args.seed, verbose=main
    )
    from ..data.schema import normalize_partition

    partition = normalize_partition(metadata.get("partition") or dict(zip(dataset["subject"], dataset["part"])))
    check_fold_splits(args, splits, partition)
    parts = {
        name: AUImageDataset(splits[name], au_columns, size=resize, decoded=decoded)
        for name in ("train", "validation", "test")
    }
    train_labels = parts["train"].labels.numpy()
    absent_aus = aus_without_positives(train_labels, au_columns, warn=main)

    set_seed(args.seed)  # here, so that building the decoded cache (which draws loader seeds) changes nothing
    model, processor = build_model(args, aus, train_labels, verbose=main)
    if args.channels_last:  # faster convolutions on GPU and on CPU (oneDNN): measured 1.8x for resnet18 on 2 cores
        model = model.to(memory_format=torch.channels_last)
    augment = DeviceAugment(
        args.image_size,
        processor.image_mean,
        processor.image_std,
        channels_last=args.channels_last,
        random_crop=args.random_crop,
    ).to(accelerator.device)

    sampler = EpochShuffleSampler(len(parts["train"]), args.seed)
    loader_kwargs = dict(
        collate_fn=collate_uint8,
        num_workers=num_workers,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    train_loader = DataLoader(
        parts["train"], batch_size=args.batch_size, sampler=sampler, drop_last=False, **loader_kwargs
    )
    eval_batch = args.eval_batch_size or args.batch_size
    validating = len(parts["validation"]) > 0
    if not validating:
        if main:
            print(
                "No validation subjects (--val_fraction 0): early stopping is off and the last epoch's model is kept; "
                "attention health is measured on the first 256 training faces instead.",
                flush=True,
            )
    # Without validation subjects the loader only feeds the attention-health statistics (no F1, no selection).
    val_source = parts["validation"] if validating else Subset(parts["train"], range(min(256, len(parts["train"]))))
    val_loader = DataLoader(val_source, batch_size=eval_batch, shuffle=False, **loader_kwargs)
    test_loader = DataLoader(parts["test"], batch_size=eval_batch, shuffle=False, **loader_kwargs)

    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        fused=accelerator.device.type == "cuda",  # one kernel for all parameters on a GPU
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    if args.compile:
        model = torch.compile(model)
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader, scheduler
    )

    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "epochs_without_improvement": 0, "history": []}
    if args.resume:
        checkpoints = _complete_checkpoints(output_dir)
        if checkpoints:
            accelerator.load_state(str(checkpoints[-1]))
            state = json.loads((checkpoints[-1] / STATE_FILE).read_text(encoding="utf-8"))
            if main:
                print(f"Resumed from {checkpoints[-1]} (epoch {state['epoch']} done)", flush=True)
        elif main:
            print(f"--resume: no complete checkpoint under {output_dir / CHECKPOINTS_DIR}; starting fresh", flush=True)

    text_parameters = text_path_parameters(accelerator.unwrap_model(model))
    steps_per_epoch = len(train_loader)
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    log_file = output_dir / "metrics.jsonl"
    epochs_this_run = 0
    stopped_early = False
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        if state["epochs_without_improvement"] >= args.patience > 0:
            stopped_early = True
            break
        # Through the prepared loader: Accelerate's iterator calls set_epoch(its own counter) on the sampler, and
        # that counter restarts at 0 in a resumed run, which would replay epoch 1's order (measured before this fix).
        train_loader.set_epoch(epoch)
        set_seed(args.seed * 1000 + epoch, device_specific=True)  # dropout + augmentation depend on (seed, epoch)
        model.train()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{args.epochs}",
            disable=not (main and args.progress),
            dynamic_ncols=True,
            leave=False,
        )
        loss_sum = torch.zeros((), device=accelerator.device)
        text_grad_sum = torch.zeros((), device=accelerator.device)
        seen, started = 0, time.perf_counter()
        data_wait, fetch_started = 0.0, started
        for step, batch in enumerate(train_loader):
            data_wait += time.perf_counter() - fetch_started  # time the step loop stood waiting for a batch
            if step >= steps_per_epoch:
                break
            with accelerator.accumulate(model):
                pixels = augment(batch["pixel_values"], train=True)
                with accelerator.autocast():
                    loss = model(pixels, labels=batch["labels"]).loss
                accelerator.backward(loss)
                text_grad = grad_norm(text_parameters)
                if text_grad is not None:
                    text_grad_sum += text_grad
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            seen += len(batch["labels"]) * accelerator.num_processes
            bar.update(1)
            if (step + 1) % args.log_every == 0 or step + 1 == steps_per_epoch:  # the only host sync in the loop
                rate = seen / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{loss_sum.item() / (step + 1):.4f}", img_s=f"{rate:.0f}")
            fetch_started = time.perf_counter()
        bar.close()
        accelerator.wait_for_everyone()
        train_seconds = time.perf_counter() - started
        scheduler.step()
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(1, steps_per_epoch)

        health = AttentionHealth()
        probabilities, labels = predict_loader(model, val_loader, augment, accelerator, health=health)
        thresholds = accelerator.unwrap_model(model).config.decision_thresholds
        if validating:
            val_scores = au_f1_scores(probabilities_to_predictions(probabilities, thresholds), labels, au_columns)
            improved = val_scores["f1_mean"] > state["best_f1"]
        else:  # every epoch replaces the kept model: the last one is tested
            val_scores, improved = {"f1_mean": None, "f1": {}}, True
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_f1_mean": val_scores["f1_mean"],
            "val_f1": val_scores["f1"],
            "lr": scheduler.get_last_lr()[0],
            "train_images_per_s": seen / train_seconds,
            "data_wait_share": data_wait / train_seconds,
        }
        attention = health.compute(reduce=lambda t: accelerator.reduce(t, reduction="sum"))
        if attention:
            if text_parameters:
                attention["text_path_grad_norm"] = (
                    accelerator.reduce(text_grad_sum, reduction="mean").item() / max(1, steps_per_epoch)
                )
            record.update(attention)
            record["attention_collapsed"] = warn_if_collapsed(attention, epoch) if main else False
        state["history"].append(record)
        state["epoch"] = epoch
        if improved:
            state.update(best_f1=val_scores["f1_mean"] if validating else -1.0, best_epoch=epoch)
            state["epochs_without_improvement"] = 0
        else:
            state["epochs_without_improvement"] += 1
        if main:
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, "
                + (f"val mean F1 {val_scores['f1_mean']:.1f}" if validating else "no validation")
                + f"{' (best)' if improved and validating else ''}, {record['train_images_per_s']:.0f} img/s"
                + (
                    f"; AU embedding cosine {record['au_embedding_cosine']:.3f}, AU map TV {record['au_map_tv']:.3f}, "
                    f"dead maps {100 * record['dead_map_share']:.1f}%"
                    if "au_map_tv" in record
                    else ""
                ),
                flush=True,
            )
            # The whole history, atomically: a run killed after this write and resumed from the previous epoch's
            # checkpoint rewrites the file from that checkpoint's history, so no epoch appears twice.
            write_text_atomic(log_file, "".join(json.dumps(r) + "\n" for r in state["history"]))
            if improved:
                _save_model_atomic(accelerator.unwrap_model(model), processor, output_dir / BEST_DIR)
        accelerator.log(_tracker_scalars(record), step=epoch)  # trackers log on the main process only
        _save_epoch_checkpoint(accelerator, output_dir, epoch, state, args.keep_checkpoints)
        epochs_this_run += 1
        if args.stop_after_epochs and epochs_this_run >= args.stop_after_epochs and epoch < args.epochs:
            accelerator.wait_for_everyone()
            if main:
                print(
                    f"Stopping after {epochs_this_run} epoch(s) as asked (--stop_after_epochs); resume with --resume"
                )
            accelerator.end_training()
            return {"interrupted_after_epoch": epoch}

    accelerator.wait_for_everyone()
    # Test the best model (by validation F1) on the fold's unseen subjects.
    best_state = _load_best_state(output_dir / BEST_DIR)
    accelerator.unwrap_model(model).load_state_dict(best_state)
    probabilities, labels = predict_loader(model, test_loader, augment, accelerator)
    unwrapped = accelerator.unwrap_model(model)
    predictions = probabilities_to_predictions(probabilities, unwrapped.config.decision_thresholds)
    test_scores = au_f1_scores(predictions, labels, au_columns)
    baselines = frequency_prior_f1(train_labels, labels, au_columns, seed=args.seed)
    accelerator.log({"test_f1_mean": test_scores["f1_mean"]}, step=state["epoch"])
    results = {
        "dataset": str(args.dataset),
        "source": metadata.get("source"),
        "fold": args.fold,
        "fold_name": fold_name(args.fold),
        "model_type": args.model_type,
        "subjects": {name: sorted(set(splits[name]["subject"])) for name in ("train", "validation", "test")},
        "images": {name: len(parts[name]) for name in parts},
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "stopped_early": stopped_early,
        "validation_f1_mean": state["best_f1"] if validating else None,
        "test": test_scores,
        # AU column -> known training labels, for AUs never present in training: their test F1 measures nothing.
        "aus_without_training_positives": absent_aus,
        "test_images_evaluated": int(len(labels)),
        "process": {"index": accelerator.process_index, "count": accelerator.num_processes},
        "weights_sha256": _weights_sha256(unwrapped),
        "frequency_prior": baselines["prior"],
        "all_present": baselines["all_present"],
        "history": state["history"],
        "arguments": {k: v for k, v in vars(args).items()},
    }
    if main:
        final = output_dir / FINAL_DIR
        _save_model_atomic(unwrapped, processor, final)
        write_json_atomic(final / "results.json", results, default=float)
        write_json_atomic(output_dir / "results.json", results, default=float)
        np.savez_compressed(output_dir / "test_predictions.npz", probabilities=probabilities, labels=labels)
        _write_model_card(final, unwrapped.config, results)
        _plot_curves(state["history"], output_dir / "training_curve.png")
        print(
            f"{fold_name(args.fold)}: test mean F1 {test_scores['f1_mean']:.1f} "
            f"(frequency prior {baselines['prior']['f1_mean']:.1f}, all-present {baselines['all_present']['f1_mean']:.1f}); "
            f"model saved to {final}",
            flush=True,
        )
    accelerator.end_training()
    return results


def _save_epoch_checkpoint(accelerator, output_dir: Path, epoch: int, state: dict, keep: int) -> None:
    folder = output_dir / CHECKPOINTS_DIR / f"epoch_{epoch}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(folder / STATE_FILE, state, default=float)
        (folder / COMPLETE_MARKER).write_text("ok\n")
        for old in _complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _weights_sha256(model) -> str:
    """A hash of every parameter and buffer (processes of a data-parallel run must agree on it)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_best_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no saved weights; training produced no best model")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def _write_model_card(folder: Path, config, results: dict) -> None:
    try:
        from ..hub import write_model_card
    except ImportError:  # pragma: no cover
        return
    write_model_card(folder, config, results)


def _plot_curves(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    if any(h.get("val_f1_mean") is not None for h in history):
        ax2 = ax1.twinx()
        values = [np.nan if h.get("val_f1_mean") is None else h["val_f1_mean"] for h in history]
        ax2.plot(epochs, values, "s-", color="tab:orange", label="validation mean F1")
        ax2.set_ylabel("validation mean F1 (%)", color="tab:orange")
    ax1.set_title("Training curve")
    fig.tight_layout()
    save_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def parse_args(argv: list[str] | None, dataclass_type=TrainArguments, prog: str = "sevnet-hf train"):
    """Parse command-line flags, or a JSON/YAML file of them followed by flags that override it.

    ``sevnet-hf train examples/paper_strict.yaml --dataset prepared/bp4d``: the file's keys are the flags' names; a
    mapping (e.g. ``config_overrides``) is passed on as JSON. An unknown key is an error naming the file and the key.
    (The parsing is ``sevnet_hf.cli_args.parse_args``, shared by every command.)
    """
    from ..cli_args import parse_args as parse_command_line

    return parse_command_line(argv, dataclass_type, prog)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = train(args)
    except TrainingDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
