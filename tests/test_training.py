"""Accelerate training: a whole run end to end, resume equivalence, and 2-process data parallelism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sevnet_hf.training.args import TrainArguments
from sevnet_hf.training.loop import allow_precision_change, train
from tests.fixtures_data import make_prepared_dataset

TINY_OVERRIDES = json.dumps(
    {"inter_au_hidden_size": 48, "inter_au_num_heads": 6, "inter_au_intermediate_size": 64, "inter_au_dropout": 0.1}
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared_dataset(tmp_path_factory.mktemp("data") / "tiny")


def run_args(prepared, text_encoder, output_dir, **overrides):
    fields = dict(
        dataset=str(prepared),
        output_dir=str(output_dir),
        text_encoder=text_encoder,
        backbone_weights="none",
        config_overrides=TINY_OVERRIDES,
        image_size=56,
        resize_size=64,
        batch_size=5,
        epochs=2,
        num_workers=0,
        progress=False,
        seed=3,
        val_fraction=0.3,
    )
    fields.update(overrides)
    return TrainArguments(**fields)


def tiny_cli_argv(data: Path, output_dir: Path, text_encoder: str) -> list[str]:
    """Command-line flags for a tiny 1-epoch run (the crossval and ablation commands)."""
    flags = {
        "dataset": data,
        "output_dir": output_dir,
        "text_encoder": text_encoder,
        "backbone_weights": "none",
        "config_overrides": TINY_OVERRIDES,
        "image_size": 56,
        "resize_size": 64,
        "batch_size": 6,
        "epochs": 1,
        "num_workers": 0,
        "progress": "false",
        "val_fraction": 0.3,
    }
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_full_run_saves_a_loadable_model_with_results(prepared, tiny_text_encoder_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    results = train(run_args(prepared, tiny_text_encoder_dir, tmp_path))
    model_dir = tmp_path / "model"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "results.json"):
        assert (model_dir / name).is_file(), name
    assert (tmp_path / "training_curve.png").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    subjects = results["subjects"]
    assert not set(subjects["test"]) & (set(subjects["train"]) | set(subjects["validation"]))
    assert not set(subjects["train"]) & set(subjects["validation"])
    assert all(s.startswith("P3") for s in subjects["test"])  # fold 1 tests on part 3
    assert results["images"]["test"] == 12
    assert set(results["test"]["f1"]) == {"AU1", "AU2", "AU4"}
    model = AutoModelForImageClassification.from_pretrained(model_dir)
    assert model.config.au_labels == ["AU1", "AU2", "AU4"] and model.has_au_text_embeddings
    assert "test mean F1" in (model_dir / "README.md").read_text() or "Avg" in (model_dir / "README.md").read_text()


def test_one_process_trains_in_fp32_then_in_bf16(prepared, tiny_text_encoder_dir, tmp_path):
    """Accelerate keeps one state per process and refuses an Accelerator with another precision; train() resets it in
    a single process, so the demo's bf16 run can follow a fp32 run (tests, notebooks)."""
    from accelerate import Accelerator

    Accelerator(mixed_precision="no")
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(mixed_precision="bf16")  # what train() met before the reset
    first = train(run_args(prepared, tiny_text_encoder_dir, tmp_path / "fp32", mixed_precision="no", epochs=1))
    second = train(run_args(prepared, tiny_text_encoder_dir, tmp_path / "bf16", mixed_precision="bf16", epochs=1))
    assert first["images"]["test"] == second["images"]["test"] == 12
    assert (tmp_path / "bf16" / "model" / "model.safetensors").is_file()
    allow_precision_change("no")  # leave the process as the other tests expect it


