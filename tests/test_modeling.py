"""SEV-Net's modeling: Eq. 4-7, the frozen AU text table, save/load and trust_remote_code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sevnet_hf import SEVNetConfig, SEVNetForAUDetection, SEVNetImageProcessor, SEVNetModel, cross_modality_attention
from sevnet_hf.text_encoder import load_text_encoder
from tests.conftest import tiny_config


def images(batch: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_outputs(tiny_model):
    out = tiny_model(images(), output_attentions=True)
    assert out.logits.shape == (3, 5)
    assert out.visual_features.shape == (3, 512, 2, 2)
    assert out.au_embeddings.shape == (5, 512)
    assert out.au_attention_maps.shape == (3, 5, 2, 2)
    assert tiny_model(images()).au_attention_maps is None


def test_attention_maps_are_distributions_and_match_eq_4_5(tiny_model):
    out = tiny_model(images(), output_attentions=True)
    maps = out.au_attention_maps
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(-1, -2)), torch.ones(3, 5))
    # Recompute Eq. 4-5 by hand from the returned V and w̄.
    v = out.visual_features.flatten(2)  # B x C x L
    w = out.au_embeddings  # N x C
    cos = torch.einsum("bcl,nc->bnl", v, w) / (v.norm(dim=1, keepdim=True) * w.norm(dim=1)[None, :, None])
    z = cos.clamp(min=0)
    expected = z / z.sum(-1, keepdim=True)
    torch.testing.assert_close(maps.flatten(2), expected, rtol=1e-4, atol=1e-6)


def test_logits_are_one_shared_linear_function_of_attended_features(tiny_model):
    out = tiny_model(images(), output_attentions=True)
    v = out.visual_features.flatten(2)
    attended = torch.einsum("bnl,bcl->bnc", out.au_attention_maps.flatten(2), v)  # Eq. 6
    classifier = tiny_model.classifier
    assert classifier.weight.shape == (1, 512)  # one classifier for all AUs
    expected = attended @ classifier.weight[0] + classifier.bias[0]
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)


def test_per_au_classifier_option():
    model = SEVNetForAUDetection(tiny_config(shared_classifier=False)).eval()
    assert model.classifier.weight.shape == (5, 512)
    assert model(images()).logits.shape == (3, 5)


def test_unknown_labels_are_left_out_of_the_loss(tiny_model):
    tiny_model.config.au_diversity_weight = 0.0  # Eq. 7 alone (the diversity term: test_attention_health.py)
    x = images()
    logits = tiny_model(x).logits
    labels = torch.tensor([[1, 0, 9, -1, 1], [0, -1, 1, 0, 9], [1, 1, 0, 0, 0]], dtype=torch.float)
    known = (labels == 0) | (labels == 1)
    bce = F.binary_cross_entropy_with_logits(logits, labels.clamp(0, 1), reduction="none")
    expected = (bce * known).sum() / 3  # Eq. 7: sum over AUs, mean over images
    loss = tiny_model(x, labels=labels).loss
    torch.testing.assert_close(loss, expected)
    # Any value in an unknown slot (9 or negative) gives the same loss.
    other = labels.clone()
    other[labels == 9] = -5
    other[labels == -1] = 9
    torch.testing.assert_close(tiny_model(x, labels=other).loss, loss)


def test_no_gradient_reaches_the_text_encoder(tiny_text_encoder_dir):
    encoder = load_text_encoder(tiny_text_encoder_dir)
    calls = []
    encoder.model.register_forward_hook(lambda *args: calls.append(1))
    model = SEVNetForAUDetection.from_backbones(tiny_config(), backbone_weights=None, text_encoder=encoder)
    assert len(calls) == 1  # the table is computed once, at construction
    model.train()
    labels = torch.randint(0, 2, (3, 5)).float()
    model(images(), labels=labels).loss.backward()
    assert len(calls) == 1  # never run in the training step
    assert all(p.grad is None and not p.requires_grad for p in encoder.model.parameters())
    assert "au_text_embeddings" not in dict(model.named_parameters())
    assert model.sevnet.text_projection.weight.grad is not None  # the Inter-AU side does learn


def test_au_text_table_is_saved_and_prediction_needs_no_text_encoder(tiny_model, tmp_path):
    assert tiny_model.has_au_text_embeddings
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["au_descriptions"]["AU1"].startswith("Inner brow raiser")
    # Loading needs no text encoder: point the config at a folder that does not exist.
    loaded = SEVNetForAUDetection.from_pretrained(tmp_path, text_encoder_name_or_path=str(tmp_path / "absent")).eval()
    x = images()
    torch.testing.assert_close(loaded(x).logits, tiny_model(x).logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded.au_text_embeddings, tiny_model.au_text_embeddings)


def test_checkpoint_holds_no_text_encoder_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    size = (tmp_path / "model.safetensors").stat().st_size
    trainable = sum(p.numel() * p.element_size() for p in tiny_model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in tiny_model.buffers())
    assert size <= 1.10 * (trainable + buffers)
    assert size >= trainable


def test_fresh_process_trust_remote_code_load_gives_identical_outputs(tiny_model, tmp_path):
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    SEVNetImageProcessor(size=72, crop_size=64).save_pretrained(folder)
    assert {"modeling_sevnet.py", "configuration_sevnet.py", "protocols.py"} <= {p.name for p in folder.iterdir()}
    x = images()
    torch.save({"x": x, "logits": tiny_model(x).logits.detach()}, tmp_path / "ref.pt")
    script = f"""
