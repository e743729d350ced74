"""The fault-injection script (``benchmarks/fault_injection.py``) on its reduced set: bad inputs give one clear line
each and no traceback, good inputs' rows come exactly once, in ``sevnet-hf detect`` and ``sevnet-hf prepare folder``.
The full set, each command in its own process, runs with ``python benchmarks/fault_injection.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("dlib")
pytest.importorskip("pandas")
pytest.importorskip("datasets")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bad_inputs_are_reported_once_and_good_rows_kept_exactly_once(tiny_model_dir, tmp_path, capsys):
    failures = _script().run_fault_injection(str(tiny_model_dir), tmp_path, quick=True, in_process=True)
    printed = capsys.readouterr().out
    assert not failures, "\n".join(failures)
    assert "0 failed" in printed and "prepare folder: exit 0" in printed
