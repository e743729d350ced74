"""Start-up time: ``import sevnet_hf``, ``sevnet-hf --help`` and ``sevnet-hf COMMAND --help`` for every command.

    python benchmarks/startup.py [--repeats 5] [--cpus 2] [--check] [--name startup]

Each case runs in a fresh interpreter ``--repeats`` times (after one untimed warm-up run that fills the OS file cache
and the .pyc files); the median wall time is compared with the bars of issue 15 (``sevnet-hf --help`` under 2 s,
``sevnet-hf COMMAND --help`` under 3 s, on 2 cores). References measured in the same run: ``python -c pass``,
``import torch`` and ``from transformers import HfArgumentParser`` (what building any command's parser costs).
``sevnet-hf ...`` is run as its console script does (``from sevnet_hf.cli import main; sys.exit(main())``) with this
checkout first on ``PYTHONPATH``. One more run per case under ``python -X importtime`` records whether it imported
torch and its costliest top-level imports. Children are pinned to the first ``--cpus`` CPUs (0: no pinning).
Writes benchmarks/results/<name>.json. On a machine shared with other jobs the figures vary by tens of percent:
compare them with the references of the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sevnet_hf.atomic_io import write_json_atomic  # noqa: E402  (light: the standard library only)

TOOL_BAR_S = 2.0  # sevnet-hf --help
COMMAND_BAR_S = 3.0  # sevnet-hf COMMAND --help
CLI = "import sys; from sevnet_hf.cli import main; sys.exit(main())"  # what the sevnet-hf console script runs
COMMANDS = [
    "demo",
    "train",
    "crossval",
    "ablate",
    "detect",
    "push",
    *(f"prepare {name}" for name in ("bp4d", "disfa", "bp4dplus", "folder", "synthetic")),
]


def cases() -> list[dict]:
    """(name, python arguments, bar in seconds or None for a reference)."""
    listed = [
        {"name": "python -c pass", "args": ["-c", "pass"], "bar_s": None},
        {"name": "python -c 'import torch'", "args": ["-c", "import torch"], "bar_s": None},
        {
            "name": "python -c 'from transformers import HfArgumentParser'",
            "args": ["-c", "from transformers import HfArgumentParser"],
            "bar_s": None,
        },
        {"name": "import sevnet_hf", "args": ["-c", "import sevnet_hf"], "bar_s": None},
        {"name": "sevnet-hf --help", "args": ["-c", CLI, "--help"], "bar_s": TOOL_BAR_S},
    ]
    for command in COMMANDS:
        listed.append(
            {"name": f"sevnet-hf {command} --help", "args": ["-c", CLI, *command.split(), "--help"], "bar_s": COMMAND_BAR_S}
        )
    return listed


def run_once(args: list[str], env: dict, cpus: set[int] | None, importtime: bool = False) -> tuple[float, str]:
    """Wall seconds of one fresh interpreter running ``args``, and its stderr."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), *args]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, preexec_fn=pin)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds, result.stderr


def import_profile(stderr: str, top: int = 4) -> dict:
    """From ``-X importtime`` output: whether torch was imported and the costliest top-level imports (seconds)."""
    cumulative = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", line)
        if match and not match.group(2):  # top level: no indentation
            cumulative[match.group(3)] = cumulative.get(match.group(3), 0) + int(match.group(1)) / 1e6
    costliest = sorted(cumulative.items(), key=lambda item: -item[1])[:top]
    imported = set(re.findall(r"\| +(\S+)$", stderr, flags=re.MULTILINE))
    return {
        "imports_torch": "torch" in imported,
        "imports_transformers": "transformers" in imported,
        "costliest_top_level_imports_s": {name: round(seconds, 3) for name, seconds in costliest},
    }


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "torchvision", "timm"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--cpus", type=int, default=2, help="pin each run to the first N CPUs (0: no pinning)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a bar is missed")
    parser.add_argument("--name", default="startup", help="JSON file name under benchmarks/results")
    args = parser.parse_args(argv)

    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cpus = set(available[: args.cpus]) if args.cpus and available else None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    results = []
    print(f"{'case':<58} {'median s':>8} {'min':>6} {'max':>6} {'bar':>5}  verdict  torch")
    for case in cases():
        if args.only and args.only not in case["name"]:
            continue
        run_once(case["args"], env, cpus)  # warm-up: file cache, .pyc files
        times = [run_once(case["args"], env, cpus)[0] for _ in range(args.repeats)]
        profile = import_profile(run_once(case["args"], env, cpus, importtime=True)[1])
        median = statistics.median(times)
        met = None if case["bar_s"] is None else median < case["bar_s"]
        results.append(
            {
                "case": case["name"],
                "median_s": round(median, 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "runs_s": [round(t, 3) for t in times],
                "bar_s": case["bar_s"],
                "bar_met": met,
                **profile,
            }
        )
        verdict = "ref" if met is None else ("ok" if met else "MISSED")
        bar = "" if case["bar_s"] is None else f"{case['bar_s']:.0f}"
        print(
            f"{case['name']:<58} {median:8.2f} {min(times):6.2f} {max(times):6.2f} {bar:>5}  {verdict:<7}  "
            f"{'yes' if profile['imports_torch'] else 'no'}",
            flush=True,
        )
    missed = [row["case"] for row in results if row["bar_met"] is False]
    report = {
        "benchmark": "startup",
        "bars_s": {"sevnet-hf --help": TOOL_BAR_S, "sevnet-hf COMMAND --help": COMMAND_BAR_S},
        "repeats": args.repeats,
        "pinned_cpus": sorted(cpus) if cpus else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            **versions(),
        },
        "missed": missed,
        "results": results,
    }
    path = REPO / "benchmarks" / "results" / f"{args.name}.json"
    write_json_atomic(path, report)
    print(f"bars missed: {', '.join(missed) if missed else 'none'}; wrote {path.relative_to(REPO)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
