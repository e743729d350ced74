"""Fault injection for ``sevnet-hf detect`` and ``sevnet-hf prepare folder``: a folder of bad inputs must give the
documented exit code, one clear line per bad input, no traceback, and every good input's rows exactly once.

    python benchmarks/fault_injection.py [--model DIR] [--work DIR] [--quick] [--in-process]

The script writes, in a fresh folder (``--work``, else a temporary one):

- good inputs, each holding the astronaut's face (170 x 170 crop of scikit-image's photo): JPEG, PNG, 16-bit PNG,
  CMYK JPEG, still GIF, animated GIF (3 frames), a short MJPG video, and odd file names (spaces and accents, a
  leading dash, a comma and quotes, a newline, a byte that is not UTF-8, a video with such a byte);
- bad inputs: an empty file, truncated JPEG and PNG, text saved as ``.png``, a 1x1 image (no face), a symbolic link
  loop, a broken link, random bytes as ``.mp4``.

It then runs the real commands, each in its own process as a user would:

1. ``sevnet-hf detect FOLDER`` (CSV; also Parquet without ``--quick``): exit 0; the summary names each bad input on
   exactly one line with its reason; every good input has one ``ok`` row per frame, exactly once.
2. ``sevnet-hf detect`` on each bad file named directly (not with ``--quick``): the same lines.
3. ``sevnet-hf detect EMPTY_FOLDER``: exit 2, one line, no output file.
4. ``sevnet-hf prepare folder`` over the images with a labels CSV (the name that is not UTF-8 cannot be written into
   a UTF-8 CSV and is left out): exit 0; each bad image is listed once in ``report.json`` (errors or faces not
   found) and in the printed table; every good image is in the prepared dataset exactly once.

No traceback may appear in any command's output. The script prints one line per check and a summary, and exits 1 when
any check failed. Without ``--model`` it builds a tiny random SEV-Net (no download). ``--quick`` runs a reduced set,
and ``--in-process`` runs the commands through ``sevnet_hf.cli.main`` in this process: that is what
``tests/test_fault_injection.py`` runs in CI (each fresh ``sevnet-hf`` process spends 10-20 s importing transformers'
pipelines on a busy machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checks read outputs with sevnet_hf, from a checkout too
VIDEO_FRAMES = 6


@dataclass
class Inputs:
    """What :func:`make_inputs` wrote: good inputs with their frame counts, bad ones with the expected reason."""

    folder: Path
    good: dict[str, int] = field(default_factory=dict)  # path -> frames with a face
    bad: dict[str, str] = field(default_factory=dict)  # path -> a word the reported line must contain
    images_only: set[str] = field(default_factory=set)  # paths that prepare folder reads (stills)


def face_image() -> np.ndarray:
    """The astronaut's face, 170 x 170 RGB (the HOG detector scores it about 1.0)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[50:220, 140:310])


