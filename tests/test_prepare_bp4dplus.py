"""BP4D+ reader (zip and unzipped images), its shipped subject split, and ``sevnet-hf prepare bp4dplus``."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from fixtures_benchmarks import (
    BP4DPLUS_SEQUENCES,
    aligned_source_number,
    face_landmarks68,
    make_bp4dplus_tree,
    read_image_number,
    to49,
)
from scipy.io import savemat

from sevnet_hf import cli
from sevnet_hf.data.align import read_image
from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.datasets_scripts import bp4dplus
from sevnet_hf.datasets_scripts.bp4d import subject_parts
from sevnet_hf.datasets_scripts.bp4dplus import (
    FRAME_OFFSET_READERS,
    PARTITION_NAME,
    PARTS_FILE,
    BP4DPlusReader,
    load_bp4dplus_parts,
    make_bp4dplus_parts,
    read_bp4dplus_landmarks,
    write_bp4dplus_parts,
)
from sevnet_hf.protocols import BP4DPLUS_AUS, BP4DPLUS_SPLIT_NAME, au_label


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_bp4dplus_tree(tmp_path_factory.mktemp("bp4dplus") / "BP4D+")


def _reader(root, **kwargs) -> BP4DPlusReader:
    return BP4DPlusReader(root / "AUCoding" / "AU_OCC", root / "2D+3D", root / "2DFeatures", **kwargs)


def _all_records(reader):
    return [record for _, thunk in reader.units() for record in thunk()]


IMAGE_NUMBERS = {(subject, task): numbers for subject, task, _, _, numbers, *_ in BP4DPLUS_SEQUENCES}


def _prepared_source_numbers(dataset) -> dict[tuple[str, str, int], int]:
    """(subject, task, CSV frame) -> the image each prepared face was made from, told by its pixels."""
    found = {}
    for row in dataset:
        key = (row["subject"], row["sequence"], row["frame"])
        found[key] = aligned_source_number(row["image"], IMAGE_NUMBERS[key[:2]], to49)
    return found


def _number(record) -> int:
    """The number drawn into the record's image, read from the pixels."""
    return read_image_number(record.image if record.image is not None else read_image(record.image_path))


def test_records_match_what_the_fixture_wrote(tree):
    reader = _reader(tree.root)
    assert [unit_id for unit_id, _ in reader.units()] == ["F001_T1", "F001_T6", "M001_T1", "M001_T8"]  # no T2
    assert reader.notes == []
    records = _all_records(reader)
    expected = tree.by_key()
    assert sorted((r.subject, r.sequence, r.frame) for r in records) == sorted(expected)
    for record in records:
        want = expected[(record.subject, record.sequence, record.frame)]
        assert record.labels == want.labels
        if not want.has_image:  # M001/T8 frame 3 -> 002.jpg was deleted
            assert record.image is None and record.image_path.endswith("/2D+3D/M001/T8/002.jpg")
            continue
        if record.subject == "F001":  # read from F001.zip without unzipping
            assert record.image_path is None and record.image.shape == (48, 64, 3)
            assert record.source == f"F001/{record.sequence}/{want.image_number:04d}.jpg (frame {record.frame})"
        else:  # unzipped, 3-digit names
            assert record.image is None and record.image_path.endswith(
                f"/M001/{record.sequence}/{want.image_number:03d}.jpg"
            )
        assert _number(record) == record.frame - 1  # default: frame f -> (f-1).jpg
        np.testing.assert_allclose(record.landmarks, want.landmarks)


def test_frame_offset_zero_reads_f_jpg_and_its_landmarks(tree):
    records = _all_records(_reader(tree.root, subjects=["F001"], tasks=["T6"], frame_offset=0))
    assert [r.frame for r in records] == [2, 3, 4]
    for record in records:
        assert _number(record) == record.frame
        np.testing.assert_allclose(record.landmarks, to49(face_landmarks68(record.frame)))


