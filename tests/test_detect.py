"""AU detection on photos and folders: the command, the Python API, output formats, resuming, attention grids,
the ``au-detection`` pipeline and a ``trust_remote_code`` load in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
pd = pytest.importorskip("pandas")

from sevnet_hf.data.align import FaceFinder, align_face, read_image  # noqa: E402
from sevnet_hf.inference import AUDetector, attention_grid, read_results, result_columns  # noqa: E402
from sevnet_hf.inference import detect as detect_module  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

AUS = [1, 2, 4, 6, 12]
LABELS = [f"AU{n}" for n in AUS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures: a tiny saved SEV-Net and the two sample photos
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def detector(model_dir):
    return AUDetector(str(model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def grace():
    from matplotlib import cbook

    return read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _save(path, rgb) -> str:
    image = (
        rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    )
    assert cv2.imwrite(str(path), image)
    return str(path)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, astronaut, grace):
    """astronaut, grace_hopper, a texture without a face, a truncated JPEG, an empty file and a stray text file."""
    folder = tmp_path_factory.mktemp("photos")
    _save(folder / "astronaut.png", astronaut)
    _save(folder / "grace.jpg", grace)
    rng = np.random.default_rng(0)
    _save(folder / "noface.png", cv2.GaussianBlur((rng.random((180, 240, 3)) * 255).astype(np.uint8), (0, 0), 3))
    (folder / "sub").mkdir()
    (folder / "sub" / "corrupt.jpg").write_bytes((folder / "grace.jpg").read_bytes()[:400])
    (folder / "sub" / "empty.png").write_bytes(b"")
    (folder / "sub" / "readme.txt").write_text("not a picture")
    return folder


def _face_rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["source"].str.endswith(name)]


# ----------------------------------------------------------------------------------------------------------------------
# The command on photos and folders
# ----------------------------------------------------------------------------------------------------------------------
def test_cli_on_a_folder_reports_problems_and_fills_every_au_column(photo_folder, model_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("a text file named explicitly")
    output = tmp_path / "out.csv"
    code = detect_module.main([str(photo_folder), str(notes), "--model", str(model_dir), "--output", str(output)])
    assert code == 0
    assert output.exists() and not (tmp_path / "out.csv.partial").exists()
    table = read_results(output)
    assert list(table.columns) == result_columns(LABELS)
    for name in ("astronaut.png", "grace.jpg"):
        rows = _face_rows(table, name)
        assert len(rows) == 1 and rows["status"].tolist() == ["ok"], rows
        row = rows.iloc[0]
        probabilities = row[[f"{label}_prob" for label in LABELS]].to_numpy(dtype=float)
        assert np.all((probabilities >= 0) & (probabilities <= 1))
        assert row[LABELS].tolist() == [int(p >= 0.5) for p in probabilities]
        x0, y0, x1, y1 = row[["box_x0", "box_y0", "box_x1", "box_y1"]]
        points = row[list(detect_module.LANDMARK_COLUMNS)].to_numpy(dtype=float).reshape(5, 2)
        assert np.all((points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1))
        assert row["detection"] == "detected" and row["detection_score"] > 0 and row["frame"] == 0
    assert _face_rows(table, "noface.png")["status"].tolist() == ["no_face"]
    for name in ("corrupt.jpg", "empty.png", "notes.txt"):
        rows = _face_rows(table, name)
        assert rows["status"].tolist() == ["error"] and name in rows["message"].iloc[0]
    assert not _face_rows(table, "readme.txt").size  # in a folder, files without an image extension are ignored...
    err = capsys.readouterr().err
    for name in ("corrupt.jpg", "empty.png", "notes.txt", "noface.png", "readme.txt"):
        assert name in err  # ...but every problem is named in the summary


def test_every_documented_column_is_in_the_module_docstring():
    for name in detect_module.BASE_COLUMNS:
        assert f"``{name}``" in detect_module.__doc__ or name in detect_module.__doc__, name
    assert "``<AU>_prob``" in detect_module.__doc__ and "``<AU>``" in detect_module.__doc__


def test_formats_hold_the_same_rows(photo_folder, detector, tmp_path):
    names = [str(photo_folder / "astronaut.png"), str(photo_folder / "noface.png"), str(photo_folder / "missing.jpg")]
    results = detector.detect(names)
    tables = {}
    for fmt in ("csv", "parquet", "jsonl"):
        writer = detect_module.ResultWriter(tmp_path / f"out.{fmt}", fmt, LABELS)
        for result in results:  # one row per write, as after each model batch
            writer.write([result])
        assert (tmp_path / f"out.{fmt}").exists() is False
        writer.close()
        tables[fmt] = read_results(tmp_path / f"out.{fmt}")
    reference = detect_module.results_to_dataframe(results, LABELS)
    numeric = [f"{label}_prob" for label in LABELS] + ["box_x0", "nose_x", "detection_score"]
    for fmt, table in tables.items():
        assert list(table.columns) == list(reference.columns) and len(table) == 3, fmt
        assert table["status"].tolist() == ["ok", "no_face", "error"], fmt
        assert table["message"].iloc[2].endswith("no such file or folder"), fmt
        np.testing.assert_allclose(table[numeric].to_numpy(float), reference[numeric].to_numpy(float), rtol=1e-6)
        assert table[LABELS].iloc[0].tolist() == reference[LABELS].iloc[0].tolist()
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "out.parquet")
    assert str(schema.field("AU1").type) == "int8" and str(schema.field("AU1_prob").type) == "double"


def test_image_variants_gray_rgba_16bit_and_very_large(astronaut, detector, tmp_path):
    reference = detector.detect(astronaut)
    assert len(reference) == 1 and reference[0].status == "ok"
    ref_points = reference[0].landmarks
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])
    deep = astronaut.astype(np.uint16) * 257
    paths = {
        "gray": _save(tmp_path / "gray.png", gray),
        "rgba": _save(tmp_path / "rgba.png", rgba),
        "deep": _save(tmp_path / "deep.png", deep),
    }
    assert cv2.imread(paths["deep"], cv2.IMREAD_UNCHANGED).dtype == np.uint16
    # A 6000 x 4000 photo: the astronaut enlarged 7x, placed at (900, 150).
    scale, offset = 7, np.array([900.0, 150.0])
    large = np.full((4000, 6000, 3), 127, np.uint8)
    large[150 : 150 + 512 * scale, 900 : 900 + 512 * scale] = cv2.resize(
        astronaut, (512 * scale, 512 * scale), interpolation=cv2.INTER_CUBIC
    )
    paths["large"] = _save(tmp_path / "large.jpg", large)
    everything = detector.detect(list(paths.values()))
    results = {r.source: r for r in everything if r.face == 0}  # the best-scoring face of each photo
    assert len(results) == 4 and all(r.status == "ok" and r.detection_score > 1.0 for r in results.values())
    # dlib's HOG at its default threshold also fires weakly (score ~0.1) on one spot of the enlarged astronaut.
    assert all(r.detection_score < 0.5 for r in everything if r.face != 0)
    interocular = np.linalg.norm(ref_points[1] - ref_points[0])
    for kind in ("gray", "rgba", "deep"):
        assert np.abs(results[paths[kind]].landmarks - ref_points).max() < 0.1 * interocular, kind
    np.testing.assert_allclose(results[paths["deep"]].probabilities, reference[0].probabilities, atol=1e-6)
    np.testing.assert_allclose(results[paths["rgba"]].probabilities, reference[0].probabilities, atol=1e-6)
    big = results[paths["large"]]
    expected = ref_points * scale + offset
    assert np.abs(big.landmarks - expected).max() < 0.1 * interocular * scale
    box = np.array(big.box)
    assert box[0] > 900 and box[2] < 900 + 512 * scale and box[2] - box[0] > 300  # mapped back to full resolution


def test_a_phone_photo_stored_sideways_is_turned_upright_by_its_exif_tag(astronaut, detector, tmp_path):
    from PIL import Image

    stored = np.ascontiguousarray(np.rot90(astronaut, 1))  # a camera held sideways stores the face on its side
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    assert read_image(path).shape == (512, 512, 3) and np.abs(read_image(path).astype(int) - stored).mean() < 3
    upright = read_image(path, orient=True)
    assert np.abs(upright.astype(int) - astronaut).mean() < 3  # the tag undoes the rotation
    best = detector.detect([str(path)])[0]  # faces come best score first (dlib's HOG may add a weak one)
    reference = detector.detect(astronaut)[0]
    assert best.status == "ok" and best.detection_score > 1.0
    assert np.abs(np.asarray(best.box) - np.asarray(reference.box)).max() < 8  # the same face, in the same place
    with Image.open(path) as opened:  # a PIL image keeps the tag too
        assert detector.detect(opened)[0].box == best.box
    Image.fromarray(stored).save(tmp_path / "sideways.jpg", quality=95)  # the same pixels without the tag
    assert [r.status for r in detector.detect([str(tmp_path / "sideways.jpg")])] == ["no_face"]


def test_two_photos_side_by_side_give_two_faces(astronaut, grace, detector, model_dir):
    height = max(astronaut.shape[0], grace.shape[0])
    canvas = np.zeros((height, astronaut.shape[1] + grace.shape[1], 3), np.uint8)
    canvas[: astronaut.shape[0], : astronaut.shape[1]] = astronaut
    canvas[: grace.shape[0], astronaut.shape[1] :] = grace
    results = detector.detect(canvas)
    assert len(results) >= 2 and [r.face for r in results] == list(range(len(results)))
    best = sorted(results, key=lambda r: -r.detection_score)[:2]  # faces are numbered best score first
    assert best == results[:2] and all(r.status == "ok" and r.detection_score > 1.0 for r in best)
    centres = sorted((r.box[0] + r.box[2]) / 2 for r in best)
    assert centres[0] < astronaut.shape[1] < centres[1]
    # A stricter threshold than the default MIN_FACE_SCORE keeps the same two (weaker hits: see the test below).
    strict = AUDetector(str(model_dir), device="cpu", detection_threshold=0.5).detect(canvas)
    assert len(strict) == 2 and [r.box for r in strict] == [r.box for r in best]


def test_upsample_finds_a_small_face(astronaut, model_dir, tmp_path):
    small = _save(tmp_path / "small.png", cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    output = tmp_path / "small.csv"
    args = [small, "--model", str(model_dir), "--output", str(output), "--progress", "false"]
    assert detect_module.main(args) == 0 and read_results(output)["status"].tolist() == ["no_face"]  # ~44 px face
    assert detect_module.main([*args, "--upsample", "1"]) == 0
    (row,) = read_results(output).itertuples()
    assert row.status == "ok" and 80 < row.box_x0 < row.box_x1 < 140  # the face at half its original position


def test_python_api_mixed_inputs_and_dataframe(astronaut, grace, detector, photo_folder):
    from PIL import Image

    inputs = [Image.fromarray(astronaut), grace, str(photo_folder / "astronaut.png"), str(photo_folder / "sub")]
    results = detector.detect(inputs)
    assert [r.source for r in results[:3]] == ["<input 0>", "<input 1>", str(photo_folder / "astronaut.png")]
    np.testing.assert_allclose(results[0].probabilities, results[2].probabilities, atol=1e-6)
    assert {r.status for r in results[3:]} == {"error"} and len(results) == 5  # corrupt + empty; readme ignored
    frame = detector.detect_dataframe(inputs)
    assert list(frame.columns) == detector.columns and len(frame) == 5
    assert str(frame["AU1"].dtype) == "Int64" and frame["AU1"].isna().sum() == 2
    np.testing.assert_allclose(
        frame.loc[1, [f"{label}_prob" for label in LABELS]].to_numpy(float), results[1].probabilities
    )


def test_per_au_thresholds_from_the_config(tiny_text_encoder_dir, astronaut, tmp_path):
    from sevnet_hf import SEVNetForAUDetection

    thresholds = [0.01, 0.99, 0.01, 0.99, 0.01]
    torch.manual_seed(0)
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(aus=AUS, thresholds=thresholds), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    model.save_pretrained(tmp_path)  # no processor saved: one is built from the config
    detector = AUDetector(str(tmp_path), device="cpu")
    assert detector.processor.square_sizes()[1] == 64
    (result,) = detector.detect(astronaut)
    assert np.all((result.probabilities > 0.01) & (result.probabilities < 0.99))
    assert result.occurrences.tolist() == [1, 0, 1, 0, 1] and result.present_aus() == ["AU1", "AU4", "AU12"]


def test_crash_keeps_flushed_rows_and_resume_finishes(photo_folder, model_dir, tmp_path, monkeypatch):
    inputs = [str(photo_folder / name) for name in ("astronaut.png", "grace.jpg", "noface.png")]
    output = tmp_path / "out.jsonl"
    args = [*inputs, "--model", str(model_dir), "--output", str(output), "--batch_size", "1", "--progress", "false"]
    calls = {"n": 0, "crash_at": 3}
    original = AUDetector._fill

    def counting_fill(self, pending, output_attentions):
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise RuntimeError("simulated crash")
        return original(self, pending, output_attentions)

    monkeypatch.setattr(AUDetector, "_fill", counting_fill)
    with pytest.raises(RuntimeError, match="simulated crash"):
        detect_module.main(args)
    partial = tmp_path / "out.jsonl.partial"
    assert not output.exists() and partial.exists()
    kept = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [row["source"] for row in kept] == inputs[:2]  # both batches before the crash were flushed
    calls.update(n=0, crash_at=None)
    assert detect_module.main([*args, "--resume", "true"]) == 0
    assert calls["n"] == 2  # astronaut was done; grace (the last source in the file) and noface ran again
    resumed = read_results(output)
    assert resumed["source"].tolist() == inputs and not partial.exists()
    fresh = detect_module.results_to_dataframe(AUDetector(str(model_dir), device="cpu").detect(inputs), LABELS)
    probabilities = [f"{label}_prob" for label in LABELS]
    np.testing.assert_allclose(  # batches of 1 against one of 3: equal up to float rounding
        resumed[probabilities].to_numpy(float), fresh[probabilities].to_numpy(float), rtol=0, atol=1e-6
    )


def test_arguments_positional_flags_and_json_file(tmp_path):
    args = detect_module.parse_detect_args(["a.jpg", "--model", "m", "b.mp4", "--every", "3", "--inputs", "c"])
    assert args.inputs == ["a.jpg", "b.mp4", "c"] and args.every == 3 and args.model == "m"
    assert args.resolved_output() == ("au_detections.csv", "csv")
    args = detect_module.parse_detect_args(["x", "--model", "m", "--output", "r.parquet", "--save-attention", "d"])
    assert args.resolved_output() == ("r.parquet", "parquet") and args.save_attention == "d"
    config = tmp_path / "detect.json"
    config.write_text(json.dumps({"model": "m", "inputs": ["x.png"], "format": "jsonl"}))
    assert detect_module.parse_detect_args([str(config)]).resolved_output() == ("au_detections.jsonl", "jsonl")
    with pytest.raises(SystemExit):
        detect_module.parse_detect_args(["x", "--model", "m", "--no-such-option", "1"])
    with pytest.raises(ValueError, match="--format"):
        detect_module.parse_detect_args(["x", "--model", "m", "--format", "xlsx"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_device_cuda_without_gpu_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="CUDA is not available"):
        AUDetector(str(model_dir), device="cuda")


# ----------------------------------------------------------------------------------------------------------------------
# Attention grids
# ----------------------------------------------------------------------------------------------------------------------
def test_attention_grid_draws_each_map_where_it_points(tmp_path):
    face = np.full((256, 256, 3), 128, np.uint8)
    maps = np.zeros((3, 7, 7), np.float32)
    maps[0, 2, 1] = maps[1, 5, 5] = 1.0  # AU A looks left, AU B bottom-right; AU C is uniform
    maps[2] = 1 / 49
    path = tmp_path / "grid.png"
    grid = attention_grid(face, maps, ["A", "B", "C"], probabilities=[0.9, 0.2, 0.5], path=path, tile_size=140)
    assert grid.shape == (280, 280, 3) and path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), grid)

    def redness(tile_index: int, cell: tuple[int, int]) -> float:
        row, column = divmod(tile_index, 2)
        y, x = (np.array(cell) + 0.5) / 7 * 140
        pixel = grid[row * 140 + int(y), column * 140 + int(x)].astype(float)
        return pixel[0] - pixel[2]

    assert redness(1, (2, 1)) > 40 and redness(1, (5, 5)) < -40
    assert redness(2, (5, 5)) > 40 and redness(2, (2, 1)) < -40
    assert redness(3, (3, 1)) == redness(3, (5, 5))  # a flat map has no hot spot
    no_maps = attention_grid(face, None, ["A", "B", "C"], probabilities=[0.9, 0.2, 0.5], tile_size=140)
    assert no_maps.shape == (140, 280, 3) and no_maps[:, 140:].any()
    with pytest.raises(ValueError, match="N x h x w"):
        attention_grid(face, maps[:2], ["A", "B", "C"])


def test_cli_saves_attention_grids_and_handles_a_model_without_attention(astronaut, model_dir, tmp_path):
    photo = _save(tmp_path / "astronaut.png", astronaut)
    grids = tmp_path / "grids"
    out = tmp_path / "out.csv"
    assert (
        detect_module.main([photo, "--model", str(model_dir), "--output", str(out), "--save_attention", str(grids)])
        == 0
    )
    (saved,) = list(grids.iterdir())
    image = cv2.imread(str(saved))
    assert image.shape == (2 * 160, 3 * 160, 3)  # input + 5 AU maps in a 3 x 2 grid

    from sevnet_hf import AUResNetConfig, AUResNetForAUDetection

    torch.manual_seed(0)
    baseline_dir = tmp_path / "resnet"
    AUResNetForAUDetection(AUResNetConfig(aus=AUS, image_size=64)).save_pretrained(baseline_dir)
    plain = tmp_path / "plain"
    with pytest.warns(UserWarning, match="no attention maps"):
        code = detect_module.main(
            [photo, "--model", str(baseline_dir), "--output", str(tmp_path / "b.csv"), "--save_attention", str(plain)]
        )
    assert code == 0 and len(list(plain.iterdir())) == 1
    assert read_results(tmp_path / "b.csv")["status"].tolist() == ["ok"]


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline and trust_remote_code
# ----------------------------------------------------------------------------------------------------------------------
def test_au_detection_pipeline_matches_the_detector(model_dir, astronaut, photo_folder, detector):
    from transformers import pipeline

    import sevnet_hf.inference.pipeline  # noqa: F401  (registers the task)
    from sevnet_hf.inference import AUDetectionPipeline, au_pipeline

    pipe = pipeline("au-detection", model=str(model_dir), device="cpu")
    assert isinstance(pipe, AUDetectionPipeline)
    (face,) = pipe(astronaut)
    (expected,) = detector.detect(astronaut)
    got = np.array([face[f"{label}_prob"] for label in LABELS])
    np.testing.assert_allclose(got, expected.probabilities, atol=1e-5)
    assert [face[label] for label in LABELS] == expected.occurrences.tolist()
    rows = pipe(str(photo_folder))  # a folder streams through the detector
    assert [row["status"] for row in rows].count("ok") == 2 and len(rows) == 5
    (with_maps,) = pipe(astronaut, output_attentions=True)
    assert with_maps["attention"].shape[0] == len(LABELS)
    loaded = AUDetector(str(model_dir), device="cpu").model
    same = au_pipeline(loaded, device="cpu", image_processor=detector.processor)
    (again,) = same(str(photo_folder / "astronaut.png"))
    np.testing.assert_allclose([again[f"{label}_prob"] for label in LABELS], expected.probabilities, atol=1e-5)
    built = au_pipeline(loaded, device="cpu")  # no processor given: built from the config (crop 64 of 73)
    assert built.image_processor.square_sizes() == (73, 64)
    assert built(astronaut)[0]["status"] == "ok"


def test_fresh_process_without_sevnet_hf_gives_the_detectors_probabilities(model_dir, astronaut, tmp_path):
    face = FaceFinder().largest(astronaut)
    aligned, _ = align_face(astronaut, face.landmarks5, size=256)
    np.save(tmp_path / "aligned.npy", aligned)
    script = f"""
