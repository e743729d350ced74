"""``sevnet-hf prepare folder``: a folder of images plus a labels CSV, end to end through ``main(argv)``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("datasets")

from sevnet_hf.data.align import CANONICAL_TEMPLATE_5PT  # noqa: E402
from sevnet_hf.data.schema import load_prepared, read_metadata  # noqa: E402
from sevnet_hf.datasets_scripts import folder  # noqa: E402
from sevnet_hf.datasets_scripts.common import round_robin_partition  # noqa: E402


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _drawn_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = CANONICAL_TEMPLATE_5PT.astype(np.float64) * rng.uniform(0.5, 0.7) + rng.uniform(10, 30, size=2)
    image = np.full((220, 200, 3), 50, dtype=np.uint8)
    for x, y in points:
        cv2.circle(image, (int(x), int(y)), 4, (230, 200, 180), -1)
    return image, points


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_folder_with_detection(tmp_path, capsys):
    pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    images = tmp_path / "images"
    rows = []
    for index, subject in enumerate(["P3", "P1", "P2", "P4"]):
        crop = photo[10 + 5 * index : 250 + 5 * index, 90:330]
        _write_rgb(images / subject / f"{index}.jpg", crop if index % 2 else crop[:, ::-1].copy())
        rows.append([f"{subject}/{index}.jpg", subject, [1, 0, 9, ""][index], [0, 1, -1, 1][index], 0.5 * index])
    _write_rgb(images / "P1" / "blank.png", np.full((200, 200, 3), 128, dtype=np.uint8))
    rows.append(["P1/blank.png", "P1", 1, 1, ""])
    rows.append(["P1/missing.jpg", "P1", 1, 1, ""])
    labels = _write_csv(tmp_path / "labels.csv", ["path", "Subject", "AU01", "au_12", "AU12_intensity"], rows)
    out = tmp_path / "out"

    assert folder.main(["--images", str(images), "--labels", str(labels), "--output", str(out)]) == 0
    assert "faces not found: 1" in capsys.readouterr().out
    dataset = load_prepared(out)
    table = dataset.remove_columns("image").to_list()
    assert [r["source"] for r in table] == ["P3/0.jpg", "P1/1.jpg", "P2/2.jpg", "P4/3.jpg"]
    assert [(r["AU1"], r["AU12"]) for r in table] == [(1, 0), (0, 1), (-1, -1), (-1, 1)]
    assert [r["AU12_intensity"] for r in table] == [0.0, 0.5, 1.0, 1.5]
    assert [r["sequence"] for r in table] == ["P3", "P1", "P2", "P4"]  # default: the image's folder
    expected_parts = {"P1": 1, "P2": 2, "P3": 3, "P4": 1}  # round-robin over sorted subjects
    assert {r["subject"]: r["part"] for r in table} == expected_parts == round_robin_partition(expected_parts)
    assert dataset[0]["image"].size == (256, 256)
    report = json.loads((out / "report.json").read_text())
    assert [e["source"] for e in report["no_face"]] == ["P1/blank.png"]
    assert [e["source"] for e in report["errors"]] == ["P1/missing.jpg"]
    metadata = read_metadata(out)
    assert metadata["aus"] == [1, 12] and metadata["alignment"]["method"] == "dlib"
    assert metadata["partition_name"].startswith("round-robin") and metadata["source"] == "folder"


def test_folder_with_landmark_columns_parts_file_and_resume(tmp_path):
    images = tmp_path / "images"
    header = ["path", "subject", "sequence", "frame", "AU1", "AU2", "notes"]
    header += [f"{axis}{i}" for i in range(5) for axis in "xy"]
    rows = []
    for index in range(6):
        image, points = _drawn_face(index)
        _write_rgb(images / f"img{index}.png", image)
        subject = "ab"[index % 2]
        rows.append([f"img{index}.png", subject, "T1", 10 + index, index % 2, 0, "ok", *points.ravel().round(3)])
    labels = _write_csv(tmp_path / "labels.csv", header, rows)
    parts = tmp_path / "parts.csv"
    parts.write_text("subject,part\na,2\nb,3\n")
    argv = ["--images", str(images), "--labels", str(labels), "--output", str(tmp_path / "out")]
    argv += ["--parts", str(parts), "--ignore_columns", "notes", "--quiet", "true"]
    assert folder.main(argv) == 0
    dataset = load_prepared(tmp_path / "out")
    assert dataset["frame"] == [10, 12, 14, 11, 13, 15]  # one unit per (subject, sequence)
    assert dataset["part"] == [2, 2, 2, 3, 3, 3]
    for landmarks in dataset["landmarks"]:
        assert np.allclose(np.asarray(landmarks), CANONICAL_TEMPLATE_5PT, atol=0.01)
    # The aligned image shows the drawn dots at the template's eye positions.
    aligned = np.asarray(dataset[0]["image"].convert("L"), dtype=np.float64)
    (lx, ly), (rx, ry) = CANONICAL_TEMPLATE_5PT[:2].astype(int)
    assert aligned[ly, lx] > 150 and aligned[ry, rx] > 150 and aligned[ly, (lx + rx) // 2] < 100
    metadata = read_metadata(tmp_path / "out")
    assert metadata["alignment"]["method"] == "landmarks" and metadata["landmark_points"] == 5
    # A rerun reuses both units.
    assert folder.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["units_reused"] == 2 and report["num_frames"] == 6


def _landmarked_folder(tmp_path: Path, subjects: int, per_subject: int = 2) -> tuple[Path, list[str], list[list]]:
    """Drawn faces with 5-point landmark columns (no detection), ``per_subject`` images for each subject."""
    images = tmp_path / "images"
    header = ["path", "subject", "AU1", "AU2"] + [f"{axis}{i}" for i in range(5) for axis in "xy"]
    rows = []
    for index in range(subjects * per_subject):
        image, points = _drawn_face(index)
        _write_rgb(images / f"img{index}.png", image)
        rows.append([f"img{index}.png", f"s{index // per_subject}", index % 2, 1, *points.ravel().round(3)])
    return images, header, rows


def test_editing_the_labels_prepares_the_changed_units_again(tmp_path):
    images, header, rows = _landmarked_folder(tmp_path, subjects=8)
    labels = tmp_path / "labels.csv"
    argv = ["--images", str(images), "--labels", str(labels), "--output", str(tmp_path / "out"), "--quiet", "true"]
    _write_csv(labels, header, rows)
    assert folder.main(argv) == 0
    assert folder.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["units_prepared"], report["units_reused"]) == (0, 8)
    flipped = [rows[0][:2] + [1 - rows[0][2]] + rows[0][3:]]
    _write_csv(labels, header, flipped + rows[1:5] + rows[6:])  # s0's first AU1 flipped, s2's second row deleted
    assert folder.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["units_prepared"], report["units_reused"]) == (2, 6) and report["num_frames"] == 15
    table = load_prepared(tmp_path / "out").remove_columns("image").to_list()
    assert [(r["source"], r["AU1"]) for r in table[:2]] == [("img0.png", 1), ("img1.png", 1)]
    assert [r["source"] for r in table if r["subject"] == "s2"] == ["img4.png"]
    # A replaced image (same name, new pixels) counts as an edit too.
    _write_rgb(images / "img7.png", _drawn_face(99)[0])
    assert folder.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["units_prepared"], report["units_reused"]) == (1, 7)


def test_semicolon_separated_labels_with_decimal_commas(tmp_path, capsys):
    images, header, rows = _landmarked_folder(tmp_path, subjects=2)
    header = header[:4] + ["AU1_intensity"] + header[4:]
    rows = [row[:4] + [f"{index},5"] + [str(v).replace(".", ",") for v in row[4:]] for index, row in enumerate(rows)]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(";".join(str(cell) for cell in row) for row in [header, *rows]) + "\n")
    argv = ["--images", str(images), "--labels", str(labels), "--output", str(tmp_path / "out")]
    assert folder.main(argv) == 0
    assert "cells separated by ';'" in capsys.readouterr().out
    table = load_prepared(tmp_path / "out").remove_columns("image").to_list()
    assert [r["AU1"] for r in table] == [0, 1, 0, 1] and [r["AU1_intensity"] for r in table] == [0.5, 1.5, 2.5, 3.5]
    for row in table:
        assert np.allclose(np.asarray(row["landmarks"]), CANONICAL_TEMPLATE_5PT, atol=0.01)


def test_duplicated_rows_are_an_error_naming_both_lines(tmp_path, capsys):
    images, header, rows = _landmarked_folder(tmp_path, subjects=2)
    labels = _write_csv(tmp_path / "labels.csv", header, rows[:3] + [rows[0], rows[1]] + rows[3:])
    argv = ["--images", str(images), "--labels", str(labels), "--output", str(tmp_path / "out")]
    assert folder.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert "2 images are listed twice" in error and "line 5: img0.png (first on line 2)" in error
    assert "line 6: img1.png (first on line 3)" in error
    assert not (tmp_path / "out").exists()
    header = header[:2] + ["frame"] + header[2:]
    rows = [row[:2] + [7] + row[2:] for row in rows[:2]]  # two images of one subject, both called frame 7
    labels = _write_csv(tmp_path / "labels.csv", header, rows)
    assert folder.main(argv) == 2
    assert "line 3: frame 7 of subject s0 is also on line 2" in capsys.readouterr().err


def test_landmark_json_file(tmp_path):
    images = tmp_path / "images"
    table = {}
    rows = []
    for index in range(2):
        image, points = _drawn_face(10 + index)
        _write_rgb(images / f"{index}.png", image)
        table[f"{index}.png"] = points.tolist()
        rows.append([f"{index}.png", "s", 1])
    labels = _write_csv(tmp_path / "labels.csv", ["path", "subject", "AU4"], rows)
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps(table))
    argv = ["--images", str(images), "--labels", str(labels), "--output", str(tmp_path / "out")]
    assert folder.main(argv + ["--landmarks", str(landmarks), "--quiet", "true"]) == 0
    dataset = load_prepared(tmp_path / "out")
    assert dataset["AU4"] == [1, 1] and read_metadata(tmp_path / "out")["alignment"]["method"] == "landmarks"


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (["file", "subject", "AU1"], ["a.png", "s", 1], r"labels\.csv, line 1: no 'path' column"),
        (["path", "subject", "AU1x"], ["a.png", "s", 1], r"line 1, column 3 \('AU1x'\): unknown AU name"),
        (["path", "subject", "AU1", "comment"], ["a.png", "s", 1, "x"], r"column 4 \('comment'\).*--ignore_columns"),
        (["path", "subject", "AU1", "AU01"], ["a.png", "s", 1, 1], "a second label column for AU1"),
        (["path", "subject", "AU1"], ["a.png", "s", 3], r"line 2, column 'AU1': label '3' is not 0, 1"),
        (["path", "subject", "AU1"], ["a.png", "s"], "line 2: 2 cells but the header has 3"),
        (["path", "subject"], ["a.png", "s"], "no AU label columns"),
        (["path subject AU1"], ["a.png s 1"], r"line 1: the header 'path subject AU1' is a single cell; separate"),
        (["path", "subject", "AU1", "x0", "y0"], ["a.png", "s", 1, 1, 2], "landmark columns must be"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, capsys, header, row, message):
    (tmp_path / "images").mkdir()
    labels = _write_csv(tmp_path / "labels.csv", header, [row])
    argv = ["--images", str(tmp_path / "images"), "--labels", str(labels), "--output", str(tmp_path / "out")]
    assert folder.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "labels.csv" in error
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_parts_file_must_cover_every_subject(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    labels = _write_csv(tmp_path / "labels.csv", ["path", "subject", "AU1"], [["a.png", "s1", 1], ["b.png", "s2", 0]])
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"1": ["s1"]}))
    argv = ["--images", str(tmp_path / "images"), "--labels", str(labels), "--output", str(tmp_path / "out")]
    assert folder.main(argv + ["--parts", str(parts)]) == 2
    assert "no part for subjects ['s2']" in capsys.readouterr().err
    assert folder.main(argv[:2] + ["--labels", str(tmp_path / "nope.csv")] + argv[4:]) == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
