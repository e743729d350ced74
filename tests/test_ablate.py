"""The ablation runner: four model types on the same fold, a table, a grouped chart, attention scores and figure."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from sevnet_hf.training.ablate import main
from sevnet_hf.training.attention_analysis import _cell_overlap
from tests.fixtures_data import make_prepared_dataset
from tests.test_training import tiny_cli_argv


def test_cell_overlap_maps_aligned_boxes_onto_the_attention_grid():
    # 256 aligned -> resized 128 (scale 2) -> center crop 112 (offset 8) -> 4x4 grid of 28-pixel cells.
    overlap = _cell_overlap([16, 16, 72, 72], (4, 4), crop=112, left=8, top=8, scale=2.0)
    # The box is resized pixels 8..36 -> crop pixels 0..28: exactly the top-left cell.
    expected = np.zeros((4, 4))
    expected[0, 0] = 1
    np.testing.assert_allclose(overlap, expected)
    half = _cell_overlap([16, 16, 44, 44], (4, 4), crop=112, left=8, top=8, scale=2.0)
    assert half[0, 0] == pytest.approx(0.25) and half.sum() == pytest.approx(0.25)


@pytest.mark.slow
def test_ablation_runs_four_models_and_scores_attention(tmp_path, tiny_text_encoder_dir):
    data = make_prepared_dataset(tmp_path / "data", size=72)
    out = tmp_path / "ablation"
    argv = tiny_cli_argv(data, out, tiny_text_encoder_dir) + ["--localisation_images", "12", "--attention_faces", "2"]
    assert main(argv) == 0
    rows = list(csv.reader((out / "ablation_f1.csv").open()))
    assert [r[0] for r in rows[1:]] == ["resnet", "mlgcn", "mscam", "sevnet", "frequency prior"]
    scores = json.loads((out / "attention_localisation.json").read_text())
    assert set(scores) == {"mscam", "sevnet"}  # the models that have attention maps
    for per_au in scores.values():
        for s in per_au.values():
            assert 0 <= s["mass_in_region"] <= 100 and 0 <= s["peak_in_region"] <= 100
            assert s["uniform_mass"] == pytest.approx(25.0, abs=1e-6)  # one quadrant of the face
    assert (out / "attention_side_by_side.png").stat().st_size > 1000
    assert (out / "ablation_f1.png").stat().st_size > 1000