import sys
sys.modules["sevnet_hf"] = None  # the package must not be importable
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
bare = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
ref = torch.load({str(tmp_path / "ref.pt")!r})
assert type(model).__name__ == "SEVNetForAUDetection", type(model)
assert type(bare).__name__ == "SEVNetModel", type(bare)  # AutoModel: the bare model, as transformers maps it
assert processor.square_sizes() == (72, 64), processor.square_sizes()
print("MAXDIFF", float((model(ref["x"]).logits - ref["logits"]).abs().max()))
print("BAREDIFF", float((bare(ref["x"]).attended_features - model.sevnet(ref["x"]).attended_features).abs().max()))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MAXDIFF 0.0" in result.stdout
    assert "BAREDIFF 0.0" in result.stdout


def test_auto_classes_in_process(tiny_model, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    tiny_model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SEVNetConfig)
    # transformers' convention: AutoModel gives the bare model (the head's "sevnet." weights), the task class the head.
    bare = AutoModel.from_pretrained(tmp_path).eval()
    assert type(bare) is SEVNetModel
    head = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(head) is SEVNetForAUDetection
    x = images()
    with torch.no_grad():
        assert torch.equal(bare(x).attended_features, tiny_model.sevnet(x).attended_features)
        assert torch.equal(head(x).logits, tiny_model(x).logits)


