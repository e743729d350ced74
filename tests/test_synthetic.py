"""Synthetic AU faces: label model (rates, co-occurrence, smoothness), renderer (determinism, localised AU changes,
regions) and ``sevnet-hf prepare synthetic`` end to end through ``prepare_dataset``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sevnet_hf.data.schema import load_prepared, read_metadata
from sevnet_hf.datasets_scripts import synthetic
from sevnet_hf.datasets_scripts import synthetic_render as render
from sevnet_hf.protocols import BP4D_AUS, PAPER_DESCRIBED_AUS, au_label, fold_parts


def _frame_setup(seed: int):
    rng = np.random.default_rng(seed)
    identity = render.sample_identity(rng)
    scene = render.sample_scene(rng, identity)
    nuisance = render.sample_frame_nuisances(rng, scene, np.array([0.0]))[0]
    return identity, scene, nuisance


@pytest.fixture(scope="module")
def label_table():
    return synthetic.sample_label_table(160, 12, seed=7)


def test_au_set_is_bp4d_plus_9_25_26():
    assert set(BP4D_AUS) | {9, 25, 26} == set(render.SYNTHETIC_AUS)
    assert tuple(render.SYNTHETIC_AUS) == tuple(PAPER_DESCRIBED_AUS)
    assert set(synthetic.TARGET_BASE_RATES) == set(render.SYNTHETIC_AUS)


def test_labels_are_deterministic_and_seed_dependent():
    first = synthetic.sample_label_table(3, 6, seed=11, unknown_rate=0.05)
    again = synthetic.sample_label_table(3, 6, seed=11, unknown_rate=0.05)
    other = synthetic.sample_label_table(3, 6, seed=12, unknown_rate=0.05)
    assert first["labels"].shape == (3 * len(synthetic.TASKS) * 6, len(render.SYNTHETIC_AUS))
    np.testing.assert_array_equal(first["intensities"], again["intensities"])
    np.testing.assert_array_equal(first["labels"], again["labels"])
    assert not np.array_equal(first["intensities"], other["intensities"])
    # a subset of a larger draw is the same data (per-identity, per-task random streams)
    bigger = synthetic.sample_label_table(4, 6, seed=11, unknown_rate=0.05)
    np.testing.assert_array_equal(bigger["intensities"][: len(first["intensities"])], first["intensities"])


def test_occurrence_is_intensity_at_least_two_and_borderline_cases_exist(label_table):
    intensities, labels = label_table["intensities"], label_table["labels"]
    assert intensities.min() >= 0.0 and intensities.max() <= 5.0
    np.testing.assert_array_equal(labels == 1, intensities >= synthetic.OCCURRENCE_THRESHOLD)
    borderline = np.mean((intensities > 1.5) & (intensities < 2.5), axis=0)
    assert borderline.min() > 0.02, dict(zip(render.SYNTHETIC_AUS, borderline.round(3)))
    # intensities are continuous: not a handful of levels
    assert len(np.unique(np.round(intensities[:, render.AU_INDEX[12]], 2))) > 200


def test_base_rates_are_near_the_targets(label_table):
    rates = (label_table["labels"] == 1).mean(axis=0)
    for au, rate in zip(render.SYNTHETIC_AUS, rates):
        assert abs(rate - synthetic.TARGET_BASE_RATES[au]) < 0.06, (au_label(au), rate)


def test_cooccurrence_looks_like_spontaneous_data(label_table):
    stats = synthetic.label_statistics(label_table["labels"], render.SYNTHETIC_AUS)
    smile = stats["pairs"][(6, 12)]
    assert smile["p_b_given_a"] > 0.8 and smile["p_a_given_b"] > 0.6  # AU6 comes with AU12 (and mostly vice versa)
    brows = stats["pairs"][(1, 2)]
    assert brows["p_a_given_b"] > 0.7 and brows["p_b_given_a"] > 0.55  # AU2 comes with AU1
    corners = stats["pairs"][(12, 15)]
    assert corners["joint"] < 0.4 * corners["independent"]  # lip corners up and down rarely together
    # tasks differ as in BP4D: smiles in the interview (T1), AU15 in the sad film (T2), AU9 at the smell (T8)
    task = label_table["task"]
    on = label_table["labels"] == 1
    assert on[task == 0, render.AU_INDEX[12]].mean() > on[task == 1, render.AU_INDEX[12]].mean() + 0.2
    assert on[task == 1, render.AU_INDEX[15]].mean() > on[task == 0, render.AU_INDEX[15]].mean() + 0.2
    assert on[task == 7, render.AU_INDEX[9]].mean() > 3 * on[task != 7, render.AU_INDEX[9]].mean()


def test_intensity_sequences_are_smooth(label_table):
    frames = 12
    series = label_table["intensities"].reshape(-1, frames, len(render.SYNTHETIC_AUS))
    centred = series - series.mean(axis=1, keepdims=True)
    lag1 = (centred[:, 1:] * centred[:, :-1]).sum() / (centred**2).sum()
    shuffled = np.random.default_rng(0).permutation(frames)
    mixed = centred[:, shuffled]
    lag1_mixed = (mixed[:, 1:] * mixed[:, :-1]).sum() / (mixed**2).sum()
    assert lag1 > 0.6 and lag1 > lag1_mixed + 0.5
    steps = np.abs(np.diff(series, axis=1))
    assert np.quantile(steps, 0.99) < 1.6
    # occurrences come in episodes of several frames, not isolated flickers
    on = (series >= 2).transpose(0, 2, 1).reshape(-1, frames).astype(int)
    starts = np.diff(np.pad(on, ((0, 0), (1, 0))), axis=1) == 1
    assert on.sum() / starts.sum() > 3.0


def test_unknown_labels_follow_the_rate():
    table = synthetic.sample_label_table(20, 8, seed=3, unknown_rate=0.1)
    assert abs((table["labels"] == -1).mean() - 0.1) < 0.02
    assert (synthetic.sample_label_table(5, 8, seed=3)["labels"] >= 0).all()


def test_rendering_is_deterministic_and_seed_dependent():
    def frames(seed):
        return [record for _, record in zip(range(3), synthetic.subject_records(1, 2, seed=seed))]

    first, again, other = frames(5), frames(5), frames(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        assert a.labels == b.labels and a.extra == b.extra and a.frame == b.frame
    assert first[0].image.shape == (320, 320, 3) and first[0].image.dtype == np.uint8
    assert first[0].landmarks.shape == (5, 2)
    assert not np.array_equal(first[0].image, other[0].image)


def test_identities_differ():
    images = [next(iter(synthetic.subject_records(i, 1, seed=0))).image.astype(np.float32) for i in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(images[i] - images[j]).mean() > 10


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_each_au_changes_pixels_inside_its_region(seed):
    identity, scene, nuisance = _frame_setup(seed)
    neutral = np.zeros(len(render.SYNTHETIC_AUS))
    base = render.render_frame(identity, scene, nuisance, neutral).image.astype(np.int32)
    again = render.render_frame(identity, scene, nuisance, neutral).image.astype(np.int32)
    np.testing.assert_array_equal(base, again)
    ys, xs = np.mgrid[0 : base.shape[0], 0 : base.shape[1]]
    for k, au in enumerate(render.SYNTHETIC_AUS):
        change = {}
        for level in (1.0, 4.0):
            intensities = neutral.copy()
            intensities[k] = level
            frame = render.render_frame(identity, scene, nuisance, intensities)
            change[level] = np.abs(frame.image.astype(np.int32) - base).sum(axis=2).astype(np.float64)
        x0, y0, x1, y1 = frame.regions[k]
        margin = 4  # blur and JPEG blocks spread a change by a few pixels
        inside = (xs >= x0 - margin) & (xs <= x1 + margin) & (ys >= y0 - margin) & (ys <= y1 + margin)
        share = change[4.0][inside].sum() / change[4.0].sum()
        assert share > 0.8, (au_label(au), share)
        assert change[4.0][inside].mean() > 2.0, (au_label(au), "change too faint")
        assert change[4.0].sum() > 1.5 * change[1.0].sum(), (au_label(au), "change does not grow with intensity")


def test_regions_are_inside_the_aligned_image_and_ordered():
    records = [record for _, record in zip(range(16), synthetic.subject_records(2, 2, seed=1))]
    for record in records:
        boxes = np.array(record.extra["au_regions"])
        assert boxes.shape == (len(render.SYNTHETIC_AUS), 4)
        assert boxes.min() >= 0 and boxes.max() <= 256
        assert (boxes[:, 2] > boxes[:, 0] + 4).all() and (boxes[:, 3] > boxes[:, 1] + 4).all()
        centre_y = {au: (boxes[k, 1] + boxes[k, 3]) / 2 for k, au in enumerate(render.SYNTHETIC_AUS)}
        assert centre_y[2] < centre_y[6] < centre_y[10] < centre_y[25] < centre_y[17]


def test_partition_is_balanced_and_feeds_the_folds():
    parts = synthetic.synthetic_partition(12)
    assert parts == synthetic.synthetic_partition(12)
    assert sorted(parts) == [synthetic.subject_name(i) for i in range(12)]
    assert [list(parts.values()).count(p) for p in (1, 2, 3)] == [4, 4, 4]
    for fold in (1, 2, 3):
        train, test = fold_parts(fold)
        assert {s for s, p in parts.items() if p == test}.isdisjoint({s for s, p in parts.items() if p in train})


def test_bad_options_exit_with_status_2(tmp_path, capsys):
    assert synthetic.main(["--output", str(tmp_path / "a"), "--preset", "huge"]) == 2
    assert "quick" in capsys.readouterr().err
    assert synthetic.main(["--output", str(tmp_path / "b"), "--num_identities", "2"]) == 2
    assert synthetic.main(["--preset", "quick"]) == 2


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    out = tmp_path / "synthetic"
    grid, stats = tmp_path / "grid.png", tmp_path / "stats.md"
    argv = [
        "--output",
        str(out),
        "--preset",
        "quick",
        "--progress",
        "false",
        "--grid",
        str(grid),
        "--stats",
        str(stats),
    ]
    assert synthetic.main(argv) == 0
    preset = synthetic.PRESETS["quick"]
    dataset = load_prepared(out)
    metadata = read_metadata(out)
    assert len(dataset) == preset.identities * len(synthetic.TASKS) * preset.frames_per_task
    assert metadata["source"] == "synthetic"
    assert metadata["aus"] == list(render.SYNTHETIC_AUS)
    assert metadata["synthetic"]["preset"] == "quick"
    assert sorted(set(dataset["part"])) == [1, 2, 3]
    columns = dataset.select_columns(["subject", "sequence", *metadata["au_columns"]]).with_format("numpy")[:]
    assert len(set(columns["subject"])) == preset.identities
    assert set(columns["sequence"]) == set(synthetic.TASKS)
    labels = np.stack([columns[c] for c in metadata["au_columns"]], axis=1)
    assert set(np.unique(labels)) <= {-1, 0, 1} and (labels == 1).any() and (labels == 0).any()
    row = dataset[0]
    assert row["image"].size == (256, 256)
    boxes = np.array(row["au_regions"])
    assert boxes.shape == (len(render.SYNTHETIC_AUS), 4) and boxes.min() >= 0 and boxes.max() <= 256
    assert not np.isnan(row[f"{au_label(12)}_intensity"]) or row[au_label(12)] == -1
    # the aligned landmarks sit on the template (alignment went through prepare_dataset's code path)
    template = np.array(metadata["alignment"]["template_5pt"])
    assert np.abs(np.array(row["landmarks"]) - template).max() < 12
    picture = cv2.imread(str(grid))
    assert picture is not None and picture.shape[1] == 8 * 160
    text = stats.read_text(encoding="utf-8")
    assert "| AU12 |" in text and "AU6, AU12" in text
    json.dumps(metadata)  # JSON-able
    # a rerun reuses every finished identity
    args = synthetic.PrepareSyntheticArguments(output=str(out), preset="quick", progress=False, num_workers=0)
    report = synthetic.prepare_synthetic(args)
    assert report.units_reused == preset.identities and report.units_prepared == 0
