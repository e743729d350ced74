"""Subject-exclusive folds: the benchmark partitions, validation from training subjects, splitting a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from sevnet_hf.data.folds import fold_subjects, split_fold
from sevnet_hf.protocols import BP4D_PARTS, DISFA_PARTS, FOLDS

datasets = pytest.importorskip("datasets")


@pytest.mark.parametrize(("parts", "total"), [(BP4D_PARTS, 41), (DISFA_PARTS, 27)])
def test_benchmark_partitions_give_exclusive_folds(parts, total):
    all_subjects = {s for members in parts.values() for s in members}
    assert len(all_subjects) == total
    tested = set()
    for fold in FOLDS:
        split = fold_subjects(parts, fold)
        train, val, test = (set(split[k]) for k in ("train", "validation", "test"))
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == all_subjects
        assert len(val) == round(0.15 * (total - len(test)))
        assert split["validation"] == fold_subjects(parts, fold)["validation"]  # deterministic
        tested |= test
    assert tested == all_subjects  # every subject is tested exactly once over the three folds
    assert set(fold_subjects(parts, 1)["test"]) == set(parts[3])  # ME-GraphAU fold 1 = JAA-Net's part3 test
    assert set(fold_subjects(parts, 3)["test"]) == set(parts[1])


def test_validation_choice():
    split = fold_subjects(BP4D_PARTS, 1, val_fraction=0.3)
    # taken from both training parts in proportion (14 + 14 training subjects -> 4 + 4 or so)
    from_part1 = set(split["validation"]) & set(BP4D_PARTS[1])
    assert len(split["validation"]) == 8 and 3 <= len(from_part1) <= 5
    assert fold_subjects(BP4D_PARTS, 1, seed=1)["validation"] != fold_subjects(BP4D_PARTS, 1, seed=0)["validation"]
    assert fold_subjects(BP4D_PARTS, 2, val_fraction=0.0)["validation"] == []
    explicit = fold_subjects(BP4D_PARTS, 1, val_subjects=["F001", "M011"])
    assert explicit["validation"] == ["F001", "M011"] and "F001" not in explicit["train"]
    with pytest.raises(ValueError, match="F007.*test part"):
        fold_subjects(BP4D_PARTS, 1, val_subjects=["F007"])  # F007 is in part3, fold 1's test part
    with pytest.raises(ValueError, match="fold must be one of"):
        fold_subjects(BP4D_PARTS, 4)


def _table_dataset():
    subjects = ["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2"]
    parts = {"A1": 1, "A2": 1, "A3": 1, "B1": 2, "B2": 2, "B3": 2, "C1": 3, "C2": 3}
    rows = [s for s in subjects for _ in range(3)]
    data = {"subject": rows, "part": [parts[s] for s in rows], "AU1": list(range(len(rows)))}
    features = datasets.Features(
        {"subject": datasets.Value("string"), "part": datasets.Value("int8"), "AU1": datasets.Value("int32")}
    )
    return datasets.Dataset.from_dict(data, features=features), parts


def test_split_fold_on_a_dataset(capsys):
    dataset, parts = _table_dataset()
    splits = split_fold(dataset, 1, val_fraction=0.2)
    printed = capsys.readouterr().out
    assert "fold 1 (train part1+part2, test part3)" in printed and "validation" in printed
    assert set(splits) == {"train", "validation", "test"}
    assert set(splits["test"]["subject"]) == {"C1", "C2"}
    assert len(set(splits["validation"]["subject"])) == 1
    assert not set(splits["validation"]["subject"]) & set(splits["train"]["subject"])
    assert sum(len(splits[k]) for k in splits) == len(dataset)
    assert sorted(np.concatenate([splits[k]["AU1"] for k in splits]).tolist()) == list(range(len(dataset)))
    # The same split from the metadata partition; a disagreeing partition is an error.
    same = split_fold(dataset, 1, val_fraction=0.2, metadata={"partition": parts}, verbose=False)
    assert same["validation"]["subject"] == splits["validation"]["subject"]
    with pytest.raises(ValueError, match="disagrees"):
        split_fold(dataset, 1, metadata={"partition": {**parts, "C1": 1}}, verbose=False)
    with pytest.raises(ValueError, match="'part' column"):
        split_fold(dataset.remove_columns("part"), 1, verbose=False)
    # Works on a shuffled / selected dataset too (index mappings).
    shuffled = dataset.shuffle(seed=3).select(range(20))
    test = split_fold(shuffled, 2, verbose=False)["test"]
    assert set(test["subject"]) <= {"B1", "B2", "B3"} and set(test["part"]) == {2}