def test_per_epoch_metrics_reach_tensorboard(prepared, tiny_text_encoder_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(run_args(prepared, tiny_text_encoder_dir, tmp_path, report_to="auto"))
    events = EventAccumulator(str(tmp_path / "runs")).Reload()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = events.Scalars("val_f1_mean")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([r["val_f1_mean"] for r in history])
    assert [e.step for e in events.Scalars("val_f1/AU4")] == [1, 2]
    assert len(events.Scalars("test_f1_mean")) == 1
    tv = events.Scalars("attention/au_map_tv")  # attention health, grouped
    assert [e.value for e in tv] == pytest.approx([r["au_map_tv"] for r in history])


def test_report_to_none_writes_no_tracker_files(prepared, tiny_text_encoder_dir, tmp_path):
    train(run_args(prepared, tiny_text_encoder_dir, tmp_path, epochs=1, report_to="none"))
    assert not (tmp_path / "runs").exists()
    assert (tmp_path / "metrics.jsonl").is_file()


def test_resume_after_first_epoch_matches_an_uninterrupted_run(prepared, tiny_text_encoder_dir, tmp_path):
    straight = tmp_path / "straight"
    train(run_args(prepared, tiny_text_encoder_dir, straight))
    resumed = tmp_path / "resumed"
    first = train(run_args(prepared, tiny_text_encoder_dir, resumed, stop_after_epochs=1))
    assert first == {"interrupted_after_epoch": 1}
    assert not (resumed / "model").exists()
    train(run_args(prepared, tiny_text_encoder_dir, resumed, resume=True))
    a, b = weights(straight / "model"), weights(resumed / "model")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    history = [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert history == [1, 2]  # the resumed run did not redo epoch 1


# Runs `sevnet_hf.train` unchanged, after a global optimizer hook that appends each step's number to a file and, at
# step `hold_at`, blocks forever: the test then kills the process from outside with SIGKILL, so where it dies is known
# exactly and no timing guess (sleep) decides it. The hook lives here only; the training code has no test switch.
HOLD_AT_STEP = """
import sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook

steps_file, hold_at = sys.argv[1], int(sys.argv[2])
count = 0

def after_step(optimizer, args, kwargs):
    global count
    count += 1
    with open(steps_file, "a") as handle:
        handle.write(f"{count}\\n")
    while count == hold_at:
        time.sleep(1)

register_optimizer_step_post_hook(after_step)
from sevnet_hf.training.loop import main
sys.exit(main(sys.argv[3:]))
"""


def _train_flags(prepared, text_encoder: str, output_dir: Path, **overrides) -> list[str]:
    values = {
        k: v for k, v in vars(run_args(prepared, text_encoder, output_dir, **overrides)).items() if v is not None
    }
    return [
        item
        for key, value in values.items()
        for item in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))
    ]