def _write_video(path: str, face: np.ndarray, frames: int = VIDEO_FRAMES) -> None:
    import cv2

    name: str | bytes = path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        name = os.fsencode(path)  # OpenCV crashes on a str that is not UTF-8; bytes work
    writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path!r} with OpenCV")
    for index in range(frames):
        frame = np.full((240, 320, 3), 90, np.uint8)
        x = 20 + 8 * index
        frame[30:200, x : x + 170] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def make_inputs(folder: Path, quick: bool = False) -> Inputs:
    """Write the good and bad inputs into ``folder`` (see the module docstring)."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    face = face_image()
    inputs = Inputs(folder)

    def good(name: str, frames: int = 1, still: bool = True) -> str:
        path = os.path.join(os.fsdecode(folder), name)
        inputs.good[path] = frames
        if still:
            inputs.images_only.add(path)
        return path

    def bad(name: str, reason: str, still: bool = True) -> str:
        path = os.path.join(os.fsdecode(folder), name)
        inputs.bad[path] = reason
        if still:
            inputs.images_only.add(path)
        return path

    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    png = cv2.imencode(".png", bgr)[1].tobytes()
    Path(good("photo.jpg")).write_bytes(jpeg)
    cv2.imencode(".png", bgr.astype(np.uint16) * 257)[1].tofile(good("deep16.png"))
    Image.fromarray(face).convert("CMYK").save(good("cmyk.jpg"))
    frames = [Image.fromarray(face), Image.fromarray(np.ascontiguousarray(face[:, ::-1])), Image.fromarray(face)]
    frames[0].save(good("moving.gif", frames=3), save_all=True, append_images=frames[1:], duration=100, loop=0)
    Path(good(os.fsdecode(b"bytes \xff not utf8.jpg"))).write_bytes(jpeg)
    Path(good("new\nline.jpg")).write_bytes(jpeg)
    _write_video(good("clip.avi", frames=VIDEO_FRAMES, still=False), face)
    if not quick:
        frames[0].save(good("still.gif"))
        Path(good("png photo.png")).write_bytes(png)
        Path(good("espacé é ü.jpg")).write_bytes(jpeg)
        Path(good("-leading-dash.jpg")).write_bytes(jpeg)
        Path(good('comma, "quoted".jpg')).write_bytes(jpeg)
        _write_video(good(os.fsdecode(b"clip \xfe.avi"), frames=VIDEO_FRAMES, still=False), face)

    Path(bad("empty.jpg", "empty file")).write_bytes(b"")
    Path(bad("truncated.jpg", "not a readable image")).write_bytes(jpeg[:300])
    Path(bad("truncated.png", "not a readable image")).write_bytes(png[: len(png) // 3])
    Path(bad("text.png", "not a readable image")).write_text("this is text, not a PNG\n")
    cv2.imwrite(bad("tiny.png", "no face"), np.zeros((1, 1, 3), np.uint8))
    loop = bad("loop.jpg", "symbolic link loop")
    os.symlink(loop, loop)
    os.symlink(os.path.join(os.fsdecode(folder), "gone.jpg"), bad("broken.jpg", "broken symbolic link"))
    rng = np.random.default_rng(0)
    Path(bad("corrupt.mp4", "video", still=False)).write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return inputs


# ----------------------------------------------------------------------------------------------------------------------
# Running commands and checking what they say
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    command: list[str]
    code: int
    output: str  # stdout and stderr together


IN_PROCESS = False  # --in-process: run the commands through sevnet_hf.cli.main here (the CI test; see below)


def run_command(arguments: list[str], cwd: Path) -> Run:
    """``sevnet-hf ARGUMENTS`` in a fresh process; stdout and stderr merged (the order a user sees them).

    With :data:`IN_PROCESS` the command runs in this process instead (no 10-20 s of imports per command; a native
    crash would then end this process too, and messages that C libraries print themselves are not captured); an
    exception that escapes it is recorded as a traceback.
    """
    if IN_PROCESS:
        return _run_in_process(arguments, cwd)
    command = [sys.executable, "-m", "sevnet_hf.cli", *arguments]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONIOENCODING": "utf-8"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    return Run(command, done.returncode, done.stdout.decode("utf-8", "backslashreplace"))


def _run_in_process(arguments: list[str], cwd: Path) -> Run:
    import contextlib
    import io
    import traceback

    from sevnet_hf.cli import main as cli_main

    captured = io.StringIO()
    previous = os.getcwd()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            os.chdir(cwd)
            code = int(cli_main(list(arguments)) or 0)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 2
        except Exception:
            traceback.print_exc(file=captured)
            code = 1
        finally:
            os.chdir(previous)
    return Run(["sevnet-hf", *arguments], code, captured.getvalue())


class Checks:
    """Collects named pass/fail results."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f": {detail}"), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{name}: {detail}" if detail else name)
        return ok

    def no_traceback(self, label: str, run: Run) -> None:
        crashed = "Traceback (most recent call last)" in run.output or run.code < 0
        self.check(f"{label}: no traceback or crash", not crashed, run.output[-1500:])


