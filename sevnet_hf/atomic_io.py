"""Atomic file writes: a temporary sibling (unique per process) written and flushed to disk, then renamed over the
target, so a reader or a crash never sees half a file. The one place every command writes its JSON and tables."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps_options) -> None:
    """``json.dumps(data, indent=2, **dumps_options)`` plus a final newline, written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, **dumps_options) + "\n")


def save_atomic(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """``save(tmp)`` into a temporary sibling with the same suffix (savers pick the format from it), then rename it
    over ``path``: for figures and images written by libraries (``fig.savefig``, ``Image.save``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    save(tmp)
    os.replace(tmp, target)
