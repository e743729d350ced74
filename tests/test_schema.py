"""prepare_dataset: columns, labels, alignment, error reporting, resuming after an interruption, metadata."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
datasets = pytest.importorskip("datasets")

from sevnet_hf.data.align import CANONICAL_TEMPLATE_5PT  # noqa: E402
from sevnet_hf.data.schema import (  # noqa: E402
    FrameRecord,
    au_column,
    load_prepared,
    normalize_partition,
    prepare_dataset,
    read_metadata,
)

AUS = [1, 2, 12]
PARTITION = {1: ["S1"], 2: ["S2"], 3: ["S3"]}


def _face(seed: int, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A drawn grayscale 'face' and its 5 landmarks (a shifted, scaled copy of the template)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size + 20), 60, dtype=np.uint8)
    scale, shift = rng.uniform(0.45, 0.55), rng.uniform(15, 25, size=2)
    points = CANONICAL_TEMPLATE_5PT.astype(np.float64) * scale + shift
    cv2.ellipse(image, (int(points[2, 0]), int(points[2, 1])), (int(60 * scale), int(95 * scale)), 0, 0, 360, 190, -1)
    for x, y in points:
        cv2.circle(image, (int(x), int(y)), 3, 20, -1)
    return image, points


def _records(subject: str, sequence: str, labels: list[dict], **kwargs) -> list[FrameRecord]:
    records = []
    for frame, frame_labels in enumerate(labels):
        image, points = _face(zlib.crc32(f"{subject}/{sequence}/{frame}".encode()))
        records.append(
            FrameRecord(
                subject=subject,
                sequence=sequence,
                frame=frame + 1,
                labels=frame_labels,
                image=image,
                landmarks=points,
                source=f"{subject}/{sequence}/{frame + 1}",
                **kwargs,
            )
        )
    return records


def _prepare(units, out, **kwargs):
    options = {"aus": AUS, "source": "test", "partition": PARTITION, "partition_name": "test parts", "progress": False}
    options.update(kwargs)
    return prepare_dataset(units, out, **options)


def test_columns_labels_and_metadata(tmp_path, capsys):
    labels_s1 = [{1: 1, 2: 0, 12: 1}, {1: 0, 2: 9, 12: 1}, {1: -1, 12: 0}, {1: 1.0, 2: 1, 12: None}]
    labels_s2 = [{1: 0, 2: 0, 12: 0}, {1: 0, 2: 1, 12: 1}]
    s1 = _records("S1", "T1", labels_s1, intensities={12: 2.5})
    s2 = _records("S2", "T1", labels_s2)
    report = _prepare([("S1/T1", lambda: iter(s1)), ("S2/T1", lambda: iter(s2))], tmp_path, progress=True)
    printed = capsys.readouterr().out
    assert "S1" in printed and "base rate" in printed and "faces not found: 0" in printed

    dataset = load_prepared(tmp_path)
    assert len(dataset) == 6 and report.num_frames == 6
    features = dataset.features
    assert isinstance(features["image"], datasets.Image)
    assert {features[c].dtype for c in ("AU1", "AU2", "AU12", "part")} == {"int8"}
    assert features["frame"].dtype == "int32" and features["AU12_intensity"].dtype == "float32"
    rows = dataset.remove_columns("image").to_list()
    expected = [(1, 0, 1), (0, -1, 1), (-1, -1, 0), (1, 1, -1), (0, 0, 0), (0, 1, 1)]
    assert [(r["AU1"], r["AU2"], r["AU12"]) for r in rows] == expected
    assert [r["part"] for r in rows] == [1, 1, 1, 1, 2, 2]
    assert [r["frame"] for r in rows] == [1, 2, 3, 4, 1, 2] and rows[0]["source"] == "S1/T1/1"
    assert [r["AU12_intensity"] for r in rows[:4]] == [2.5] * 4 and all(
        math.isnan(r["AU12_intensity"]) for r in rows[4:]
    )
    for row in rows:  # landmarks are stored in aligned coordinates: on the template
        assert np.allclose(np.asarray(row["landmarks"]), CANONICAL_TEMPLATE_5PT, atol=1e-3)
    image = dataset[0]["image"]
    assert image.size == (256, 256) and image.mode == "RGB" and image.format == "JPEG"

    # AU base rates are computed over known labels only.
    assert report.au_known == {"AU1": 5, "AU2": 4, "AU12": 5}
    assert report.au_base_rates["AU1"] == pytest.approx(2 / 5) and report.au_base_rates["AU2"] == pytest.approx(2 / 4)
    assert report.frames_per_subject == {"S1": 4, "S2": 2}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["au_base_rates"]["AU12"] == pytest.approx(3 / 5) and saved["aligned_from"]["landmarks"] == 6

    metadata = read_metadata(tmp_path)
    assert metadata["aus"] == AUS and metadata["au_columns"] == ["AU1", "AU2", "AU12"]
    assert metadata["partition"] == {"S1": 1, "S2": 2, "S3": 3} and metadata["partition_name"] == "test parts"
    assert metadata["unknown_label"] == -1 and metadata["image_size"] == 256
    assert metadata["alignment"]["method"] == "landmarks" and metadata["counts"]["frames"] == 6
    assert read_metadata(tmp_path / "dataset") == metadata == read_metadata(dataset)
    assert json.loads(dataset.info.description) == metadata
    assert au_column("au_01") == "AU1"


def test_bad_frames_are_reported_not_fatal(tmp_path):
    good = _records("S1", "T1", [{1: 1}, {2: 0}])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    image, points = _face(5)
    bad = [
        FrameRecord("S1", "T1", 10, {1: 1}, image_path=str(corrupt), landmarks=points, source="corrupt.jpg"),
        FrameRecord("S1", "T1", 11, {1: 1}, image_path=str(tmp_path / "gone.jpg"), landmarks=points, source="gone"),
        FrameRecord("S1", "T1", 12, {1: 1}, image=image, landmarks=np.zeros((7, 2)), source="seven-points"),
        FrameRecord("S1", "T1", 13, {17: 1}, image=image, landmarks=points, source="unknown-au"),
        FrameRecord("S1", "T1", 14, {1: 3}, image=image, landmarks=points, source="bad-value"),
        FrameRecord("S1", "T1", 15, {1: 1}, source="no-image"),
        FrameRecord("S1", "T1", 16, {1: "yes"}, image=image, landmarks=points, source="text-label"),
        FrameRecord("S1", "T1", 17, {1: 1}, image=np.zeros((9, 9, 2), np.uint8), source="two-channels"),
        FrameRecord("S1", "T1", 18, {1: 1}, image=image, landmarks=points, intensities={"AUx": 2}, source="bad-int"),
    ]
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # a large face: decoded reduced
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    good.append(FrameRecord("S1", "T1", 3, {1: 0}, image_path=str(tmp_path / "big.jpg"), landmarks=points * 4 + 1.5))
    report = _prepare([("u", lambda: iter(good[:1] + bad + good[1:]))], tmp_path)
    problems = {entry["source"]: entry["problem"] for entry in report.errors}
    assert set(problems) == {
        *("corrupt.jpg", "gone", "seven-points", "unknown-au", "bad-value", "no-image"),
        *("text-label", "two-channels", "bad-int"),
    }
    assert "not a number" in problems["text-label"] and "shape" in problems["two-channels"]
    assert "not a readable image" in problems["corrupt.jpg"] and "does not exist" in problems["gone"]
    assert "(7, 2)" in problems["seven-points"] and "AU17" in problems["unknown-au"]
    assert "not 0, 1" in problems["bad-value"]
    assert all(entry["unit"] == "u" for entry in report.errors)
    dataset = load_prepared(tmp_path)
    assert dataset["frame"] == [1, 2, 3]
    assert np.allclose(np.asarray(dataset[2]["landmarks"]), CANONICAL_TEMPLATE_5PT, atol=1e-3)
    small, large = (np.asarray(dataset[i]["image"].convert("L"), dtype=np.float64) for i in (1, 2))
    assert small.shape == large.shape == (256, 256)
    assert read_metadata(tmp_path)["counts"]["errors"] == 9


def test_frames_without_a_face_are_listed(tmp_path):
    pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    records = [
        FrameRecord("S1", "T1", 1, {1: 1}, image=photo, source="astronaut"),
        FrameRecord("S1", "T1", 2, {1: 0}, image=np.full((120, 120, 3), 90, np.uint8), source="blank"),
    ]
    report = _prepare([("u", lambda: iter(records))], tmp_path)
    assert report.no_face == [{"unit": "u", "source": "blank"}] and report.aligned_from == {
        "landmarks": 0,
        "detected": 1,
    }
    dataset = load_prepared(tmp_path)
    assert dataset["source"] == ["astronaut"]
    metadata = read_metadata(tmp_path)
    assert metadata["alignment"]["method"] == "dlib" and metadata["alignment"]["detector"]["detector"] == "hog"
    assert metadata["counts"]["no_face"] == 1


def test_resume_after_an_interruption(tmp_path):
    calls = {"A": 0, "B": 0, "C": 0}
    frames = {
        name: _records(subject, "T1", [{1: i % 2} for i in range(4)])
        for name, subject in zip("ABC", ["S1", "S2", "S3"])
    }
    crash = {"on": True}

    def unit(name):
        def thunk():
            calls[name] += 1
            for i, record in enumerate(frames[name]):
                if name == "B" and crash["on"] and i == 2:
                    raise RuntimeError("power cut")
                yield record

        return thunk

    units = [(name, unit(name)) for name in "ABC"]
    with pytest.raises(RuntimeError, match="power cut"):
        _prepare(units, tmp_path)
    shards = tmp_path / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["A.arrow"]  # the half-done unit left nothing behind
    (shards / "B.arrow.tmp-99999").write_bytes(b"half a shard")  # as if killed while writing
    (shards / "C.arrow").write_bytes(b"garbage")  # a damaged shard must not count as finished
    crash["on"] = False
    report = _prepare(units, tmp_path)
    assert calls == {"A": 1, "B": 2, "C": 1}
    assert report.units_reused == 1 and report.units_prepared == 2 and report.num_frames == 12
    dataset = load_prepared(tmp_path)
    assert dataset["subject"] == ["S1"] * 4 + ["S2"] * 4 + ["S3"] * 4
    assert not list(shards.glob("*.tmp-*"))

    # A third run reuses everything; changing a setting that changes the images redoes every unit.
    _prepare(units, tmp_path)
    assert calls == {"A": 1, "B": 2, "C": 1}
    _prepare(units, tmp_path, jpeg_quality=80)
    assert calls == {"A": 2, "B": 3, "C": 2}


def test_a_unit_whose_inputs_changed_is_prepared_again(tmp_path):
    # A unit's third item describes what it reads; the shard is reused only while that description is unchanged.
    from sevnet_hf.data.schema import input_signature

    labels = {"S1": [{1: 1}, {1: 0}], "S2": [{1: 0}, {1: 1}]}
    calls = {"S1": 0, "S2": 0}

    def unit(subject):
        def thunk():
            calls[subject] += 1
            yield from _records(subject, "T1", labels[subject])

        return (subject, thunk, lambda: input_signature(data=labels[subject]))

    def run():
        return _prepare([unit("S1"), unit("S2")], tmp_path)

    run()
    assert run().units_reused == 2 and calls == {"S1": 1, "S2": 1}
    labels["S1"][0] = {1: 0}  # a flipped label
    labels["S2"] = labels["S2"][:1]  # a deleted row
    report = run()
    assert (report.units_prepared, report.units_reused) == (2, 0) and calls == {"S1": 2, "S2": 2}
    dataset = load_prepared(tmp_path)
    assert dataset["AU1"] == [0, 0, 0] and dataset["subject"] == ["S1", "S1", "S2"]
    labels["S2"].append({1: 1})
    report = run()
    assert (report.units_prepared, report.units_reused) == (1, 1) and calls == {"S1": 2, "S2": 3}


def test_input_signature_covers_file_contents_by_size_and_time(tmp_path):
    import os

    from sevnet_hf.data.schema import input_signature

    file = tmp_path / "labels.csv"
    file.write_text("a,1\n")
    first = input_signature(data={"offset": 0}, files=[file])
    assert input_signature(data={"offset": 0}, files=[file]) == first
    assert input_signature(data={"offset": 1}, files=[file]) != first
    file.write_text("a,0\n")
    os.utime(file, ns=(1, 1))
    second = input_signature(data={"offset": 0}, files=[file])
    assert second != first
    file.unlink()
    assert input_signature(data={"offset": 0}, files=[file]) not in (first, second)  # a missing file counts too


@pytest.mark.parametrize("name", ["bp4d", "disfa", "bp4dplus"])
def test_benchmark_rerun_prepares_the_units_whose_labels_or_settings_changed(tmp_path, name):
    import importlib

    from tests import fixtures_benchmarks

    tree = getattr(fixtures_benchmarks, f"make_{name}_tree")(tmp_path / name)
    command = importlib.import_module(f"sevnet_hf.datasets_scripts.{name}")
    argv = ["--root", str(tree.root), "--output", str(tmp_path / "out"), "--no-progress"]

    def run(*extra):
        assert command.main([*argv, *extra]) == 0
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        return report["units_prepared"], report["units_reused"]

    units, _ = run()
    assert run() == (0, units)
    extra = ()
    if name != "disfa":  # another frame offset changes which image each label frame gets: every unit is redone
        extra = ("--frame-offset", "0" if command.DEFAULT_FRAME_OFFSET else "-1")
        assert run(*extra) == (units, 0)
    labels = tree.root / ("ActionUnit_Labels/SN001" if name == "disfa" else "AUCoding/AU_OCC")
    label_file = sorted(labels.glob("*.txt" if name == "disfa" else "*.csv"))[0]
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join(lines[:-1]) + "\n")  # the last labelled frame deleted
    assert run(*extra) == (1, units - 1)


def test_synthetic_rerun_with_another_seed_renders_again(tmp_path):
    from sevnet_hf.datasets_scripts import synthetic

    argv = ["--output", str(tmp_path), "--preset", "quick", "--num_identities", "3", "--frames_per_task", "1"]
    argv += ["--num_workers", "0", "--progress", "false"]

    def run(seed):
        assert synthetic.main([*argv, "--seed", str(seed)]) == 0
        report = json.loads((tmp_path / "report.json").read_text())
        return (report["units_prepared"], report["units_reused"]), load_prepared(tmp_path)["AU12"]

    first, labels = run(0)
    assert first == (3, 0) and run(0) == ((0, 3), labels)
    counts, other = run(1)
    assert counts == (3, 0) and other != labels  # the seed-0 shards are not reused for seed 1


def test_subject_missing_from_partition_stops_at_that_unit(tmp_path):
    units = [("a", lambda: iter(_records("S1", "T1", [{1: 1}]))), ("b", lambda: iter(_records("X9", "T1", [{1: 1}])))]
    with pytest.raises(ValueError, match=r"unit 'b': subject 'X9' is not in the partition 'test parts'"):
        _prepare(units, tmp_path)
    assert (tmp_path / "shards" / "a.arrow").exists()


def test_extras_box_keys_and_workers(tmp_path):
    image, points = _face(1)
    box = [float(points[0, 0] - 5), float(points[0, 1] - 5), float(points[0, 0] + 5), float(points[0, 1] + 5)]

    def make(subject):
        def thunk():
            for frame in range(3):
                extra = {"au_regions": [box, box, box], "note": f"{subject}-{frame}"}
                yield FrameRecord(subject, "T", frame, {1: frame % 2}, image=image, landmarks=points, extra=extra)

        return thunk

    units = [(s, make(s)) for s in ("S1", "S2", "S3")]
    serial = _prepare(units, tmp_path / "serial", box_keys=("au_regions",))
    parallel = _prepare(units, tmp_path / "parallel", box_keys=("au_regions",), num_workers=2)
    assert serial.num_frames == parallel.num_frames == 9
    one, two = load_prepared(tmp_path / "serial"), load_prepared(tmp_path / "parallel")
    assert one.remove_columns("image").to_list() == two.remove_columns("image").to_list()
    assert one["note"][:2] == ["S1-0", "S1-1"]
    x0, y0, x1, y1 = one[0]["au_regions"][0]  # mapped into aligned pixels: around the template's left eye
    eye = CANONICAL_TEMPLATE_5PT[0]
    assert x0 < eye[0] < x1 and y0 < eye[1] < y1 and 15 < x1 - x0 < 30


def test_partition_forms_and_bad_arguments(tmp_path):
    assert normalize_partition({1: ("A", "B"), 2: ["C"]}) == normalize_partition({"A": 1, "B": 1, "C": 2})
    with pytest.raises(ValueError, match="in part 1 and in part 2"):
        normalize_partition({1: ["A"], 2: ["A"]})
    with pytest.raises(ValueError, match="standard keys"):
        _prepare([], tmp_path, extra_metadata={"aus": [1]})
    with pytest.raises(ValueError, match="used twice"):
        _prepare([("u", lambda: iter([])), ("u", lambda: iter([]))], tmp_path)
    with pytest.raises(ValueError, match="no units"):
        _prepare([], tmp_path)


def test_unit_ids_become_safe_file_names(tmp_path):
    records = _records("S1", "T1", [{1: 1}])
    _prepare([("S1/T1 (left camera)", lambda: iter(records)), ("S1_T1_left_camera", lambda: iter(records))], tmp_path)
    names = sorted(p.name for p in Path(tmp_path, "shards").iterdir())
    assert len(names) == 2 and all("/" not in n and " " not in n for n in names)