def test_zero_attention_maps_are_uniform_and_keep_gradients():
    visual = torch.rand(2, 8, 3, 3)  # non-negative like post-ReLU features
    embeddings = torch.stack([-torch.ones(8), torch.rand(8)]).requires_grad_(True)  # AU 0: cosine <= 0 everywhere
    attended, alpha = cross_modality_attention(visual, embeddings)
    assert torch.isfinite(alpha).all() and torch.isfinite(attended).all()
    torch.testing.assert_close(alpha[:, 0], torch.full((2, 9), 1 / 9))
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 2))
    attended.sum().backward()
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("bias_init", [1.0])
def test_projection_bias_init_keeps_attention_maps_alive(bias_init):
    """With the positive projection offset no (image, AU) map is all-zero at initialisation (the measured hazard)."""
    torch.manual_seed(0)
    model = SEVNetForAUDetection(tiny_config(au_projection_bias_init=bias_init)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    with torch.no_grad():
        out = model(torch.randn(16, 3, 64, 64))
        v = out.visual_features.flatten(2)
        cos = torch.einsum("bcl,nc->bnl", F.normalize(v, dim=1), F.normalize(out.au_embeddings, dim=1))
    assert (cos.clamp(min=0).sum(-1) > 0).all()


def test_set_au_descriptions_changes_the_au_set_and_keeps_weights(tiny_model, tiny_text_encoder_dir):
    backbone_before = tiny_model.sevnet.backbone.conv1.weight.clone()
    inter_before = tiny_model.sevnet.text_projection.weight.clone()
    tiny_model.set_au_descriptions(text_encoder=tiny_text_encoder_dir, aus=[9, 25, 26])
    assert tiny_model.config.au_labels == ["AU9", "AU25", "AU26"]
    assert tiny_model.au_text_embeddings.shape == (3, 32) and tiny_model.has_au_text_embeddings
    assert tiny_model(images()).logits.shape == (3, 3)
    torch.testing.assert_close(tiny_model.sevnet.backbone.conv1.weight, backbone_before)
    torch.testing.assert_close(tiny_model.sevnet.text_projection.weight, inter_before)
    with pytest.raises(ValueError, match="AU99"):
        tiny_model.set_au_descriptions(text_encoder=tiny_text_encoder_dir, aus=[1, 99])


def test_custom_descriptions_dict_and_file(tiny_model, tiny_text_encoder_dir, tmp_path):
    texts = {f"AU{n}": f"brow {n} raised upward" for n in (1, 2, 4, 6, 12)}
    tiny_model.set_au_descriptions(texts, text_encoder=tiny_text_encoder_dir)
    table_dict = tiny_model.au_text_embeddings.clone()
    assert tiny_model.config.au_descriptions["AU4"] == "brow 4 raised upward"
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({k.replace("AU", "au_0"): v for k, v in texts.items()}))
    tiny_model.set_au_descriptions(path, text_encoder=tiny_text_encoder_dir)
    torch.testing.assert_close(tiny_model.au_text_embeddings, table_dict)
    bad = tmp_path / "bad.json"
    bad.write_text('{"AU1": "x",')
    with pytest.raises(ValueError, match="bad.json"):
        tiny_model.set_au_descriptions(bad, text_encoder=tiny_text_encoder_dir)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(inter_au_hidden_size=1024, inter_au_num_heads=6), "divisible"),
        (dict(thresholds=[0.5, 0.5]), "thresholds"),
        (dict(text_pooling="sum"), "text_pooling"),
        (dict(aus=[1, 1]), "unique"),
        (dict(au_descriptions={"AU1": "x"}), "AU2"),
        (dict(inter_au_dropout=1.5), "inter_au_dropout"),
    ],
)
def test_invalid_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_backbone_weights_from_local_file_and_clear_offline_error(tmp_path, tiny_text_encoder_dir, monkeypatch):
    import timm
    from safetensors.torch import save_file

    donor = timm.create_model("resnet18", pretrained=False)  # with its fc head, like a real checkpoint
    save_file(donor.state_dict(), str(tmp_path / "resnet18.safetensors"))
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(), backbone_weights=tmp_path / "resnet18.safetensors", text_encoder=tiny_text_encoder_dir
    )
    torch.testing.assert_close(model.sevnet.backbone.conv1.weight, donor.conv1.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        SEVNetForAUDetection.from_backbones(
            tiny_config(), backbone_weights=tmp_path / "missing.pth", text_encoder=tiny_text_encoder_dir
        )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="backbone_weights=PATH_TO_FILE"):
        SEVNetForAUDetection.from_backbones(tiny_config(), backbone_weights="timm", text_encoder=tiny_text_encoder_dir)
    with pytest.raises(OSError, match="local folder"):
        SEVNetForAUDetection.from_backbones(tiny_config(), backbone_weights=None, text_encoder=str(tmp_path / "nope"))


