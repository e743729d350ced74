"""Inference: AU detection on photos, folders and videos.

- :class:`AUDetector` (``detect.py``): the Python API (``detect`` -> list of :class:`FaceResult`,
  ``detect_dataframe`` -> pandas) and ``sevnet-hf detect`` (its options: ``arguments.py``).
- ``video.py``: streaming decoding and face tracking; ``overlay.py``: attention grids and annotated frames.
- ``pipeline.py``: the ``au-detection`` transformers pipeline task, registered when ``pipeline.py`` is imported
  (``from sevnet_hf.inference import au_pipeline`` or ``AUDetectionPipeline`` does it).

The names below load on first use, so ``import sevnet_hf.inference`` (and ``sevnet-hf detect --help``) imports
neither torch nor transformers' pipelines. Needs the ``faces`` extra (dlib, face-recognition-models, OpenCV);
pandas/pyarrow for DataFrames and Parquet.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AUDetector": "detect",
    "FaceResult": "detect",
    "read_results": "detect",
    "result_columns": "detect",
    "results_to_dataframe": "detect",
    "attention_grid": "overlay",
    "draw_detections": "overlay",
    "heatmap_overlay": "overlay",
    "model_view": "overlay",
    "AUDetectionPipeline": "pipeline",
    "au_pipeline": "pipeline",
    "register_pipeline": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