def test_unzipped_folder_reads_like_the_zip(tree, tmp_path):
    root = tmp_path / "BP4D+"
    shutil.copytree(tree.root, root)
    with zipfile.ZipFile(root / "2D+3D" / "F001.zip") as archive:
        archive.extractall(root / "2D+3D")
    (root / "2D+3D" / "F001.zip").unlink()
    zipped = _all_records(_reader(tree.root, subjects=["F001"]))
    unzipped = _all_records(_reader(root, subjects=["F001"]))
    assert [(r.sequence, r.frame, r.labels) for r in zipped] == [(r.sequence, r.frame, r.labels) for r in unzipped]
    assert [_number(r) for r in zipped] == [_number(r) for r in unzipped]
    assert all(r.image_path is not None for r in unzipped)


def test_undecodable_zip_entry_is_handed_on_without_an_image(tree, tmp_path):
    root = tmp_path / "BP4D+"
    shutil.copytree(tree.root, root)
    source, rebuilt = tree.root / "2D+3D" / "F001.zip", root / "2D+3D" / "F001.zip"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(rebuilt, "w") as new:
        for name in old.namelist():
            new.writestr(name, b"not a jpeg" if name == "F001/T1/0002.jpg" else old.read(name))
    records = _all_records(_reader(root, subjects=["F001"], tasks=["T1"]))
    broken = [r for r in records if r.image is None]
    assert [r.frame for r in broken] == [3] and broken[0].image_path is None
    assert "F001/T1/0002.jpg (frame 3)" in broken[0].source and "not a readable image" in broken[0].source
    assert len(records) == 5


def test_shipped_parts_file_is_the_documented_split(tmp_path):
    payload = json.loads(PARTS_FILE.read_text())
    assert "round-robin" in bp4dplus.__doc__ and "mod 3" in payload["_about"]
    # The split is the project's own, and everything that names it says so.
    assert payload["_about"].startswith("sevnet-hf's own") and "not the SEV-Net paper's" in payload["_about"]
    assert "own round-robin-by-sex" in BP4DPLUS_SPLIT_NAME and "not the SEV-Net paper's" in BP4DPLUS_SPLIT_NAME
    assert BP4DPLUS_SPLIT_NAME in PARTITION_NAME and "protocols.BP4DPLUS_SPLIT_NAME" in bp4dplus.__doc__
    parts = load_bp4dplus_parts()
    assert parts == make_bp4dplus_parts()
    part_of = subject_parts(parts)  # raises on a subject in two parts
    women = [f"F{i:03d}" for i in range(1, 83)]
    men = [f"M{i:03d}" for i in range(1, 59)]
    assert sorted(part_of) == women + men
    for sex in (women, men):
        counts = [sum(part_of[s] == part for s in sex) for part in (1, 2, 3)]
        assert max(counts) - min(counts) <= 1
    assert write_bp4dplus_parts(tmp_path / "parts.json").read_bytes() == PARTS_FILE.read_bytes()


def test_parts_file_errors(tmp_path):
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"parts": {"1": ["F001"], "2": ["F001"]}}))
    with pytest.raises(ValueError, match="F001 is listed in part 1 and part 2"):
        load_bp4dplus_parts(path)
    path.write_text(json.dumps({"1": ["F001"]}))
    with pytest.raises(ValueError, match="parts.json: not a parts file"):
        load_bp4dplus_parts(path)


def test_landmark_files(tmp_path):
    points = to49(face_landmarks68(0))
    fit = np.zeros((1, 2), dtype=[("frame", "O"), ("pts_2d", "O"), ("headPose", "O")])
    fit[0, 0] = (np.array([[1.0]]), points, np.zeros((3, 1)))
    fit[0, 1] = (np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))
    path = tmp_path / "F001_T1.mat"
    savemat(path, {"fit": fit})
    read = read_bp4dplus_landmarks(path)
    assert list(read) == [1] and np.allclose(read[1], points)
    fit[0, 1] = (np.array([[2.0]]), points[:, :1], np.zeros((3, 1)))
    savemat(path, {"fit": fit})
    with pytest.raises(ValueError, match=r"F001_T1.mat: fit\(2\).pts_2d has shape \(49, 1\)"):
        read_bp4dplus_landmarks(path)
    savemat(path, {"pred": points})
    with pytest.raises(ValueError, match="no struct 'fit'"):
        read_bp4dplus_landmarks(path)


