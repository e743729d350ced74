"""AU benchmark protocols: AU lists, subject parts, folds and base rates.

One place for these facts; every other module imports them. Sources: the subject partitions used by
ME-GraphAU and PyTorch-JAANet (identical), and the SEV-Net paper's experimental setting.
This file is also copied next to checkpoints for ``trust_remote_code`` loading, so it imports nothing
beyond the standard library.
"""

from __future__ import annotations

import re

BP4D_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
DISFA_AUS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)
BP4DPLUS_AUS: tuple[int, ...] = BP4D_AUS
# The 15 AUs the paper wrote descriptions for.
PAPER_DESCRIBED_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26)

# Label codes. BP4D/BP4D+ code "not coded / unknown" as 9; we also accept any negative value.
UNKNOWN_LABEL = -1
BP4D_UNKNOWN_CODE = 9
# DISFA: occurrence = intensity >= 2 (as in the paper's setting and ME-GraphAU).
DISFA_OCCURRENCE_THRESHOLD = 2
# Prediction threshold used by the field (no tuning on test data).
DEFAULT_THRESHOLD = 0.5
# The paper's Intra-AU encoder: a BERT-Large (24 layers, 1024 wide, 16 heads) sentence encoder taken from
# sentence-transformers, mean-pooled over tokens. This checkpoint matches that description. (Here, not in
# configuration_sevnet.py, so that the command-line argument dataclasses can read it without importing torch.)
DEFAULT_TEXT_ENCODER = "sentence-transformers/bert-large-nli-mean-tokens"

BP4D_PARTS: dict[int, tuple[str, ...]] = {
    1: (
        "F001",
        "M007",
        "F018",
        "F008",
        "F002",
        "M004",
        "F010",
        "F009",
        "M012",
        "M001",
        "F016",
        "M014",
        "F023",
        "M008",
    ),
    2: (
        "M011",
        "F003",
        "M010",
        "M002",
        "F005",
        "F022",
        "M018",
        "M017",
        "F013",
        "M016",
        "F020",
        "F011",
        "M013",
        "M005",
    ),
    3: ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
}
DISFA_PARTS: dict[int, tuple[str, ...]] = {
    1: ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    2: ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    3: ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
}
# BP4D+ has no public fold list and the SEV-Net paper does not give its split. The parts shipped in
# data_files/bp4dplus_parts.json are this project's own; say so wherever BP4D+ parts or results are reported.
BP4DPLUS_SPLIT_NAME = (
    "sevnet-hf's own round-robin-by-sex subject split (data_files/bp4dplus_parts.json), not the SEV-Net paper's "
    "(unpublished)"
)

# ME-GraphAU fold numbering: fold k tests on one part and trains on the other two.
# (JAA-Net calls fold 1 "combine_1_2 / part3".)
FOLD_TEST_PART: dict[int, int] = {1: 3, 2: 2, 3: 1}
FOLDS: tuple[int, ...] = (1, 2, 3)

# Approximate share of coded BP4D frames with the AU present (a shape for synthetic priors, not ground truth).
BP4D_BASE_RATES: dict[int, float] = {
    1: 0.21,
    2: 0.17,
    4: 0.20,
    6: 0.46,
    7: 0.55,
    10: 0.59,
    12: 0.56,
    14: 0.47,
    15: 0.17,
    17: 0.34,
    23: 0.17,
    24: 0.15,
}

_AU_NAME = re.compile(r"^\s*au[\s_\-]*0*(\d+)\s*$", re.IGNORECASE)


def parse_au(name: str | int) -> int:
    """Return the AU number for spellings like ``AU1``, ``AU01``, ``au_1``, ``1`` or ``7``.

    Raises ``ValueError`` naming the bad value when it is not an AU name.
    """
    if isinstance(name, int):
        if name <= 0:
            raise ValueError(f"AU number must be positive, got {name}")
        return name
    text = str(name).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    match = _AU_NAME.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{name!r} is not an AU name; use a form like 'AU1', 'AU01', 'au_1' or '1'")
    return int(match.group(1))


def au_label(au: int) -> str:
    """Canonical label for an AU number (``AU1``, ``AU12``)."""
    return f"AU{int(au)}"


def fold_parts(fold: int) -> tuple[list[int], int]:
    """Return (training parts, test part) for a fold in ME-GraphAU numbering."""
    if fold not in FOLD_TEST_PART:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    test = FOLD_TEST_PART[fold]
    return [p for p in (1, 2, 3) if p != test], test


def fold_name(fold: int) -> str:
    """Human-readable fold name that also spells out JAA-Net's naming, since users confuse the two."""
    train, test = fold_parts(fold)
    return f"fold {fold} (train part{train[0]}+part{train[1]}, test part{test})"
