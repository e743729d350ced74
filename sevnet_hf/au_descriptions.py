"""AU descriptions: the sentences the Intra-AU encoder reads, one per FACS action unit.

The texts are package data in ``sevnet_hf/descriptions/au_descriptions.json``. This loader travels with checkpoints
(relative imports only); a trained checkpoint stores its texts in its config and never needs the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from .protocols import au_label, parse_au

DEFAULT_DESCRIPTIONS_FILE = Path(__file__).parent / "descriptions" / "au_descriptions.json"


def read_description_file(path: Path) -> dict[str, str]:
    """The JSON object of an AU description file (errors name the file and, for bad JSON, the line)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"AU description file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping 'AU1' -> description")
    return data


def load_au_descriptions(
    aus: Iterable[int | str], source: str | Path | Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return ``{"AU1": text, ...}`` for ``aus``, in that order.

    ``source`` is ``None`` (the shipped descriptions), a JSON file mapping AU names to sentences, or a
    dict. Keys may be spelled ``AU1``, ``AU01``, ``au_1`` or ``1``. Keys starting with ``_`` are comments.
    An AU without a (non-empty) description raises ``ValueError`` naming it and the source.
    """
    where = (
        "the shipped descriptions"
        if source is None
        else (str(source) if not isinstance(source, Mapping) else "the dict")
    )
    raw = (
        read_description_file(DEFAULT_DESCRIPTIONS_FILE if source is None else Path(source))
        if not isinstance(source, Mapping)
        else dict(source)
    )
    by_number: dict[int, str] = {}
    for key, text in raw.items():
        if str(key).startswith("_"):
            continue
        try:
            number = parse_au(key)
        except ValueError as err:
            raise ValueError(f"{where}: key {key!r}: {err}") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: description for {key!r} must be a non-empty string")
        by_number[number] = text.strip()
    result = {}
    missing = []
    for au in aus:
        number = parse_au(au)
        if number not in by_number:
            missing.append(au_label(number))
        else:
            result[au_label(number)] = by_number[number]
    if missing:
        raise ValueError(
            f"{where} has no description for {', '.join(missing)}; pass a file or dict with an entry for each AU "
            f"(available: {', '.join(au_label(n) for n in sorted(by_number))})"
        )
    return result
