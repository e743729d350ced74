"""Model card filling and Hub upload (offline: a clear failure that changes nothing locally)."""

from __future__ import annotations

import pytest

from sevnet_hf import SEVNetImageProcessor
from sevnet_hf.hub import check_model_folder, main, render_model_card


def test_model_card_is_filled_and_accepted_by_huggingface_hub(tiny_model):
    from huggingface_hub import ModelCard

    names = tiny_model.config.au_labels
    scores = {"f1": {n: 50.0 + i for i, n in enumerate(names)}, "f1_mean": 52.0}
    results = {
        "source": "synthetic",
        "dataset": "prepared/synthetic",
        "fold_name": "fold 1 (train part1+part2, test part3)",
        "images": {"train": 10, "validation": 2, "test": 5},
        "subjects": {"train": ["a"], "validation": ["b"], "test": ["c"]},
        "best_epoch": 1,
        "epochs_run": 2,
        "validation_f1_mean": 40.0,
        "test": scores,
        "frequency_prior": {"f1": {n: 20.0 for n in names}, "f1_mean": 20.0},
        "model_type": "sevnet",
    }
    text = render_model_card(tiny_model.config, results, repo_id="me/sevnet-test")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0" and data["metrics"] == ["f1"] and "facs" in data["tags"]
    assert data["datasets"] == ["sevnet-hf-synthetic-au-faces"]
    assert "| **52.0** |" in text and "frequency prior" in text and "me/sevnet-test" in text
    assert "AU1, AU2, AU4, AU6, AU12" in text
    assert ModelCard(render_model_card(tiny_model.config)).data.to_dict()["library_name"] == "transformers"


def test_push_offline_fails_clearly_and_changes_nothing(tiny_model, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    SEVNetImageProcessor(size=72, crop_size=64).save_pretrained(folder)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([str(folder), "--repo_id", "me/sevnet-test"]) == 1
    message = capsys.readouterr().out
    assert "me/sevnet-test" in message and "Nothing was changed locally" in message
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()} == before


def test_push_names_what_an_incomplete_folder_lacks(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json.*safetensors.*modeling_"):
        check_model_folder(tmp_path)


@pytest.mark.parametrize("shared", [True, False])
def test_model_card_describes_the_head_and_departures_from_the_config_with_no_machine_path(shared, tmp_path):
    from sevnet_hf import SEVNetConfig

    config = SEVNetConfig(
        shared_classifier=shared, backbone_output_stride=16, au_diversity_weight=1.0,
        text_encoder_name_or_path=str(tmp_path / "enc"),
    )
    history = [{"epoch": 3, "au_embedding_cosine": 0.08, "au_map_tv": 0.6, "dead_map_share": 0.0}]
    text = render_model_card(config, {"history": history})
    assert str(tmp_path) not in text and "/enc" in text  # the folder's name only
    assert ("one shared linear classifier (Eq. 7) scores every AU" in text) is shared
    assert ("one linear classifier per AU" in text) is not shared
    assert "output stride 16" in text and "`au_diversity_weight = 1`" in text
    assert "The paper's configuration: `shared_classifier=True`" in text
    assert "cosine of the AU embeddings 0.080" in text and "AU embeddings apart" in text
    strict = render_model_card(SEVNetConfig(au_diversity_weight=0.0))
    assert "This is the paper's configuration." in strict and "the paper's loss alone" in strict
    assert "extra backbone arguments" not in strict
    cut = render_model_card(SEVNetConfig(au_diversity_weight=0.0, backbone_feature_stage=3, visual_hidden_size=256))
    assert "cut after feature stage 3 (256 channels; the paper reads the last stage)" in cut
    assert "This is the paper's configuration." not in cut and "`backbone_feature_stage=None`" in cut
    torchvision_start = render_model_card(SEVNetConfig(backbone_kwargs={"zero_init_last": False}))
    assert 'extra backbone arguments `{"zero_init_last": false}`' in torchvision_start


def test_model_card_names_zero_shot_aus_the_bp4dplus_split_and_aus_absent_from_training():
    from sevnet_hf import SEVNetConfig

    config = SEVNetConfig(aus=[1, 2, 5], zero_shot_aus=["AU5"])
    text = render_model_card(config, {"source": "bp4dplus", "aus_without_training_positives": {"AU2": 0}})
    assert "AU5 was added after training from its description alone" in text
    assert "round-robin-by-sex subject split" in text and "not comparable" in text
    assert "AU2 never occurred in the training faces" in text
    plain = render_model_card(SEVNetConfig(aus=[1, 2]), {"source": "bp4d"})
    assert "added after training" not in plain and "round-robin" not in plain