def test_trainer_runs_two_steps(tiny_model, tmp_path):
    from transformers import Trainer, TrainingArguments

    class Tiny(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {
                "pixel_values": torch.randn(3, 64, 64, generator=g),
                "labels": torch.randint(0, 2, (5,), generator=g).float(),
            }

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=tiny_model.train(), args=args, train_dataset=Tiny())
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_image_processor_accepts_common_inputs(tmp_path):
    import numpy as np
    from PIL import Image

    processor = SEVNetImageProcessor(size=72, crop_size=64)
    rgb = (np.random.default_rng(0).random((90, 80, 3)) * 255).astype(np.uint8)
    inputs = [
        Image.fromarray(rgb),
        rgb,
        rgb[..., 0],  # grayscale
        np.concatenate([rgb, np.full((90, 80, 1), 255, np.uint8)], axis=-1),  # RGBA
        rgb.astype(np.uint16) * 257,  # 16-bit
        torch.from_numpy(rgb).permute(2, 0, 1),  # C x H x W uint8
        Image.fromarray(rgb).convert("L"),
    ]
    batch = processor(inputs)["pixel_values"]
    assert batch.shape == (7, 3, 64, 64)
    torch.testing.assert_close(batch[1], batch[0])
    torch.testing.assert_close(batch[4], batch[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(batch[5], batch[0])
    torch.testing.assert_close(batch[3], batch[0])
    processor.save_pretrained(tmp_path)
    reloaded = SEVNetImageProcessor.from_pretrained(tmp_path)
    assert reloaded.square_sizes() == (72, 64)
    with pytest.raises(ValueError, match="crop_size"):
        SEVNetImageProcessor(size=100, crop_size=128)
    assert Path(tmp_path / "preprocessor_config.json").is_file()


def test_au_embedding_cache_in_inference_follows_weight_changes(tiny_model):
    with torch.no_grad():
        first = tiny_model.sevnet.compute_au_embeddings()
        assert tiny_model.sevnet.compute_au_embeddings() is first  # cached in eval + no_grad
        tiny_model.sevnet.au_projection.bias.add_(1.0)  # an in-place update (as an optimizer step does)
        second = tiny_model.sevnet.compute_au_embeddings()
    torch.testing.assert_close(second, first + 1.0)
    tiny_model.set_au_text_embeddings(torch.randn_like(tiny_model.au_text_embeddings))
    with torch.no_grad():
        assert not torch.equal(tiny_model.sevnet.compute_au_embeddings(), second)
    tiny_model.train()
    assert tiny_model.sevnet.compute_au_embeddings().requires_grad  # never cached while training


def test_inference_compiles_to_one_graph_without_the_cache():
    torch.manual_seed(0)
    model = SEVNetForAUDetection(tiny_config()).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    with torch.no_grad():
        expected = model(images()).logits
        for _ in range(2):
            torch.testing.assert_close(compiled(images()).logits, expected)


def test_per_au_bias_option_adds_one_bias_per_au_to_the_shared_function(tiny_text_encoder_dir):
    torch.manual_seed(0)
    model = SEVNetForAUDetection(tiny_config(classifier_per_au_bias=True)).eval()
    model.set_au_text_embeddings(torch.randn(5, 32))
    with torch.no_grad():
        model.classifier.au_bias.copy_(torch.arange(5.0))
        out = model(images(), output_attentions=True)
    attended = torch.einsum("bnl,bcl->bnc", out.au_attention_maps.flatten(2), out.visual_features.flatten(2))
    shared = attended @ model.classifier.weight[0] + model.classifier.bias[0]
    torch.testing.assert_close(out.logits, shared + torch.arange(5.0), rtol=1e-4, atol=1e-5)
    model.set_au_descriptions(text_encoder=tiny_text_encoder_dir, aus=[9, 25])
    assert model.classifier.au_bias.shape == (2,) and model(images()).logits.shape == (3, 2)
