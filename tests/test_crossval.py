"""The 3-fold protocol runner: per-fold and mean table, CSV, chart, and reuse of finished folds."""

from __future__ import annotations

import csv

import pytest

from sevnet_hf.training.crossval import main
from tests.fixtures_data import make_prepared_dataset
from tests.test_training import tiny_cli_argv


@pytest.mark.slow
def test_crossval_writes_paper_format_tables_and_reuses_folds(tmp_path, tiny_text_encoder_dir, capsys):
    data = make_prepared_dataset(tmp_path / "data", size=72)
    out = tmp_path / "cv"
    argv = tiny_cli_argv(data, out, tiny_text_encoder_dir)
    assert main(argv) == 0
    rows = list(csv.reader((out / "crossval_f1.csv").open()))
    assert rows[0] == ["row", "AU1", "AU2", "AU4", "Avg"]
    assert [r[0] for r in rows[1:]] == ["fold 1", "fold 2", "fold 3", "mean over 3 folds"]
    mean_avg = sum(float(r[4]) for r in rows[1:4]) / 3
    assert float(rows[4][4]) == pytest.approx(mean_avg, abs=0.01)
    assert (out / "crossval_f1.png").stat().st_size > 1000
    assert "| fold 2 |" in (out / "crossval_f1.md").read_text()
    for fold, test_part in ((1, "P3"), (2, "P2"), (3, "P1")):
        import json

        result = json.loads((out / f"fold_{fold}" / "results.json").read_text())
        assert all(s.startswith(test_part) for s in result["subjects"]["test"])
    capsys.readouterr()
    assert main(argv) == 0  # second run reuses every fold
    assert capsys.readouterr().out.count("reusing") == 3
