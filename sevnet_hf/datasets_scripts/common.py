"""Helpers shared by the ``sevnet-hf prepare ...`` commands: argument parsing, partition files, CLI errors."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class PrepareError(ValueError):
    """A problem with the user's input files; ``main`` prints it (no traceback) and exits with status 2."""


def parse_args(dataclass_type: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse a command line (or a JSON/YAML arguments file, then flags) into one argument dataclass.

    ``prog`` defaults to ``sevnet-hf prepare NAME``, NAME being the module that defines the dataclass (``bp4d``, ...),
    as ``sevnet-hf prepare NAME`` runs ``datasets_scripts/NAME.py``. The parsing is ``sevnet_hf.cli_args.parse_args``.
    """
    from ..cli_args import parse_args as parse_command_line

    prog = prog or f"sevnet-hf prepare {dataclass_type.__module__.rpartition('.')[2]}"
    return parse_command_line(argv, dataclass_type, prog)


def run_cli(body: Callable[[], Any]) -> int:
    """Run a command body; input-file problems become a one-line message on stderr and status 2."""
    try:
        body()
    except (PrepareError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def round_robin_partition(subjects: Iterable[str], num_parts: int = 3) -> dict[str, int]:
    """Deterministic subject-exclusive split: the i-th subject in sorted order goes to part ``i % num_parts + 1``.

    Part sizes differ by at most one subject, and adding a subject moves only the subjects sorted after it.
    """
    return {subject: index % num_parts + 1 for index, subject in enumerate(sorted({str(s) for s in subjects}))}


def read_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """Read ``subject -> part`` from a CSV (header ``subject,part``) or JSON (``{subject: part}`` or
    ``{part: [subjects]}``) file; errors name the file and line."""
    from sevnet_hf.data.schema import normalize_partition

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"partition file {file} does not exist")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("the top level is not an object")
            return normalize_partition(data)
        except (ValueError, TypeError) as error:
            raise PrepareError(
                f'{file}: not a partition ({error}); write {{"subject": part, ...}} or {{"1": [subjects], ...}}'
            ) from error
    result: dict[str, int] = {}
    with open(file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [cell.strip().lower() for cell in next(reader, [])]
        if "subject" not in header or "part" not in header:
            raise PrepareError(f"{file}, line 1: the header must name the columns 'subject' and 'part', got {header}")
        subject_at, part_at = header.index("subject"), header.index("part")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            try:
                subject, part = row[subject_at].strip(), int(row[part_at])
            except (IndexError, ValueError) as error:
                raise PrepareError(
                    f"{file}, line {reader.line_num}: expected 'subject,part' with an integer part"
                ) from error
            if subject in result and result[subject] != part:
                raise PrepareError(
                    f"{file}, line {reader.line_num}: subject {subject!r} already has part {result[subject]}"
                )
            result[subject] = part
    if not result:
        raise PrepareError(f"{file}: no subjects listed")
    return result


def units_with_inputs(reader: Any) -> list:
    """A reader's ``(unit_id, thunk)`` units as ``(unit_id, thunk, inputs)`` when the reader can say what each unit
    reads (``reader.unit_inputs(unit_id)``, computed when ``prepare_dataset`` looks at the unit), so a unit whose
    labels, images or settings changed is prepared again instead of reusing its old shard."""
    signature = getattr(reader, "unit_inputs", None)
    if signature is None:
        return list(reader.units())
    return [(unit_id, thunk, lambda unit_id=unit_id: signature(unit_id)) for unit_id, thunk in reader.units()]
