"""Shared fixtures: a tiny random BERT text encoder built here (no download) and tiny SEV-Net configs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))



@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a machine shared with other jobs OpenMP threads that
    spin at barriers make them several times slower; restores the setting for other test files afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_text_encoder_dir(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT (width 32) with a WordPiece vocabulary of the descriptions' words."""
    from sevnet_hf.offline_assets import write_random_text_encoder

    return write_random_text_encoder(tmp_path_factory.mktemp("tiny_bert"))


def tiny_config(**overrides):
    from sevnet_hf import SEVNetConfig

    fields = dict(
        image_size=64,
        text_hidden_size=32,
        inter_au_hidden_size=48,
        inter_au_num_heads=6,
        inter_au_intermediate_size=64,
        inter_au_dropout=0.0,
        aus=[1, 2, 4, 6, 12],
    )
    fields.update(overrides)
    return SEVNetConfig(**fields)


@pytest.fixture
def tiny_model(tiny_text_encoder_dir):
    """A SEV-Net built through from_backbones with the tiny text encoder and a random resnet18."""
    from sevnet_hf import SEVNetForAUDetection

    torch.manual_seed(0)
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_text_encoder_dir, tmp_path_factory):
    """A tiny SEV-Net (AUs 1 2 4 6 12) saved with save_pretrained and its image processor (72 -> 64 px)."""
    from sevnet_hf import SEVNetForAUDetection, SEVNetImageProcessor

    torch.manual_seed(0)
    model = SEVNetForAUDetection.from_backbones(
        tiny_config(), backbone_weights=None, text_encoder=tiny_text_encoder_dir
    )
    folder = tmp_path_factory.mktemp("tiny_sevnet")
    model.save_pretrained(folder)
    SEVNetImageProcessor(size=72, crop_size=64).save_pretrained(folder)
    return folder