import json, sys
sys.modules["sevnet_hf"] = None  # the package must not be importable
import numpy as np, torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
pixels = processor(np.load({str(tmp_path / "aligned.npy")!r}), return_tensors="pt")["pixel_values"]
with torch.no_grad():
    print(json.dumps(torch.sigmoid(model(pixel_values=pixels).logits)[0].tolist()))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    exact = AUDetector(str(model_dir), device="cpu", channels_last=False)
    np.testing.assert_allclose(exact.predict_aligned(aligned)[0][0], remote, rtol=0, atol=1e-6)
    default, _ = AUDetector(str(model_dir), device="cpu").predict_aligned([aligned])
    np.testing.assert_allclose(default[0], remote, rtol=0, atol=1e-4)  # channels-last: same up to rounding


# ----------------------------------------------------------------------------------------------------------------------
# Output safety: one run per output file, no silent truncation, file names that are not UTF-8
# ----------------------------------------------------------------------------------------------------------------------
EARLIER_RUN = """
import sys, time
from sevnet_hf.inference.detect import FaceResult, ResultWriter
labels = sys.argv[2].split(",")
writer = ResultWriter(sys.argv[1], "csv", labels)
rows = [FaceResult(source=f"earlier{i}.jpg", status="no_face", message="no face found", au_labels=labels)
        for i in range(40)]
writer.write(rows)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.fixture
def earlier_run(tmp_path):
    """A process that wrote 40 rows to ``out.csv.partial`` and is still running; yields (output, process)."""
    output = tmp_path / "out.csv"
    process = subprocess.Popen(
        [sys.executable, "-c", EARLIER_RUN, str(output), ",".join(LABELS)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    yield output, process
    process.kill()
    process.wait()


def _one_line(err: str) -> str:
    noise = ("Loading weights", "[transformers]")  # progress bars and notes printed by transformers itself
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(noise)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _partial_lines(output) -> list[str]:
    return (output.parent / f"{output.name}.partial").read_text().splitlines()


def test_a_second_run_on_an_output_in_use_stops_and_the_lock_dies_with_the_first(
    earlier_run, photo_folder, model_dir, capsys
):
    output, process = earlier_run
    before = _partial_lines(output)
    photo = str(photo_folder / "astronaut.png")
    args = [photo, "--model", str(model_dir), "--output", str(output), "--progress", "false"]
    assert detect_module.main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(output) in line and "another" in line
    assert _partial_lines(output) == before and len(before) == 41  # the running job's rows are untouched
    process.kill()  # SIGKILL: no clean-up runs, yet the lock goes with the process
    process.wait()
    assert detect_module.main([*args, "--resume", "true"]) == 0
    table = read_results(output)
    assert table["source"].tolist() == [f"earlier{i}.jpg" for i in range(39)] + [photo]


def test_a_rerun_without_resume_keeps_the_partial_and_names_resume_and_overwrite(
    earlier_run, photo_folder, model_dir, capsys
):
    output, process = earlier_run
    process.kill()
    process.wait()
    before = _partial_lines(output)
    photo = str(photo_folder / "astronaut.png")
    args = [photo, "--model", str(model_dir), "--output", str(output), "--progress", "false"]
    assert detect_module.main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "40 row" in line and "--resume" in line and "--overwrite" in line
    assert _partial_lines(output) == before and not output.exists()
    assert detect_module.main([*args, "--overwrite", "true"]) == 0
    assert read_results(output)["source"].tolist() == [photo]


def test_a_file_name_that_is_not_utf8_survives_csv_resume_and_parquet(astronaut, model_dir, tmp_path, monkeypatch):
    folder = tmp_path / "odd"
    folder.mkdir()
    try:
        raw = os.path.join(os.fsencode(folder), b"a\xffb.png")
        open(raw, "wb").close()
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    os.remove(raw)
    names = [os.fsdecode(raw), str(folder / "b.png"), str(folder / "c.png")]
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    for name in names:
        encoded.tofile(name)
    output = tmp_path / "odd.csv"
    args = [str(folder), "--model", str(model_dir), "--output", str(output), "--batch_size", "1", "--progress", "false"]
    calls = {"n": 0, "crash_at": 3}
    original = AUDetector._fill

    def crashing_fill(self, pending, output_attentions):
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise RuntimeError("simulated crash")
        return original(self, pending, output_attentions)

    monkeypatch.setattr(AUDetector, "_fill", crashing_fill)
    with pytest.raises(RuntimeError, match="simulated crash"):
        detect_module.main(args)
    calls.update(n=0, crash_at=None)
    assert detect_module.main([*args, "--resume", "true"]) == 0
    assert calls["n"] == 2  # the odd name was read back from the partial file and skipped
    table = read_results(output)
    quoted = table["source"].iloc[0]
    assert quoted == '"' + str(folder) + '/a\\xffb.png"' and table["source"].iloc[1:].tolist() == names[1:]
    assert [detect_module.decode_source_name(text) for text in table["source"]] == names  # lossless
    assert table["status"].tolist() == ["ok"] * 3
    assert detect_module.main([str(folder), *args[1:4], str(tmp_path / "odd.parquet"), "--progress", "false"]) == 0
    assert read_results(tmp_path / "odd.parquet")["source"].tolist() == table["source"].tolist()


@pytest.mark.parametrize(
    "name, quoted",
    [
        ('"quoted".png', True),
        ("two\nlines\t.png", True),
        ("a\udcffb\\c.png", True),  # the byte 0xff as os.fsdecode carries it, and a backslash
        ('plain name é, "x".png', False),
        ("C:\\photos\\a.jpg", False),
    ],
)
def test_source_names_are_quoted_only_when_needed_and_reversibly(name, quoted):
    written = detect_module.encode_source_name(name)
    assert (written != name) is quoted and written.startswith('"') is quoted
    assert detect_module.decode_source_name(written) == name and written.isprintable()
    written.encode("utf-8")  # valid UTF-8 for every output format


# ----------------------------------------------------------------------------------------------------------------------
# Clear errors instead of tracebacks
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the command gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(detect_module, "AUDetector", refuse)


def _unwritable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anyway: a sysfs folder refuses even root
        folder.chmod(0o700)
        if sys.platform != "linux" or not os.path.isdir("/sys/kernel"):
            pytest.skip("no folder here that this user cannot write")
        return "/sys/kernel"
    return str(folder)


@pytest.mark.parametrize("case", ["a folder", "under a file", "not writable", "format xlsx"])
def test_output_problems_are_one_line_and_exit_2_before_any_work(case, photo_folder, tmp_path, no_model_load, capsys):
    photo = str(photo_folder / "astronaut.png")
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    target = {
        "a folder": str(tmp_path),
        "under a file": str(plain / "out.csv"),
        "not writable": os.path.join(_unwritable_folder(tmp_path), "out.csv") if case == "not writable" else "",
        "format xlsx": str(tmp_path / "out.xlsx"),
    }[case]
    extra = ["--format", "xlsx"] if case == "format xlsx" else []
    code = detect_module.main([photo, "--model", "unused", "--output", target, *extra, "--progress", "false"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert ("--format" in line and "xlsx" in line) if case == "format xlsx" else target in line
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("case", ["empty folder", "missing absolute path", "missing relative path", "truncated weights"])
def test_model_problems_are_one_line_and_exit_2(case, model_dir, photo_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if case == "empty folder":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "truncated weights":
        import shutil

        model = tmp_path / "truncated"
        shutil.copytree(model_dir, model)
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100_000])
    else:
        model = tmp_path / "no_such_model" if case == "missing absolute path" else "./no_such_model"
    output = tmp_path / "out.csv"
    code = detect_module.main([str(photo_folder / "astronaut.png"), "--model", str(model), "--output", str(output)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and str(model) in line and "Repo id" not in line, line
    if case == "truncated weights":
        assert "model.safetensors" in line
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


# ----------------------------------------------------------------------------------------------------------------------
# Inputs the folder scan used to skip or misread
# ----------------------------------------------------------------------------------------------------------------------
def test_gif_avif_and_heic_in_a_folder_are_read_and_animations_give_every_frame(astronaut, detector, tmp_path):
    from PIL import Image

    folder = tmp_path / "formats"
    folder.mkdir()
    face, mirrored = Image.fromarray(astronaut), Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1]))
    face.save(folder / "still.gif")
    face.save(folder / "moving.gif", save_all=True, append_images=[mirrored, face], duration=[100, 200, 300], loop=0)
    face.save(folder / "photo.avif")
    (folder / "phone.heic").write_bytes(b"not really a HEIC file")
    results = detector.detect(str(folder))
    by_name = {}
    for result in results:
        by_name.setdefault(os.path.basename(result.source), []).append(result)
    assert sorted(by_name) == ["moving.gif", "phone.heic", "photo.avif", "still.gif"], by_name
    assert [r.status for r in by_name["still.gif"]] == ["ok"] and [r.status for r in by_name["photo.avif"]] == ["ok"]
    moving = by_name["moving.gif"]
    assert [r.frame for r in moving] == [0, 1, 2] and [r.status for r in moving] == ["ok"] * 3
    assert [r.timestamp for r in moving] == pytest.approx([0.0, 0.1, 0.3])  # from the frames' own durations
    (heic,) = by_name["phone.heic"]
    assert heic.status == "error" and "pillow-heif" in heic.message


def test_a_symlink_loop_or_a_broken_link_is_named_as_such(tmp_path, detector):
    loop, broken = tmp_path / "loop.jpg", tmp_path / "broken.jpg"
    os.symlink(loop, loop)
    os.symlink(tmp_path / "gone.jpg", broken)
    results = detector.detect([str(loop), str(broken)])
    assert [r.status for r in results] == ["error", "error"]
    assert "symbolic link loop" in results[0].message
    assert "broken symbolic link" in results[1].message and "gone.jpg" in results[1].message


def test_an_input_without_any_image_or_video_is_exit_2_and_an_empty_folder_beside_others_a_warning(
    photo_folder, model_dir, tmp_path, capsys
):
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "readme.txt").write_text("no pictures here")
    output = tmp_path / "out.csv"
    base = ["--model", str(model_dir), "--output", str(output), "--progress", "false"]
    assert detect_module.main([str(empty), *base]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(empty) in line and "no image or video" in line and not output.exists()
    assert detect_module.main([str(texts), *base]) == 2
    assert "readme.txt" in capsys.readouterr().err
    assert detect_module.main([str(empty), str(photo_folder / "astronaut.png"), *base]) == 0
    err = capsys.readouterr().err
    assert f"{empty}: no image or video" in err and len(read_results(output)) == 1


def test_weak_detections_below_the_minimum_face_score_are_dropped(astronaut, grace, detector, model_dir):
    from sevnet_hf.data.align import MIN_FACE_SCORE

    height = max(astronaut.shape[0], grace.shape[0])
    canvas = np.zeros((height, astronaut.shape[1] + grace.shape[1], 3), np.uint8)
    canvas[: astronaut.shape[0], : astronaut.shape[1]] = astronaut
    canvas[: grace.shape[0], astronaut.shape[1] :] = grace
    everything = AUDetector(str(model_dir), device="cpu", detection_threshold=0.0).detect(canvas)
    weak = [r for r in everything if r.detection_score < MIN_FACE_SCORE]
    assert weak and all(r.detection_score > 0 for r in weak)  # dlib's own threshold (0) lets a weak one through
    kept = detector.detect(canvas)  # the detector's default: MIN_FACE_SCORE
    assert len(kept) == len(everything) - len(weak) == 2
    assert all(r.status == "ok" and r.detection_score >= MIN_FACE_SCORE for r in kept)
    assert detect_module.DetectArguments(model="m").detection_threshold == MIN_FACE_SCORE
