"""Inference: AU detection on photos, folders and videos.

- :class:`AUDetector` (``detect.py``): the Python API (``detect`` -> list of :class:`FaceResult`,
  ``detect_dataframe`` -> pandas) and ``sevnet-hf detect``.
- ``video.py``: streaming decoding and face tracking; ``overlay.py``: attention grids and annotated frames.
- ``pipeline.py``: the ``au-detection`` transformers pipeline task, registered when this package is imported.

Needs the ``faces`` extra (dlib, face-recognition-models, OpenCV); pandas/pyarrow for DataFrames and Parquet.
"""

from .detect import AUDetector, FaceResult, read_results, result_columns, results_to_dataframe
from .overlay import attention_grid, draw_detections, heatmap_overlay, model_view
from .pipeline import AUDetectionPipeline, au_pipeline, register_pipeline

register_pipeline()

__all__ = [
    "AUDetectionPipeline",
    "AUDetector",
    "FaceResult",
    "attention_grid",
    "au_pipeline",
    "draw_detections",
    "heatmap_overlay",
    "model_view",
    "read_results",
    "register_pipeline",
    "result_columns",
    "results_to_dataframe",
]
