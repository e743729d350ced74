"""BP4D reader and ``sevnet-hf prepare bp4d`` on a miniature tree in the official formats."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_benchmarks import (
    BP4D_SEQUENCES,
    aligned_source_number,
    face_landmarks68,
    make_bp4d_tree,
    read_image_number,
    to49,
    write_bp4d_landmarks,
)

from sevnet_hf.data.align import read_image
from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.datasets_scripts import bp4d
from sevnet_hf.datasets_scripts.bp4d import (
    FRAME_FOLDER_NAMES,
    FRAME_OFFSET_READERS,
    BP4DReader,
    read_bp4d_landmarks,
    read_occurrence_csv,
    required_dir,
    subject_parts,
)
from sevnet_hf.protocols import BP4D_AUS, BP4D_PARTS, UNKNOWN_LABEL, au_label


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_bp4d_tree(tmp_path_factory.mktemp("bp4d") / "BP4D")


def _reader(root, **kwargs) -> BP4DReader:
    return BP4DReader(root / "AUCoding" / "AU_OCC", root / "Sequences(2D+3D)", root / "2DFeatures", **kwargs)


def _all_records(reader):
    return [record for _, thunk in reader.units() for record in thunk()]


IMAGE_NUMBERS = {(subject, task): numbers for subject, task, _, _, numbers, *_ in BP4D_SEQUENCES}


def _prepared_source_numbers(dataset) -> dict[tuple[str, str, int], int]:
    """(subject, task, CSV frame) -> the image each prepared face was made from, told by its pixels."""
    found = {}
    for row in dataset:
        key = (row["subject"], row["sequence"], row["frame"])
        found[key] = aligned_source_number(row["image"], IMAGE_NUMBERS[key[:2]], to49)
    return found


def test_records_match_what_the_fixture_wrote(tree):
    reader = _reader(tree.root)
    records = _all_records(reader)
    expected = tree.by_key()
    assert sorted((r.subject, r.sequence, r.frame) for r in records) == sorted(expected)
    assert len(records) == len(expected)
    unknown_seen = 0
    for record in records:
        want = expected[(record.subject, record.sequence, record.frame)]
        assert record.labels == want.labels
        unknown_seen += sum(v == UNKNOWN_LABEL for v in record.labels.values())
        assert record.image is None
        if want.has_image:
            assert read_image_number(read_image(record.image_path)) == want.image_number % 18
            assert int(record.image_path.rsplit("/", 1)[1].split(".")[0]) == want.image_number
            np.testing.assert_allclose(record.landmarks, want.landmarks)
        else:  # handed on with the path it should have, so prepare_dataset reports it
            assert record.image_path.endswith(f"/F001/T2/{want.image_number:04d}.jpg")
            assert record.landmarks is None
    assert unknown_seen >= len(BP4D_SEQUENCES)  # every file has a 9 in its first row
    # 3-digit names are found for M009, 4-digit ones elsewhere.
    names = {r.subject: r.image_path.rsplit("/", 1)[1] for r in records}
    assert names["M009"] == "007.jpg" and len(names["F001"]) == len("0000.jpg")


def test_frame_offset_changes_the_image_and_its_landmarks(tree):
    records = _all_records(_reader(tree.root, subjects=["M009"], frame_offset=-1))
    assert [r.frame for r in records] == [3, 4, 5, 6, 7]
    for record in records:
        number = record.frame - 1
        assert record.image_path.endswith(f"/M009/T1/{number:03d}.jpg")
        assert read_image_number(read_image(record.image_path)) == number
        np.testing.assert_allclose(record.landmarks, to49(face_landmarks68(number)))


def test_subject_and_task_filters(tree):
    reader = _reader(tree.root, subjects=["F001"], tasks=["T2"])
    assert [unit_id for unit_id, _ in reader.units()] == ["F001_T2"]
    with pytest.raises(ValueError, match="F099"):
        _reader(tree.root, subjects=["F099"])


def test_part_lists_put_no_subject_in_two_parts():
    part_of = subject_parts(BP4D_PARTS)  # raises on a subject listed twice
    assert len(part_of) == sum(len(s) for s in BP4D_PARTS.values()) == 41
    assert sorted(part_of) == sorted([f"F{i:03d}" for i in range(1, 24)] + [f"M{i:03d}" for i in range(1, 19)])


def test_numbered_and_named_headers_read_the_same_columns(tmp_path):
    numbered = tmp_path / "a.csv"
    numbered.write_text(",".join(map(str, range(100))) + "\n" + "7," + ",".join(str(k % 2) for k in range(1, 100)))
    table = read_occurrence_csv(numbered, BP4D_AUS)
    assert table.frames.tolist() == [7]
    assert table.labels(0) == {au: au % 2 for au in BP4D_AUS}
    named = tmp_path / "b.csv"
    named.write_text("1,AU01,AU02,AU4,au_6,7,10,12,14,15,17,23,24,99\n3,1,0,9,1,0,1,0,1,0,1,0,-1,0\n")
    assert read_occurrence_csv(named, BP4D_AUS).labels(0) == dict(
        zip(BP4D_AUS, [1, 0, UNKNOWN_LABEL, 1, 0, 1, 0, 1, 0, 1, 0, UNKNOWN_LABEL])
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("0,1,2,3\n1,0,0,0\n", "no column for AU4"),
        ("frame,1,2,smile\n1,0,0,0\n", "'smile' is not an AU name"),
        ("0,1,2,4,6,7,10,12,14,15,17,23,24\n1,0,0,0,0,0,0,0,0,0,0,0,2\n", r"line 2, column 13 \(AU24\): code '2'"),
        ("0,1,2,4,6,7,10,12,14,15,17,23,24\n1,0,0,0,0,0,0,0,0,0,0,0\n", "line 2: 12 cells"),
        ("0,1,2,4,6,7,10,12,14,15,17,23,24\n1" + ",0" * 12 + "\n1" + ",1" * 12 + "\n", "frame 1 already appears"),
    ],
)
def test_broken_label_files_name_the_file_and_problem(tmp_path, content, message):
    path = tmp_path / "F001_T1.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        read_occurrence_csv(path, BP4D_AUS)
    assert str(path) in str(error.value)


def test_setup_errors(tree, tmp_path):
    root = tmp_path / "BP4D"
    shutil.copytree(tree.root / "AUCoding", root / "AUCoding")
    (root / "Sequences(2D+3D)" / "F001").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="M009"):  # subject frame folders missing
        _reader(root, subjects=["F001", "M009"])
    shutil.copy(root / "AUCoding" / "AU_OCC" / "F001_T1.csv", root / "AUCoding" / "AU_OCC" / "F099_T1.csv")
    with pytest.raises(ValueError, match="F099.*no part"):
        _reader(root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BP4DReader(tmp_path / "nowhere", root / "Sequences(2D+3D)")


def test_landmark_files(tmp_path):
    path = tmp_path / "F001_T1.mat"
    points = to49(np.arange(136, dtype=float).reshape(68, 2))
    write_bp4d_landmarks(path, [points, None, points + 1])
    read = read_bp4d_landmarks(path)
    assert read[1] is None and np.allclose(read[0], points) and np.allclose(read[2], points + 1)
    write_bp4d_landmarks(path, [points[:48]])
    with pytest.raises(ValueError, match=r"F001_T1.mat: fit/pred entry 0 .* shape \(2, 48\)"):
        read_bp4d_landmarks(path)
    path.write_bytes(b"MATLAB 5.0 not hdf5")
    with pytest.raises(ValueError, match="not a MATLAB v7.3"):
        read_bp4d_landmarks(path)


def test_sequences_folder_spelled_with_underscore(tmp_path):
    (tmp_path / "Sequences_2D+3D").mkdir()
    assert required_dir(None, str(tmp_path), FRAME_FOLDER_NAMES, "--frames-dir").name == "Sequences_2D+3D"
    with pytest.raises(FileNotFoundError, match="--labels-dir"):
        required_dir(None, str(tmp_path), ("AUCoding/AU_OCC",), "--labels-dir")


def test_prepare_command_end_to_end(tree, tmp_path):
    root = tmp_path / "BP4D"
    shutil.copytree(tree.root, root)
    labels = tmp_path / "elsewhere" / "occ"
    shutil.move(root / "AUCoding" / "AU_OCC", labels)  # labels outside the root: --labels-dir
    out = tmp_path / "prepared"
    argv = ["--root", str(root), "--labels-dir", str(labels), "--output", str(out), "--no-progress"]
    assert bp4d.main(argv) == 0

    dataset = load_prepared(out)
    expected = {f.key: f for f in tree.with_images()}
    rows = dataset.remove_columns("image").to_list()
    assert sorted((r["subject"], r["sequence"], r["frame"]) for r in rows) == sorted(expected)
    part_of = subject_parts(BP4D_PARTS)
    for row in rows:
        want = expected[(row["subject"], row["sequence"], row["frame"])]
        assert {au: row[au_label(au)] for au in BP4D_AUS} == want.labels
        assert row["part"] == part_of[row["subject"]]
    assert dataset[0]["image"].size == (256, 256)
    # The default rule, read from the prepared faces themselves: CSV frame f was made from image f.jpg.
    assert _prepared_source_numbers(dataset) == {key: frame.image_number for key, frame in expected.items()}
    assert all(frame.image_number == frame.frame for frame in expected.values())

    report = json.loads((out / "report.json").read_text())
    assert report["num_frames"] == len(expected)
    assert report["aligned_from"] == {"landmarks": len(expected), "detected": 0}
    (missing,) = [f for f in tree.frames if not f.has_image]
    assert [e["source"] for e in report["errors"]] == [
        f"F001/T2/{missing.image_number:04d}.jpg (frame {missing.frame})"
    ]
    assert "does not exist" in report["errors"][0]["problem"]
    metadata = read_metadata(out)
    assert metadata["source"] == "BP4D" and metadata["aus"] == list(BP4D_AUS)
    assert "146,847" in metadata["frame_list"] and metadata["frame_offset"] == 0
    assert metadata["frame_mapping"] == (
        "CSV frame f -> image number f (as AU_R-CNN, py-feat, ME-GraphAU and PyTorch-JAANet read it)"
    )
    assert metadata["frame_offset_readers"] == {"0": FRAME_OFFSET_READERS[0]}
    assert metadata["counts"]["frames_per_subject"] == {
        s: sum(1 for f in expected.values() if f.subject == s) for s in ("F001", "F003", "M009")
    }


NO_READER = "no public reader we checked reads it this way"


def test_frame_offset_option_end_to_end(tree, tmp_path, caplog):
    out = tmp_path / "prepared"
    argv = ["--root", str(tree.root), "--output", str(out), "--no-progress", "--subjects", "M009"]
    assert bp4d.main([*argv, "--frame-offset", "-1"]) == 0
    dataset = load_prepared(out)
    # CSV frames 3..7 were made from images 2..6 (002.jpg..006.jpg), not from 003.jpg..007.jpg.
    assert _prepared_source_numbers(dataset) == {("M009", "T1", f): f - 1 for f in range(3, 8)}
    assert dataset["source"] == [f"M009/T1/{f - 1:03d}.jpg (frame {f})" for f in range(3, 8)]
    metadata = read_metadata(out)
    assert metadata["frame_offset"] == -1
    assert metadata["frame_mapping"] == f"CSV frame f -> image number f-1 ({NO_READER})"
    assert "--frame-offset -1: no public BP4D reader we checked" in caplog.text


def test_command_reports_input_problems_without_a_traceback(tree, tmp_path, capsys):
    assert bp4d.main(["--root", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2
    assert "AUCoding/AU_OCC exists; pass --labels-dir" in capsys.readouterr().err
    assert bp4d.main(["--root", str(tree.root)]) == 2
    assert "--output is required" in capsys.readouterr().err
    assert bp4d.main(["--root", str(tree.root), "--output", str(tmp_path / "o"), "--subjects", "F001,F404"]) == 2
    assert "F404" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
