"""Subject-exclusive cross-validation folds over a prepared dataset.

Fold numbering is ME-GraphAU's (see :func:`sevnet_hf.protocols.fold_parts`): fold k tests on one part and trains on
the other two. Validation for early stopping is a held-out set of *training* subjects, never test subjects, chosen
deterministically from ``seed`` so every run of a fold uses the same split.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from sevnet_hf.protocols import fold_name, fold_parts


def _subject_parts(partition: Mapping) -> dict[str, int]:
    from sevnet_hf.data.schema import normalize_partition

    return normalize_partition(partition)


def fold_subjects(
    partition: Mapping,
    fold: int,
    *,
    val_fraction: float = 0.15,
    val_subjects: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split the subjects of a partition into ``train``, ``validation`` and ``test`` for one fold.

    Args:
        partition: subject -> part, or part -> subjects (as ``protocols.BP4D_PARTS``).
        fold: 1, 2 or 3 (ME-GraphAU numbering).
        val_fraction: share of the training subjects held out for validation (rounded, at least one when > 0 and
            there are at least two training subjects); taken from each training part in proportion to its size.
        val_subjects: explicit validation subjects instead (each must be a training subject of this fold).
        seed: seed of the deterministic choice.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, each sorted.
    """
    parts = _subject_parts(partition)
    train_parts, test_part = fold_parts(fold)
    test = sorted(s for s, p in parts.items() if p == test_part)
    train_pool = sorted(s for s, p in parts.items() if p in train_parts)
    if val_subjects is not None:
        chosen = sorted({str(s) for s in val_subjects})
        bad = [s for s in chosen if s not in train_pool]
        if bad:
            where = {s: (f"part {parts[s]} (the test part)" if s in parts else "not in the partition") for s in bad}
            raise ValueError(
                f"validation subjects must be training subjects of {fold_name(fold)}; these are not: {where}"
            )
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        total = round(val_fraction * len(train_pool))
        if val_fraction > 0 and len(train_pool) >= 2:
            total = min(max(total, 1), len(train_pool) - 1)
        else:
            total = 0
        chosen = []
        by_part = {part: sorted(s for s in train_pool if parts[s] == part) for part in train_parts}
        # Largest-remainder allocation of the validation count over the training parts.
        exact = {part: total * len(members) / max(1, len(train_pool)) for part, members in by_part.items()}
        counts = {part: math.floor(value) for part, value in exact.items()}
        for part in sorted(exact, key=lambda p: (counts[p] - exact[p], p))[: total - sum(counts.values())]:
            counts[part] += 1
        for part, members in by_part.items():
            rng = random.Random(f"sevnet-hf validation {seed} fold {fold} part {part}")
            chosen += rng.sample(members, min(counts[part], len(members)))
        chosen = sorted(chosen)
    train = sorted(set(train_pool) - set(chosen))
    return {"train": train, "validation": chosen, "test": test}


def split_fold(
    dataset: Any,
    fold: int,
    *,
    metadata: Mapping | None = None,
    val_fraction: float = 0.15,
    val_subjects: Sequence[str] | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Any:
    """Split a prepared dataset into ``train`` / ``validation`` / ``test`` for one fold (subject-exclusive).

    The partition comes from ``metadata["partition"]`` when given (e.g. :func:`sevnet_hf.data.schema.read_metadata`),
    else from the dataset's own ``subject`` and ``part`` columns. Rows are selected by index, so images are not
    decoded or copied. Returns a ``datasets.DatasetDict``.
    """
    import datasets
    import numpy as np

    for column in ("subject", "part"):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no {column!r} column; was it made by prepare_dataset?")
    rows = dataset.select_columns(["subject", "part"]).with_format("arrow")[:]
    subjects = np.asarray(rows.column("subject").to_pylist(), dtype=object)
    row_parts = np.asarray(rows.column("part").to_numpy(zero_copy_only=False), dtype=np.int64)
    seen: dict[str, int] = {}
    for subject, part in set(zip(subjects.tolist(), row_parts.tolist())):
        if subject in seen and seen[subject] != part:
            raise ValueError(f"subject {subject!r} has rows in part {seen[subject]} and in part {part}; re-prepare it")
        seen[subject] = part
    if metadata is not None and metadata.get("partition"):
        partition = _subject_parts(metadata["partition"])
        conflicts = {s: (p, partition.get(s)) for s, p in seen.items() if partition.get(s) != p}
        if conflicts:
            raise ValueError(
                f"the 'part' column disagrees with metadata['partition'] for (column, metadata): {conflicts}"
            )
    else:
        partition = seen
    split = fold_subjects(partition, fold, val_fraction=val_fraction, val_subjects=val_subjects, seed=seed)
    split_of = {subject: name for name, members in split.items() for subject in members}
    row_split = np.asarray([split_of.get(subject, "") for subject in subjects.tolist()], dtype=object)
    result = {name: dataset.select(np.flatnonzero(row_split == name)) for name in split}
    if verbose:
        print(f"{fold_name(fold)}, validation from training subjects (seed {seed}):")
        for name, members in split.items():
            print(f"  {name:<10} {len(result[name]):>7} frames, {len(members):>3} subjects: {' '.join(members)}")
        unused = sorted(set(seen) - set(split_of))
        if unused:
            print(f"  not used (part outside 1-3): {' '.join(unused)}")
    return datasets.DatasetDict(result)
