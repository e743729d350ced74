"""Throughput and memory of ``sevnet-hf detect`` on a video, on CPU.

    python benchmarks/detect_video.py [--frames 300 1200] [--threads 2] [--batch-size 32]

Builds a SEV-Net with a resnet18 backbone at 224 px (random weights: speed does not depend on them) and writes
640x480 single-face videos (the astronaut's face moving and scaling a little over a textured background). Each video
length runs ``sevnet-hf detect`` in its own subprocess; the parent reads the child's peak resident memory
(``ru_maxrss`` from ``os.wait4``) and the detector's own timing statistics (``--stats_json``): frames/s of the detection
loop, frames/s over the whole command (with Python start-up and model loading) and the share of time spent
decoding, finding faces (detection + tracking), aligning and in the model. Memory must not grow with video length:
the longest run's peak is compared with the shortest's.

Other jobs may share the machine, so the load average (``os.getloadavg``) before and after each run is recorded.
Results go to ``benchmarks/results/detect_video.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "detect_video.json"
WIDTH, HEIGHT = 640, 480
TARGET_FPS = 15.0
MEMORY_TOLERANCE = 0.10


def build_model(folder: Path) -> None:
    """A random resnet18 SEV-Net at 224 px, saved with its image processor (no download)."""
    import torch

    from sevnet_hf import SEVNetConfig, SEVNetForAUDetection, SEVNetImageProcessor

    torch.manual_seed(0)
    model = SEVNetForAUDetection(SEVNetConfig(backbone="resnet18", image_size=224)).eval()
    model.set_au_text_embeddings(torch.randn(model.config.num_labels, model.config.text_hidden_size))
    model.save_pretrained(folder)
    SEVNetImageProcessor.from_backbone("resnet18", size=256, crop_size=224).save_pretrained(folder)


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """A 640x480 RGB background: smooth colour noise plus stripes (gives the detector something to reject)."""
    import cv2

    noise = rng.normal(0, 1, (HEIGHT // 8, WIDTH // 8, 3)).astype(np.float32)
    noise = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    x = np.arange(WIDTH)[None, :, None]
    y = np.arange(HEIGHT)[:, None, None]
    stripes = 20 * np.sin(x / 9.0 + y / 23.0)
    image = 120 + 35 * noise + stripes
    return np.clip(image, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: int, fps: float = 30.0) -> None:
    """The astronaut's face (about 120 px, scaled by +-10 %) moving on a smooth path over a textured background."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(0)
    background = textured_background(rng)
    face = data.astronaut()[50:220, 140:310]  # 170 x 170 around the face (the face itself is ~87 px)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write mp4v video to {path}")
    for index in range(frames):
        phase = 2 * np.pi * index / 240.0
        side = int(round(240 * (1.0 + 0.1 * np.sin(1.7 * phase))))  # face ~110-135 px
        patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        cx = WIDTH / 2 + 150 * np.sin(phase)
        cy = HEIGHT / 2 + 60 * np.sin(2 * phase)
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        frame = background.copy()
        frame[y0 : y0 + side, x0 : x0 + side] = patch
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def run_detect(
    video: Path, model: Path, workdir: Path, threads: int, batch_size: int, extra: list[str], wait_policy: str
) -> dict:
    """Run ``sevnet-hf detect`` in a child process; its stats, wall time and peak RSS (from ``os.wait4``)."""
    output = workdir / f"{video.stem}.csv"
    stats_file = workdir / f"{video.stem}.stats.json"
    command = [
        sys.executable,
        "-m",
        "sevnet_hf.cli",
        "detect",
        str(video),
        "--model",
        str(model),
        "--output",
        str(output),
        "--device",
        "cpu",
        "--batch_size",
        str(batch_size),
        "--threads",
        str(threads),
        "--progress",
        "false",
        "--stats_json",
        str(stats_file),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(workdir / f"{video.stem}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"detect failed ({child.returncode}); see {workdir / (video.stem + '.log')}")
    stats = json.loads(stats_file.read_text())
    seconds = stats["seconds"]
    staged = sum(seconds[k] for k in ("decode", "find", "align", "model", "write"))
    return {
        "frames": stats["frames"],
        "faces": stats["faces"],
        "rows": stats["rows"],
        "loop_seconds": seconds["total"],
        "loop_frames_per_second": round(stats["frames"] / seconds["total"], 2),
        "command_seconds": round(wall, 2),
        "command_frames_per_second": round(stats["frames"] / wall, 2),
        "stage_seconds": {k: seconds[k] for k in ("decode", "find", "align", "model", "write")},
        "stage_share": {k: round(seconds[k] / staged, 3) for k in ("decode", "find", "align", "model", "write")},
        # Decoding, face finding and alignment run in a background thread while the model runs, so the stage times
        # can add up to more than the loop's wall time; the shares are of their sum.
        "stage_seconds_sum": round(staged, 3),
        "tracker": stats["tracker"],
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "cpu_ms_per_frame": round(1000 * (usage.ru_utime + usage.ru_stime) / max(1, stats["frames"]), 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 1200], help="video lengths, one run each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the detect process")
    parser.add_argument("--batch-size", type=int, default=8, help="faces per model call (detect's CPU default)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep videos and outputs here (default: temp)")
    parser.add_argument(
        "--detect-args", default="", help="extra options for sevnet-hf detect, e.g. '--prefetch false'"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["passive", "active", "default"],
        default="passive",
        help="OpenMP wait policy of the child. On a shared machine, torch's spinning OpenMP threads (active) lose "
        "2-4x to other jobs; passive threads sleep at barriers instead",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="detect_video_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model = workdir / "sevnet_resnet18_224"
        build_model(model)
        runs = {}
        for frames in args.frames:
            video = workdir / f"face_{frames}.mp4"
            write_video(video, frames)
            runs[str(frames)] = result = run_detect(
                video, model, workdir, args.threads, args.batch_size, args.detect_args.split(), args.omp_wait_policy
            )
            print(
                f"{frames:5d} frames: {result['loop_frames_per_second']:6.2f} frames/s in the loop, "
                f"{result['command_frames_per_second']:6.2f} over the whole command ({result['command_seconds']} s); "
                f"{result['cpu_ms_per_frame']} CPU-ms/frame; peak RSS {result['peak_rss_mib']} MiB; load {result['load_average_before']} -> "
                f"{result['load_average_after']}"
            )
            print("        time share: " + ", ".join(f"{k} {v:.1%}" for k, v in result["stage_share"].items()))

    longest, shortest = runs[str(max(args.frames))], runs[str(min(args.frames))]
    ratio = longest["peak_rss_mib"] / shortest["peak_rss_mib"]
    summary = {
        "benchmark": "sevnet-hf detect on a 640x480 single-face video, CPU",
        "model": "SEV-Net, resnet18 backbone, 224 px input, random weights",
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "batch_size": args.batch_size,
        "detect_args": args.detect_args,
        "omp_wait_policy": args.omp_wait_policy,
        "runs": runs,
        "frames_per_second": longest["loop_frames_per_second"],
        "target_frames_per_second": TARGET_FPS,
        "meets_speed_target": longest["loop_frames_per_second"] >= TARGET_FPS,
        "peak_rss_ratio_longest_to_shortest": round(ratio, 3),
        "meets_memory_target": abs(ratio - 1.0) <= MEMORY_TOLERANCE,
    }
    print(
        f"peak RSS {min(args.frames)} frames: {shortest['peak_rss_mib']} MiB, {max(args.frames)} frames: "
        f"{longest['peak_rss_mib']} MiB, ratio {ratio:.3f} (target within {MEMORY_TOLERANCE:.0%})"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = args.output.with_name(f".{args.output.name}.tmp")
    tmp_path.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp_path, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
