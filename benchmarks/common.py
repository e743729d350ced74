"""Shared helpers for the benchmark scripts: device choice, timing with synchronisation, JSON output."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).parent / "results"


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_description(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds per call of ``fn`` (after the caller's warm-up), synchronising the device around the timing."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def add_run_arguments(parser) -> None:
    """``--dataset``, ``--workdir`` and ``--runs``: the trained models a script that reads ``attention_benchmark.py``'s
    runs analyses (:func:`finished_runs` resolves them)."""
    parser.add_argument("--dataset", default="outputs/demo/data")
    parser.add_argument("--workdir", default="outputs/attention_benchmark")
    parser.add_argument("--runs", default=None, help="comma-separated training folders (default: --workdir's runs)")


def finished_runs(parser, args) -> list[Path]:
    """The folders given with ``--runs``, else ``--workdir``'s finished ``*_seed*`` runs; a parser error if none."""
    if args.runs:
        runs = [Path(r) for r in args.runs.split(",")]
    else:
        runs = sorted(p for p in Path(args.workdir).glob("*_seed*") if (p / "model" / "config.json").is_file())
    if not runs:
        parser.error(f"no finished runs under {args.workdir} (run attention_benchmark.py first, or give --runs)")
    return runs


def write_json(name: str, data: dict) -> Path:
    from sevnet_hf.atomic_io import write_json_atomic

    path = RESULTS_DIR / f"{name}.json"
    write_json_atomic(path, data)
    return path


def write_runs(name: str, rows: list[dict], table: str) -> dict:
    """Print ``table``, write ``{"machine", "runs", "table"}`` to results/``name``.json and return it."""
    print(table)
    result = {"machine": machine_description(pick_device("auto")), "runs": rows, "table": table}
    print(f"wrote {write_json(name, result)}")
    return result
