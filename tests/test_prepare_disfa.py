"""DISFA reader and ``sevnet-hf prepare disfa`` on a miniature tree (labels, an MJPG video, landmark files)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_benchmarks import DISFA_SUBJECTS, aligned_source_number, make_disfa_tree, read_image_number, to66
from scipy.io import savemat

from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.datasets_scripts import disfa
from sevnet_hf.datasets_scripts.bp4d import subject_parts
from sevnet_hf.datasets_scripts.disfa import (
    FRAME_OFFSET_READERS,
    DisfaReader,
    read_intensity_file,
    read_landmark_file,
    read_subject_labels,
)
from sevnet_hf.protocols import DISFA_AUS, DISFA_OCCURRENCE_THRESHOLD, DISFA_PARTS, au_label


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_disfa_tree(tmp_path_factory.mktemp("disfa") / "DISFA")


def _reader(root, **kwargs) -> DisfaReader:
    return DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera", root / "Landmark_Points", **kwargs)


def test_records_match_what_the_fixture_wrote(tree):
    reader = _reader(tree.root)
    assert [unit_id for unit_id, _ in reader.units()] == ["SN001", "SN003", "SN010"]
    records = [record for _, thunk in reader.units() for record in thunk()]
    expected = tree.by_key()
    assert sorted((r.subject, r.sequence, r.frame) for r in records) == sorted(expected)
    for record in records:
        want = expected[(record.subject, record.sequence, record.frame)]
        assert record.labels == want.labels
        assert record.intensities == want.intensities
        assert all(record.labels[au] == int(want.intensities[au] >= DISFA_OCCURRENCE_THRESHOLD) for au in DISFA_AUS)
        if want.has_image:
            assert record.image.shape == (48, 64, 3) and record.image.dtype == np.uint8
            assert read_image_number(record.image) == record.frame - 1  # label frame f = video frame f-1
            # SN010 has one extra landmark file at the start; a wrong shift would hand over the neighbour's points.
            np.testing.assert_allclose(record.landmarks, want.landmarks)
        else:  # SN003 frame 6: labelled, but the video has 5 frames; prepare_dataset lists it as an error
            assert record.image is None and record.image_path is None
            assert "the video ends after 5 frames" in record.source


def test_length_differences_and_landmark_quirks_are_noted(tree):
    notes = "\n".join(_reader(tree.root).notes)
    assert "LeftVideoSN010_comp.avi: 6 video frames, 5 labelled; video frames 6" in notes
    assert "LeftVideoSN003_comp.avi: 5 video frames but labels up to frame 6" in notes
    assert "SN010/tmp_frame_lm: 7 landmark files for 6 video frames; the first is dropped" in notes
    assert "SN001" not in notes


def test_au_files_that_disagree_keep_the_common_frames(tree, tmp_path):
    root = tmp_path / "DISFA"
    shutil.copytree(tree.root / "ActionUnit_Labels" / "SN001", root / "SN001")
    au4 = root / "SN001" / "SN001_au4.txt"
    au4.write_text("".join(au4.read_text().splitlines(keepends=True)[:-2]))
    labels = read_subject_labels(root, "SN001")
    assert labels.frames.tolist() == [1, 2, 3, 4]
    assert "frames 5-6 are not labelled in every AU file" in labels.notes[0]


def test_part_lists_put_no_subject_in_two_parts():
    part_of = subject_parts(DISFA_PARTS)
    expected = [f"SN{i:03d}" for i in [*range(1, 14), 16, 17, 18, 21, *range(23, 33)]]
    assert sorted(part_of) == expected and len(part_of) == 27


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,0\n2\n", "line 2: '2' is not 'frame,intensity'"),
        ("1,0\n2,7\n", "line 2: intensity '7' is outside 0-5"),
        ("1,0\n1,2\n", "line 2: frame 1 is labelled twice"),
        ("0,1\n", "line 1: frame '0' is not a positive whole number"),
    ],
)
def test_broken_label_lines_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "SN001_au1.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        read_intensity_file(path)
    assert str(path) in str(error.value)


def test_setup_errors(tree, tmp_path):
    root = tmp_path / "DISFA"
    shutil.copytree(tree.root / "ActionUnit_Labels", root / "ActionUnit_Labels")
    shutil.copytree(tree.root / "Videos_LeftCamera", root / "Videos_LeftCamera")
    (root / "ActionUnit_Labels" / "SN003" / "SN003_au26.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"SN003_au26.txt does not exist"):
        DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera")
    reader = DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera", subjects=["SN001"])
    assert reader.subjects == ["SN001"]
    (root / "Videos_LeftCamera" / "LeftVideoSN010_comp.avi").unlink()
    with pytest.raises(FileNotFoundError, match="LeftVideoSN010_comp.avi does not exist"):
        DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera", subjects=["SN010"])
    (root / "ActionUnit_Labels" / "SN099").mkdir()
    with pytest.raises(ValueError, match="SN099.*no part"):
        DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera")
    with pytest.raises(ValueError, match="SN077"):
        DisfaReader(root / "ActionUnit_Labels", root / "Videos_LeftCamera", subjects=["SN077"])


def test_landmark_files(tmp_path):
    good = tmp_path / "SN001_0000_lm.mat"
    savemat(good, {"pts": np.ones((66, 2))})
    assert read_landmark_file(good).shape == (66, 2)
    empty = tmp_path / "SN001_0001_lm.mat"
    savemat(empty, {"pts": np.zeros((0, 0))})
    assert read_landmark_file(empty) is None
    wrong = tmp_path / "SN001_0002_lm.mat"
    savemat(wrong, {"pts": np.ones((68, 2))})
    with pytest.raises(ValueError, match=r"SN001_0002_lm.mat: 'pts' has shape \(68, 2\)"):
        read_landmark_file(wrong)
    other = tmp_path / "SN001_0003_lm.mat"
    savemat(other, {"points": np.ones((66, 2))})
    with pytest.raises(ValueError, match=r"no variable 'pts' \(found \['points'\]\)"):
        read_landmark_file(other)


def test_prepare_command_end_to_end(tree, tmp_path):
    out = tmp_path / "prepared"
    assert disfa.main(["--root", str(tree.root), "--output", str(out), "--no_progress"]) == 0

    dataset = load_prepared(out)
    expected = {f.key: f for f in tree.with_images()}
    rows = dataset.remove_columns("image").to_list()
    assert sorted((r["subject"], r["sequence"], r["frame"]) for r in rows) == sorted(expected)
    part_of = subject_parts(DISFA_PARTS)
    for row in rows:
        want = expected[(row["subject"], row["sequence"], row["frame"])]
        assert {au: row[au_label(au)] for au in DISFA_AUS} == want.labels
        assert {au: row[f"{au_label(au)}_intensity"] for au in DISFA_AUS} == want.intensities
        assert row["part"] == part_of[row["subject"]]
    assert {r["part"] for r in rows} == {1, 3}
    # Read from the prepared faces themselves: label frame f was made from video frame f-1 (0-based), also for SN010,
    # whose labels are one line shorter than its video.
    video_frames = {subject: frames for subject, frames, *_ in DISFA_SUBJECTS}
    made_from = {
        (row["subject"], row["frame"]): aligned_source_number(row["image"], range(video_frames[row["subject"]]), to66)
        for row in dataset
    }
    assert made_from == {(f.subject, f.frame): f.frame - 1 for f in expected.values()}
    assert dataset["source"][:2] == ["LeftVideoSN001_comp.avi#0 (frame 1)", "LeftVideoSN001_comp.avi#1 (frame 2)"]

    report = json.loads((out / "report.json").read_text())
    assert report["aligned_from"] == {"landmarks": len(expected), "detected": 0}
    assert [e["source"] for e in report["errors"]] == [
        "LeftVideoSN003_comp.avi#5 (frame 6): the video ends after 5 frames"
    ]
    metadata = read_metadata(out)
    assert metadata["source"] == "DISFA" and metadata["aus"] == list(DISFA_AUS)
    assert metadata["camera"] == "left" and metadata["occurrence_threshold"] == DISFA_OCCURRENCE_THRESHOLD
    assert metadata["frame_offset"] == -1 and metadata["frame_offset_readers"] == {"-1": FRAME_OFFSET_READERS[-1]}
    assert metadata["frame_mapping"] == (
        "label frame f -> 0-based left-camera frame f-1 (as ME-GraphAU and PyTorch-JAANet read it)"
    )
    assert any("SN010" in note and "5 labelled" in note for note in metadata["reader_notes"])
    assert metadata["counts"]["frames_per_subject"] == {"SN001": 6, "SN003": 5, "SN010": 5}
