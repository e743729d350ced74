"""Zero-shot AUs: add_aus (trained AUs unchanged, save/load, refusals), the detector's add_aus, the zeroshot
protocol end to end on a tiny set, and its metric and controls."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sevnet_hf import SEVNetForAUDetection
from tests.conftest import tiny_config

NEW = {
    "AU5": "Upper lid raiser: the levator lifts the upper eyelid and the eye opening widens.",
    "AU26": "Jaw drop: the jaw lowers and the mouth opens.",
}


def images(batch=3, seed=0):
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_add_aus_leaves_every_trained_au_bit_identical(tiny_model, tiny_text_encoder_dir):
    x = images()
    with torch.no_grad():
        before = tiny_model(x, output_attentions=True)
    added = tiny_model.add_aus(NEW, text_encoder=tiny_text_encoder_dir)
    with torch.no_grad():
        after = tiny_model(x, output_attentions=True)
    assert added == ["AU5", "AU26"]
    assert tiny_model.config.au_labels == ["AU1", "AU2", "AU4", "AU6", "AU12", "AU5", "AU26"]
    assert tiny_model.config.zero_shot_aus == ["AU5", "AU26"] and tiny_model.config.num_trained_aus == 5
    assert tiny_model.config.au_descriptions["AU26"] == NEW["AU26"]
    trained = before.logits.shape[1]
    assert torch.equal(after.logits[:, :trained], before.logits)
    assert torch.equal(after.au_attention_maps[:, :trained], before.au_attention_maps)
    assert torch.equal(after.au_embeddings[:trained], before.au_embeddings)
    assert after.logits.shape == (3, 7) and torch.isfinite(after.logits).all()
    # The new AUs have maps of their own (not a copy of a trained AU's) and sum to 1 like the others.
    torch.testing.assert_close(after.au_attention_maps.sum((-2, -1)), torch.ones(3, 7))
    assert not torch.equal(after.au_embeddings[5], after.au_embeddings[6])


def test_added_aus_save_and_load(tiny_model, tiny_text_encoder_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    tiny_model.add_aus(NEW, text_encoder=tiny_text_encoder_dir)
    x = images()
    with torch.no_grad():
        expected = tiny_model(x).logits
    tiny_model.save_pretrained(tmp_path)
    for loader in (SEVNetForAUDetection, AutoModelForImageClassification):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert loaded.config.zero_shot_aus == ["AU5", "AU26"]
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, expected)


def test_add_aus_from_a_json_file_and_clear_errors(tiny_model, tiny_text_encoder_dir, tmp_path):
    from sevnet_hf.offline_assets import write_random_text_encoder

    file = tmp_path / "new.json"
    file.write_text(json.dumps({"AU5": NEW["AU5"]}))
    assert tiny_model.add_aus(file, text_encoder=tiny_text_encoder_dir) == ["AU5"]
    with pytest.raises(ValueError, match="already has AU5"):
        tiny_model.add_aus({"AU5": "again"}, text_encoder=tiny_text_encoder_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        tiny_model.add_aus(bad, text_encoder=tiny_text_encoder_dir)
    wider = write_random_text_encoder(tmp_path / "wide", 24)
    with pytest.raises(ValueError, match="24 wide"):
        tiny_model.add_aus({"AU9": "Nose wrinkler."}, text_encoder=wider)


@pytest.mark.parametrize("fields", [{"shared_classifier": False}, {"classifier_per_au_bias": True}])
def test_add_aus_refuses_models_with_per_au_parameters(tiny_text_encoder_dir, fields):
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(**fields), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    with pytest.raises(ValueError, match="per AU|a bias per AU"):
        model.add_aus(NEW, text_encoder=tiny_text_encoder_dir)
    assert model.config.num_labels == 5  # nothing changed


def test_detector_scores_added_aus(tiny_model_dir, tiny_text_encoder_dir, tmp_path):
    from sevnet_hf.inference.detect import AUDetector

    file = tmp_path / "new.json"
    file.write_text(json.dumps(NEW))
    detector = AUDetector(tiny_model_dir, device="cpu", add_aus=str(file), text_encoder=tiny_text_encoder_dir)
    assert list(detector.au_labels[-2:]) == ["AU5", "AU26"] and len(detector.thresholds) == 7


def test_detect_command_names_the_trained_au_each_added_au_lands_near(
    tiny_model_dir, tiny_text_encoder_dir, tmp_path, capsys
):
    from skimage import data

    from sevnet_hf.inference import detect as detect_module

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    file = tmp_path / "new.json"
    file.write_text(json.dumps(NEW))
    out = tmp_path / "aus.csv"
    argv = [str(photo), "--model", str(tiny_model_dir), "--output", str(out), "--progress", "false"]
    assert detect_module.main([*argv, "--add_aus", str(file), "--text_encoder", tiny_text_encoder_dir]) == 0
    note = next(line for line in capsys.readouterr().err.splitlines() if "landed nearest" in line)
    assert re.search(r"AU5 -> AU(1|2|4|6|12) -?[01]\.\d\d, AU26 -> AU(1|2|4|6|12) -?[01]\.\d\d", note), note
    header = out.read_text().splitlines()[0]
    assert "AU5_prob" in header and "AU26_prob" in header


def test_roc_auc_matches_the_rank_statistic():
    from sklearn.metrics import roc_auc_score

    from sevnet_hf.training.zeroshot import roc_auc

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300).astype(float)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounded: many ties
    labels[:10] = -1  # unknown labels are left out
    known = labels >= 0
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels[known], scores[known]))
    assert np.isnan(roc_auc(scores, np.zeros(300)))


def test_controls_give_held_out_aus_other_texts():
    from sevnet_hf.training.zeroshot import control_descriptions

    texts = {"AU2": "brow", "AU7": "eye", "AU26": "jaw", "AU1": "inner brow"}
    unrelated = {"ears": "the ears", "neck": "the neck"}
    controls = control_descriptions(["AU2", "AU7", "AU26"], texts, ["AU1"], unrelated)
    assert list(controls) == ["descriptions", "shuffled", "unrelated:ears", "unrelated:neck"]
    assert controls["descriptions"] == {"AU2": "brow", "AU7": "eye", "AU26": "jaw"}
    assert controls["shuffled"] == {"AU2": "eye", "AU7": "jaw", "AU26": "brow"}
    assert controls["unrelated:ears"] == {"AU2": "the ears", "AU7": "the ears", "AU26": "the ears"}
    assert set(controls["unrelated:neck"].values()) == {"the neck"}
    assert control_descriptions(["AU2"], texts, ["AU1"], unrelated)["shuffled"] == {"AU2": "inner brow"}


def test_unrelated_texts_come_from_the_set_a_file_or_one_text(tmp_path):
    from sevnet_hf.training.zeroshot import UNRELATED_DESCRIPTIONS, ZeroShotArguments, unrelated_texts

    assert unrelated_texts(ZeroShotArguments()) == UNRELATED_DESCRIPTIONS
    assert unrelated_texts(ZeroShotArguments(unrelated_description="the ears")) == {"custom": "the ears"}
    file = tmp_path / "controls.json"
    file.write_text(json.dumps({"_about": "comment", "ears": "the ears", "sky": "the sky"}))
    assert unrelated_texts(ZeroShotArguments(unrelated_descriptions=str(file))) == {
        "ears": "the ears",
        "sky": "the sky",
    }
    file.write_text(json.dumps({"ears": "the ears", "empty": "  "}))
    with pytest.raises(ValueError, match=r"controls.json.*\['empty'\]"):
        unrelated_texts(ZeroShotArguments(unrelated_descriptions=str(file)))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        unrelated_texts(ZeroShotArguments(unrelated_descriptions=str(tmp_path / "missing.json")))


def test_zeroshot_command_stops_on_a_bad_control_file_before_making_anything(tmp_path):
    from sevnet_hf.training.zeroshot import main

    bad = tmp_path / "controls.json"
    bad.write_text("{not json")
    out = tmp_path / "zs"
    with pytest.raises(SystemExit, match=r"--unrelated_descriptions: .*controls.json.*line 1"):
        main(["--output_dir", str(out), "--unrelated_descriptions", str(bad), "--preset", "quick"])
    assert not (out / "data").exists()


def test_summary_averages_the_control_texts_and_reads_the_margins():
    from sevnet_hf.training.zeroshot import summary_table

    def scores(auc, nearest=None):
        row = {"roc_auc": auc, "f1_at_0.5": 50.0, "f1_at_base_rate": 50.0, "f1_frequency_prior": 10.0}
        if nearest:
            row.update(nearest_trained_au=nearest, nearest_cosine=0.9, nearest_trained_roc_auc=0.6)
        return row

    def seed(own, shuffled, texts, trained):
        out = {"descriptions": {"AU2": scores(own[0], "AU1"), "AU26": scores(own[1], "AU25"), "AU1": scores(trained)}}
        out["shuffled"] = {"AU2": scores(shuffled, "AU25"), "AU26": scores(shuffled, "AU1")}
        for name, value in texts.items():
            out[f"unrelated:{name}"] = {"AU2": scores(value, "AU25"), "AU26": scores(value, "AU25")}
        out["best_trained"] = {"AU2": {"au": "AU1", "roc_auc": 0.9}, "AU26": {"au": "AU1", "roc_auc": 0.7}}
        return out

    per_seed = {
        0: seed((0.8, 0.9), 0.6, {"ears": 0.8, "neck": 0.5}, 0.95),
        1: seed((0.7, 0.8), 0.5, {"ears": 0.6, "neck": 0.4}, 0.85),
    }
    table, headline = summary_table(per_seed, ["AU2", "AU26"])
    assert headline["descriptions"] == pytest.approx(0.8)
    assert headline["shuffled"] == pytest.approx(0.55)
    assert headline["unrelated_per_text"] == pytest.approx({"ears": 0.7, "neck": 0.45})
    assert headline["unrelated"] == pytest.approx(0.575) and headline["unrelated_max"] == pytest.approx(0.7)
    assert headline["margin_over_unrelated"] == pytest.approx(0.225)
    assert headline["margin_over_shuffled"] == pytest.approx(0.25)
    assert headline["best_trained_reference"] == pytest.approx(0.8) and headline["trained_aus"] == pytest.approx(0.9)
    assert headline["per_seed"][1] == pytest.approx(
        {"descriptions": 0.75, "shuffled": 0.5, "unrelated": 0.5, "unrelated_max": 0.6}
    )
    assert "AU2     unrelated:neck" in table and "AU1:0.90 AU1:0.90" in table and "AU1     trained" in table
    assert "supervised_reference" not in headline and "trained on its labels" not in table  # only when trained

    per_seed[0]["supervised"] = {"AU2": scores(0.95), "AU26": scores(0.85)}
    per_seed[1]["supervised"] = {"AU2": scores(0.75), "AU26": scores(0.65)}
    table, headline = summary_table(per_seed, ["AU2", "AU26"])
    assert headline["supervised_reference"] == pytest.approx(0.8)
    assert headline["per_seed"][0]["supervised"] == pytest.approx(0.9)
    assert headline["descriptions"] == pytest.approx(0.8)  # the conditions' figures do not change
    assert "AU26    trained on its labels       0.750" in table
    del per_seed[1]["supervised"]
    with pytest.raises(ValueError, match="some seeds"):  # a reference from some seeds only would mislead
        summary_table(per_seed, ["AU2", "AU26"])


def test_supervised_reference_must_split_the_subjects_as_the_zero_shot_model(monkeypatch, tmp_path):
    from sevnet_hf.training import demo
    from sevnet_hf.training.zeroshot import ZeroShotArguments, supervised_training

    split = {"train": ["F001", "F002"], "validation": ["F003"], "test": ["F004"]}
    seen = []

    def fake_training(train_args):  # records what would be trained and returns its split
        seen.append(train_args)
        return {"subjects": dict(split, test=["F005"]) if train_args.seed == 1 else split}, 0

    monkeypatch.setattr(demo, "_train_or_reuse", fake_training)
    args = ZeroShotArguments(seed=0, holdout_aus="2,26")
    folder, results = supervised_training(args, tmp_path / "data", tmp_path, "encoder", split)
    assert folder == tmp_path / "supervised_seed0" / "model" and results["subjects"] == split
    assert not seen[0].exclude_aus  # every AU, the held-out ones included
    args.seed = 1
    with pytest.raises(RuntimeError, match="split its subjects differently"):
        supervised_training(args, tmp_path / "data", tmp_path, "encoder", split)


def test_text_check_finds_the_au_description_a_control_text_repeats(tiny_text_encoder_dir):
    from sevnet_hf.text_encoder import load_text_encoder
    from sevnet_hf.training.zeroshot import text_check

    au_texts = {"AU1": "The inner brows rise.", "AU12": "The lip corners pull up.", "AU26": "The jaw drops."}
    check = text_check(load_text_encoder(tiny_text_encoder_dir), {"copy": au_texts["AU12"]}, au_texts)
    assert check["copy"]["nearest_au"] == "AU12" and check["copy"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= check["au_descriptions_nearest_mean"] < 1.0


def test_zero_shot_neighbours_name_the_trained_au_an_added_one_lands_near(tiny_model, tiny_text_encoder_dir):
    assert tiny_model.zero_shot_neighbours() == {}
    texts = tiny_model.config.au_descriptions
    tiny_model.train()
    tiny_model.add_aus({"AU5": texts["AU4"], "AU26": NEW["AU26"]}, text_encoder=tiny_text_encoder_dir)
    neighbours = tiny_model.zero_shot_neighbours()
    assert tiny_model.training and list(neighbours) == ["AU5", "AU26"]  # train mode kept; eval-mode embeddings read
    assert neighbours["AU5"][0] == "AU4" and neighbours["AU5"][1] > 0.9  # AU4's own text: AU4's embedding
    assert neighbours["AU26"][0] in tiny_model.config.au_labels[:5] and -1.0 <= neighbours["AU26"][1] <= 1.0
    tiny_model.eval()
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(tiny_model(images()).au_embeddings, dim=-1)
    assert neighbours["AU5"][1] == pytest.approx(float(embeddings[5] @ embeddings[2]), abs=1e-5)
    assert neighbours == tiny_model.zero_shot_neighbours()  # twice the same (no dropout in the reading)


@pytest.mark.slow
def test_zeroshot_command_end_to_end_on_a_tiny_set(tmp_path, tiny_text_encoder_dir, capsys):
    from sklearn.metrics import roc_auc_score
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from sevnet_hf.cli import main
    from sevnet_hf.data.schema import load_prepared
    from sevnet_hf.training.zeroshot import REFERENCES, UNRELATED_DESCRIPTIONS

    out = tmp_path / "zs"
    argv = ["zeroshot", "--output_dir", str(out), "--preset", "quick", "--epochs", "1", "--max_steps_per_epoch", "3"]
    argv += ["--seeds", "0", "--holdout_aus", "2,26", "--text_encoder", tiny_text_encoder_dir, "--progress", "false"]
    argv += ["--image_size", "64", "--supervised_reference", "true"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "AU2     descriptions" in printed and "AU1     trained" in printed  # held-out and trained AUs printed
    summary = json.loads((out / "zeroshot.json").read_text())
    assert summary["holdout_aus"] == ["AU2", "AU26"]
    trained = json.loads((out / "train_seed0" / "model" / "config.json").read_text())
    conditions = ["descriptions", "shuffled", *(f"unrelated:{name}" for name in UNRELATED_DESCRIPTIONS)]
    assert [c for c in summary["per_seed"]["0"] if c not in REFERENCES] == conditions
    for condition in conditions:
        for au in ("AU2", "AU26"):
            scores = summary["per_seed"]["0"][condition][au]
            assert 0.0 <= scores["roc_auc"] <= 1.0 and 0.0 <= scores["base_rate"] <= 1.0
            assert scores["nearest_trained_au"] in trained["id2label"].values()
            assert -1.0 <= scores["nearest_cosine"] <= 1.0 + 1e-6 and 0.0 <= scores["nearest_trained_roc_auc"] <= 1.0
    for au in ("AU2", "AU26"):  # the best trained AU's logit is at least the nearest one's, in every condition
        best = summary["per_seed"]["0"]["best_trained"][au]
        assert best["au"] in trained["id2label"].values()
        for condition in conditions:
            assert best["roc_auc"] >= summary["per_seed"]["0"][condition][au]["nearest_trained_roc_auc"] - 1e-12
    headline = summary["headline_mean_roc_auc"]
    assert set(headline["unrelated_per_text"]) == set(UNRELATED_DESCRIPTIONS)
    assert headline["unrelated_max"] >= headline["unrelated"]
    assert summary["text_check"]["ears_scalp"]["nearest_au"] in summary["per_seed"]["0"]["descriptions"]
    assert "AU2" not in trained["id2label"].values() and "AU26" not in trained["id2label"].values()
    assert "AU1" in summary["per_seed"]["0"]["descriptions"]  # trained AUs are reported too

    # The supervised reference: a model of the same recipe trained with AU2 and AU26, scored on the same test faces.
    supervised_dir = out / "supervised_seed0"
    results = json.loads((supervised_dir / "results.json").read_text())
    assert results["subjects"] == json.loads((out / "train_seed0" / "results.json").read_text())["subjects"]
    model = AutoModelForImageClassification.from_pretrained(supervised_dir / "model").eval()
    assert {"AU2", "AU26"} <= set(model.config.id2label.values())
    test = load_prepared(out / "data")
    test = test.select([i for i, s in enumerate(test["subject"]) if s in set(results["subjects"]["test"])])
    processor = AutoImageProcessor.from_pretrained(supervised_dir / "model")
    with torch.no_grad():
        faces = processor([np.asarray(face.convert("RGB")) for face in test["image"]])
        probabilities = torch.sigmoid(model(**faces).logits).numpy()  # as the command scores them (ties included)
    for au in ("AU2", "AU26"):
        labels = np.asarray(test[au])
        expected = roc_auc_score(labels[labels >= 0], probabilities[:, model.config.au_labels.index(au)][labels >= 0])
        assert summary["per_seed"]["0"]["supervised"][au]["roc_auc"] == pytest.approx(expected, abs=1e-6)
    assert headline["supervised_reference"] == pytest.approx(
        np.mean([summary["per_seed"]["0"]["supervised"][au]["roc_auc"] for au in ("AU2", "AU26")])
    )
    assert "AU2     trained on its labels" in printed


def test_shipped_descriptions_name_an_area_and_a_motion():
    from sevnet_hf.au_descriptions import load_au_descriptions

    numbers = [*range(1, 29), 43]
    texts = load_au_descriptions([n for n in numbers if n not in (3, 8, 19, 21)])
    areas = ("brow", "eye", "lid", "cheek", "nose", "lip", "mouth", "chin", "jaw", "teeth", "face")
    motions = ("pull", "lift", "raise", "rise", "lower", "press", "push", "tighten", "open", "close", "drop", "part",
               "suck", "stretch", "pucker", "deepen", "wrinkle", "move", "widen", "narrow", "separate", "lowered")
    for label, text in texts.items():
        lowered = text.lower()
        assert any(a in lowered for a in areas), f"{label} names no facial area: {text}"
        assert any(m in lowered for m in motions), f"{label} names no motion: {text}"


def test_a_new_au_set_for_fine_tuning_has_no_zero_shot_aus_left(tiny_model, tiny_text_encoder_dir):
    tiny_model.add_aus(NEW, text_encoder=tiny_text_encoder_dir)
    tiny_model.set_au_descriptions(text_encoder=tiny_text_encoder_dir, aus=[1, 5, 26])
    assert tiny_model.config.zero_shot_aus is None and tiny_model.config.num_trained_aus == 3
    with torch.no_grad():
        assert tiny_model(images()).logits.shape == (3, 3)