def test_setup_errors(tree, tmp_path):
    root = tmp_path / "BP4D+"
    shutil.copytree(tree.root / "AUCoding", root / "AUCoding")
    labels, frames = root / "AUCoding" / "AU_OCC", root / "2D+3D"
    frames.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image folder or zip for subjects F001, M001"):
        BP4DPlusReader(labels, frames)
    with pytest.raises(FileNotFoundError, match="landmark folder .*nowhere does not exist"):
        BP4DPlusReader(labels, tree.root / "2D+3D", tmp_path / "nowhere")
    shutil.copy(labels / "F001_T1.csv", labels / "F083_T1.csv")
    with pytest.raises(ValueError, match="F083.*no part of the BP4D\\+ parts file"):
        BP4DPlusReader(labels, tree.root / "2D+3D")
    (labels / "F083_T1.csv").write_text("frame,AU1,AU2\n1,0,0\n")
    (frames / "F083").mkdir()
    with pytest.raises(ValueError, match=r"F083_T1.csv: no column for AU4"):
        BP4DPlusReader(labels, frames, subjects=["F083"], parts={1: ["F083"]})


def test_prepare_command_end_to_end(tree, tmp_path):
    out = tmp_path / "prepared"
    argv = ["prepare", "bp4dplus", "--root", str(tree.root), "--output", str(out), "--no_progress"]
    assert cli.main(argv) == 0  # the console entry point dispatches to bp4dplus.main

    dataset = load_prepared(out)
    expected = {f.key: f for f in tree.with_images()}
    rows = dataset.remove_columns("image").to_list()
    assert sorted((r["subject"], r["sequence"], r["frame"]) for r in rows) == sorted(expected)
    part_of = subject_parts(load_bp4dplus_parts())
    for row in rows:
        want = expected[(row["subject"], row["sequence"], row["frame"])]
        assert {au: row[au_label(au)] for au in BP4DPLUS_AUS} == want.labels
        assert row["part"] == part_of[row["subject"]]
    assert {r["subject"]: r["part"] for r in rows} == {"F001": 1, "M001": 2}
    # The default rule, read from the prepared faces themselves: CSV frame f was made from image (f-1).jpg.
    assert _prepared_source_numbers(dataset) == {key: frame.image_number for key, frame in expected.items()}
    assert all(frame.image_number == frame.frame - 1 for frame in expected.values())

    report = json.loads((out / "report.json").read_text())
    assert report["aligned_from"] == {"landmarks": len(expected), "detected": 0}
    assert [e["source"] for e in report["errors"]] == ["M001/T8/002.jpg (frame 3)"]
    metadata = read_metadata(out)
    assert metadata["source"] == "BP4D+" and metadata["frame_offset"] == -1
    assert metadata["frame_mapping"] == (
        "CSV frame f -> image number f-1 (as KISMED and rPPG-Toolbox (BigSmall loader) read it)"
    )
    assert metadata["frame_offset_readers"] == {"-1": FRAME_OFFSET_READERS[-1], "0": "py-feat"}
    assert metadata["partition_name"] == PARTITION_NAME and "bp4dplus_parts.json" in metadata["partition_name"]
    assert metadata["partition"] == {s: p for s, p in sorted(part_of.items())}


def test_frame_offset_zero_end_to_end(tree, tmp_path):
    """``--frame-offset 0`` (py-feat's reading): CSV frames 2..4 of F001/T6 are made from 0002.jpg..0004.jpg."""
    out = tmp_path / "prepared"
    argv = ["--root", str(tree.root), "--output", str(out), "--no_progress", "--subjects", "F001", "--tasks", "T6"]
    assert bp4dplus.main([*argv, "--frame_offset", "0"]) == 0
    dataset = load_prepared(out)
    assert _prepared_source_numbers(dataset) == {("F001", "T6", f): f for f in (2, 3, 4)}
    assert dataset["source"] == [f"F001/T6/{f:04d}.jpg (frame {f})" for f in (2, 3, 4)]
    metadata = read_metadata(out)
    assert metadata["frame_offset"] == 0
    assert metadata["frame_mapping"] == "CSV frame f -> image number f (as py-feat read it)"