def _lines_naming(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def check_bad_lines(checks: Checks, label: str, output: str, inputs: Inputs, names: dict[str, str]) -> None:
    """Each bad input (``path -> its form in the output``) is named on exactly one line, with its reason."""
    for path, reason in inputs.bad.items():
        lines = _lines_naming(output, names[path])
        ok = len(lines) == 1 and reason in lines[0]
        checks.check(f"{label}: one line for {os.path.basename(names[path])} ({reason})", ok, repr(lines))


def check_detect(checks: Checks, inputs: Inputs, model: str, work: Path, fmt: str) -> None:
    from sevnet_hf.inference.detect import decode_source_name, encode_source_name, read_results

    output = work / f"detections.{fmt}"
    run = run_command(
        ["detect", str(inputs.folder), "--model", model, "--output", str(output), "--progress", "false"], work
    )
    label = f"detect folder ({fmt})"
    checks.no_traceback(label, run)
    if not checks.check(f"{label}: exit 0", run.code == 0, run.output[-1500:]):
        return
    check_bad_lines(checks, label, run.output, inputs, {path: encode_source_name(path) for path in inputs.bad})
    for path in inputs.good:
        name = encode_source_name(path)
        stray = [line for line in _lines_naming(run.output, name) if not line.startswith("sevnet-hf detect: ")]
        checks.check(f"{label}: nothing reported for {os.path.basename(name)}", not stray, repr(stray))
    table = read_results(output)
    sources = [decode_source_name(text) for text in table["source"]]
    rows = Counter(zip(sources, table["frame"].tolist()))
    for path, frames in inputs.good.items():
        mine = table[[source == path for source in sources]]
        ok = (
            len(mine) == frames
            and all(rows[(path, frame)] == 1 for frame in mine["frame"])
            and set(mine["status"]) == {"ok"}
        )
        detail = f"{len(mine)} rows, statuses {sorted(set(mine['status']))}, expected {frames} ok"
        checks.check(f"{label}: rows of {os.path.basename(encode_source_name(path))} exactly once", ok, detail)
    for path in inputs.bad:
        count = sum(source == path for source in sources)
        checks.check(f"{label}: one row for bad input {os.path.basename(path)}", count == 1, f"{count} rows")
    expected = sum(inputs.good.values()) + len(inputs.bad)
    checks.check(f"{label}: {expected} rows in all, nothing else", len(table) == expected, f"{len(table)} rows")


def check_detect_named(checks: Checks, inputs: Inputs, model: str, work: Path) -> None:
    """Each bad file named on the command line (a symlink loop, an empty file ...) is reported the same way."""
    from sevnet_hf.inference.detect import encode_source_name

    output = work / "named.csv"
    bad = list(inputs.bad)
    run = run_command(["detect", *bad, "--model", model, "--output", str(output), "--progress", "false"], work)
    label = "detect bad files named directly"
    checks.no_traceback(label, run)
    if checks.check(f"{label}: exit 0", run.code == 0, run.output[-1500:]):
        check_bad_lines(checks, label, run.output, inputs, {path: encode_source_name(path) for path in bad})


def check_detect_empty(checks: Checks, model: str, work: Path) -> None:
    empty = work / "empty folder"
    empty.mkdir(exist_ok=True)
    output = work / "empty.csv"
    run = run_command(["detect", str(empty), "--model", model, "--output", str(output)], work)
    label = "detect empty folder"
    checks.no_traceback(label, run)
    lines = [line for line in run.output.splitlines() if line.strip()]
    checks.check(f"{label}: exit 2", run.code == 2, f"exit {run.code}")
    checks.check(
        f"{label}: one line naming the folder", len(lines) == 1 and str(empty) in lines[0], repr(run.output[-800:])
    )
    checks.check(f"{label}: no output written", not output.exists() and not list(work.glob("empty.csv*")))


def check_prepare(checks: Checks, inputs: Inputs, work: Path) -> None:
    """``prepare folder`` over the still images (good and bad) with a labels CSV."""
    folder = os.fsdecode(inputs.folder)
    listed = []
    for path in sorted(inputs.images_only):
        relative = os.path.relpath(path, folder)
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            print(
                f"note prepare folder: {relative.encode('utf-8', 'surrogateescape')!r} cannot be listed in a UTF-8 "
                "labels CSV; left out"
            )
            continue
        listed.append((path, relative))
    labels = work / "labels.csv"
    with open(labels, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject", "AU1", "AU2"])
        for index, (_, relative) in enumerate(listed):
            writer.writerow([relative, f"s{index % 3}", index % 2, 1 - index % 2])
    output = work / "prepared"
    run = run_command(
        ["prepare", "folder", "--images", folder, "--labels", str(labels), "--output", str(output)], work
    )
    label = "prepare folder"
    checks.no_traceback(label, run)
    if not checks.check(f"{label}: exit 0", run.code == 0, run.output[-2000:]):
        return
    report = json.loads((output / "report.json").read_text())
    reported = Counter(entry["source"] for entry in [*report.get("errors", []), *report.get("no_face", [])])
    for path, relative in listed:
        if path in inputs.bad:
            checks.check(f"{label}: {relative} reported once", reported[relative] == 1, f"{reported[relative]} times")
            lines = _lines_naming(run.output, relative)
            checks.check(f"{label}: {relative} named on one printed line", len(lines) == 1, repr(lines))
    from datasets import load_from_disk

    dataset = load_from_disk(str(output / "dataset"))
    kept = Counter(dataset["source"])
    for path, relative in listed:
        if path in inputs.good:
            checks.check(
                f"{label}: {relative!r} in the dataset exactly once", kept[relative] == 1, f"{kept[relative]}"
            )
    extra = [source for source in kept if source not in {relative for path, relative in listed if path in inputs.good}]
    checks.check(f"{label}: no bad image in the dataset", not extra, repr(extra))


def build_tiny_model(folder: Path) -> str:
    """A tiny random SEV-Net with the offline text encoder (no download)."""
    import torch

    from sevnet_hf import SEVNetConfig, SEVNetForAUDetection, SEVNetImageProcessor
    from sevnet_hf.offline_assets import write_random_text_encoder

    encoder = write_random_text_encoder(folder / "text_encoder")
    torch.manual_seed(0)
    config = SEVNetConfig(
        image_size=64,
        text_hidden_size=32,
        inter_au_hidden_size=48,
        inter_au_num_heads=6,
        inter_au_intermediate_size=64,
        aus=[1, 2, 4, 6, 12],
    )
    model = SEVNetForAUDetection.from_backbones(config, backbone_weights=None, text_encoder=encoder)
    model.save_pretrained(folder / "model")
    SEVNetImageProcessor(size=72, crop_size=64).save_pretrained(folder / "model")
    return str(folder / "model")


def run_fault_injection(model: str | None, work: Path, quick: bool = False, in_process: bool = False) -> list[str]:
    """Make the inputs under ``work``, run every check; returns the failures (empty when all passed)."""
    global IN_PROCESS
    IN_PROCESS = in_process
    work.mkdir(parents=True, exist_ok=True)
    model = model or build_tiny_model(work)
    inputs = make_inputs(work / "inputs", quick=quick)
    checks = Checks()
    check_detect(checks, inputs, model, work, "csv")
    if not quick:
        check_detect(checks, inputs, model, work, "parquet")
        check_detect_named(checks, inputs, model, work)
    check_detect_empty(checks, model, work)
    check_prepare(checks, inputs, work)
    print(f"fault injection: {checks.passed} checks passed, {len(checks.failures)} failed", flush=True)
    return checks.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Saved model folder (default: a tiny random SEV-Net built here).")
    parser.add_argument("--work", help="Folder for the inputs and outputs (default: a temporary folder).")
    parser.add_argument("--quick", action="store_true", help="A reduced set (the CI test).")
    parser.add_argument("--in-process", action="store_true", help="Run the commands in this process (faster).")
    args = parser.parse_args(argv)
    if args.work:
        return 1 if run_fault_injection(args.model, Path(args.work), args.quick, args.in_process) else 0
    with tempfile.TemporaryDirectory(prefix="sevnet_faults_") as folder:
        return 1 if run_fault_injection(args.model, Path(folder), args.quick, args.in_process) else 0


if __name__ == "__main__":
    sys.exit(main())