def test_run_killed_mid_epoch_resumes_to_the_weights_and_losses_of_an_uninterrupted_run(
    prepared, tiny_text_encoder_dir, tmp_path
):
    # The saved model is the best epoch's, which can hide a resume that trained later epochs on the wrong order
    # (Accelerate's iterator used to call set_epoch with its own counter, 0 again after a restart): compare the last
    # epoch's checkpoint and every epoch's record instead.
    import signal
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    # Whole epochs (a step cap hid the bug: Accelerate counts an epoch only when its iterator runs out): 18 training
    # faces in batches of 5 are 4 steps an epoch, so step 6 is inside epoch 2.
    options = dict(epochs=2, report_to="none")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    steps_file = tmp_path / "steps.txt"
    command = [sys.executable, "-c", HOLD_AT_STEP, str(steps_file), "6"]
    victim_log = (tmp_path / "victim.log").open("w")  # a file, not a pipe that nobody reads while we wait
    victim = subprocess.Popen(
        command + _train_flags(prepared, tiny_text_encoder_dir, killed, **options),
        env=env,
        stdout=victim_log,
        stderr=subprocess.STDOUT,
    )
    uninterrupted = subprocess.Popen(  # at the same time, on the other core
        [sys.executable, "-m", "sevnet_hf.train"] + _train_flags(prepared, tiny_text_encoder_dir, straight, **options),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (steps_file.is_file() and steps_file.read_text().split()[-1:] == ["6"]):
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached step 6"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    victim_log.close()
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["epoch_1"]  # it died inside epoch 2
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1

    resumed = subprocess.run(
        [sys.executable, "-m", "sevnet_hf.train"]
        + _train_flags(prepared, tiny_text_encoder_dir, killed, resume=True, **options),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and "(epoch 1 done)" in resumed.stdout
    output = uninterrupted.communicate(timeout=300)[0]
    assert uninterrupted.returncode == 0, output[-3000:]

    a, b = weights(straight / "checkpoints" / "epoch_2"), weights(killed / "checkpoints" / "epoch_2")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    def records(folder):
        timing = ("train_images_per_s", "data_wait_share")
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert [r["epoch"] for r in records(killed)] == [1, 2]
    assert records(straight) == records(killed)  # losses, F1, attention statistics, learning rate: all identical


def test_metrics_file_has_each_epoch_once_after_a_kill_between_metrics_and_checkpoint(
    prepared, tiny_text_encoder_dir, tmp_path
):
    import shutil

    train(run_args(prepared, tiny_text_encoder_dir, tmp_path, epochs=3, stop_after_epochs=2))
    # As if killed after epoch 2's metrics line but before its checkpoint was complete.
    shutil.rmtree(tmp_path / "checkpoints" / "epoch_2")
    train(run_args(prepared, tiny_text_encoder_dir, tmp_path, epochs=3, resume=True))
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_val_fraction_zero_trains_without_early_stopping_and_keeps_the_last_epoch(
    prepared, tiny_text_encoder_dir, tmp_path, capsys
):
    results = train(run_args(prepared, tiny_text_encoder_dir, tmp_path, val_fraction=0.0, epochs=2, patience=1))
    assert "early stopping is off and the last epoch's model is kept" in capsys.readouterr().out
    assert results["images"]["validation"] == 0 and results["validation_f1_mean"] is None
    assert results["epochs_run"] == 2 and results["best_epoch"] == 2 and not results["stopped_early"]
    final, last = weights(tmp_path / "model"), weights(tmp_path / "checkpoints" / "epoch_2")
    for key in final:
        torch.testing.assert_close(final[key], last[key], rtol=0, atol=0, msg=key)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_f1_mean"] for r in records] == [None, None] and all("au_map_tv" in r for r in records)
    assert "the last epoch was kept" in (tmp_path / "model" / "README.md").read_text()


def _one_subject_dataset(out_dir: Path) -> Path:
    """What `prepare folder` makes of a labels file with one subject: part 1 only (round-robin), parts 2 and 3 empty."""
    import numpy as np

    from sevnet_hf.data.align import canonical_template
    from sevnet_hf.data.schema import FrameRecord, prepare_dataset

    def thunk():
        rng = np.random.default_rng(0)
        for frame in range(8):
            image = (rng.random((96, 96, 3)) * 200).astype(np.uint8)
            landmarks = canonical_template(96)
            yield FrameRecord("S1", "T1", frame, {1: frame % 2, 2: 1}, image=image, landmarks=landmarks)

    options = dict(aus=[1, 2], source="one", partition={"S1": 1}, partition_name="round-robin", progress=False)
    prepare_dataset([("S1", thunk)], out_dir, **options)
    return out_dir


def test_a_fold_without_test_or_validation_faces_is_refused_before_training(tiny_text_encoder_dir, tmp_path, capsys):
    from sevnet_hf.training.loop import main

    data = _one_subject_dataset(tmp_path / "one")
    flags = _train_flags(data, tiny_text_encoder_dir, tmp_path / "run", epochs=1)
    assert main(flags) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "fold 1 (train part1+part2, test part3) has no test faces (part 3 has no subjects)" in error
    assert "no validation faces (--val_fraction 0.3 of 1 training subject holds none out" in error
    assert "1 subject: part 1: S1" in error and "--parts" in error
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained
    # Without validation asked for, only the missing test part is named.
    assert main(_train_flags(data, tiny_text_encoder_dir, tmp_path / "run", epochs=1, val_fraction=0.0)) == 2
    error = capsys.readouterr().err
    assert "no test faces" in error and "validation" not in error


def test_an_au_never_present_in_training_is_warned_about_and_reported(prepared, tiny_text_encoder_dir, tmp_path):
    from sevnet_hf.data.schema import load_prepared, read_metadata

    dataset = load_prepared(prepared).map(lambda row: {"AU2": row["AU2"] if row["part"] == 3 else 0})
    data = tmp_path / "no_au2"
    dataset.save_to_disk(str(data / "dataset"))
    (data / "metadata.json").write_text(json.dumps(read_metadata(prepared)))
    with pytest.warns(UserWarning, match=r"AU2 is never present in the training faces \(0 of \d+ known labels"):
        results = train(run_args(data, tiny_text_encoder_dir, tmp_path / "run", epochs=1, report_to="none"))
    assert set(results["aus_without_training_positives"]) == {"AU2"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["aus_without_training_positives"] == results["aus_without_training_positives"]


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights_and_count_each_test_image_once(
    prepared, tiny_text_encoder_dir, tmp_path
):
    worker = Path(__file__).with_name("dist_worker.py")
    # Both ranks read faces from one decoded cache (built once by rank 0; the GPU default), tested here on the CPU.
    args = run_args(
        prepared,
        tiny_text_encoder_dir,
        tmp_path / "run",
        epochs=1,
        batch_size=4,
        decoded_cache="always",
        decoded_cache_dir=str(tmp_path / "faces"),
    )
    (tmp_path / "args.json").write_text(json.dumps(vars(args)))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    # torchrun starts the 2 processes; Accelerate reads its environment and uses gloo on the CPU.
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(worker),
        str(tmp_path / "args.json"),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == ["faces_64.json", "faces_64.u8"]
    for rank in ranks:
        # 12 test images split over 2 processes in batches of 4: padding is dropped, each image counted once.
        assert rank["test_images_evaluated"] == 12
        assert rank["test_support"] == ranks[0]["test_support"]


def test_per_au_bias_starts_at_the_training_base_rates():
    import numpy as np

    from sevnet_hf import SEVNetForAUDetection
    from sevnet_hf.training.build import init_au_bias_from_base_rates
    from tests.conftest import tiny_config

    model = SEVNetForAUDetection(tiny_config(classifier_per_au_bias=True))
    labels = np.array([[1, 0, 1, -1, 0], [1, 0, 0, -1, 0], [0, 0, 1, 1, 0], [1, 1, -1, 0, 0]])
    init_au_bias_from_base_rates(model, labels)
    rates = np.clip([3 / 4, 1 / 4, 2 / 3, 1 / 2, 0.0], 0.01, 0.99)  # unknown (-1) left out of each rate
    torch.testing.assert_close(
        model.classifier.au_bias, torch.tensor(np.log(rates / (1 - rates)), dtype=torch.float32)
    )


def test_default_workers_use_the_spare_cores_on_a_gpu(monkeypatch):
    from sevnet_hf.training import loop

    assert loop.default_num_workers(torch.device("cpu")) == 2
    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loop.default_num_workers(torch.device("cuda")) == 15  # one core stays with the step loop
    assert loop.default_num_workers(torch.device("cuda"), processes_per_node=8) == 1
    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: set(range(128)), raising=False)
    assert loop.default_num_workers(torch.device("cuda")) == 16  # capped


@pytest.mark.parametrize("command", ["crossval", "ablate"])
def test_crossval_and_ablate_refuse_a_fold_without_test_faces_in_one_line(tiny_text_encoder_dir, tmp_path, capsys, command):
    from sevnet_hf.cli import main

    data = _one_subject_dataset(tmp_path / "one")
    flags = _train_flags(data, tiny_text_encoder_dir, tmp_path / "run", epochs=1, val_fraction=0.0)
    flags += ["--folds", "1"] + (["--model_types", "resnet"] if command == "ablate" else [])
    assert main([command, *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "no test faces" in error, error
