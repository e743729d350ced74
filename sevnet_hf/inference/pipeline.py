"""The ``au-detection`` pipeline task: ``pipeline("au-detection", model=FOLDER_OR_HUB_ID)`` after this module is
imported (``from sevnet_hf.inference import au_pipeline`` registers it), or :func:`au_pipeline`.

A still image (path, PIL image or array) goes through the usual pipeline steps: ``preprocess`` finds and aligns the
faces and runs the image processor, ``_forward`` runs the model on all faces of the image at once, ``postprocess``
returns one dict per face with the output columns of :mod:`.detect` (a single ``no_face`` / ``error`` dict when
there is none). Videos, folders and lists are streamed through the pipeline's :class:`~.detect.AUDetector` (same
model, processor and device), which batches faces across frames and files, and return one flat list of dicts.
"""

from __future__ import annotations

import os

import numpy as np
from transformers import AutoModelForImageClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .detect import AUDetector, FaceResult, expand_inputs, processor_from_config
from .video import shared_finder

TASK = "au-detection"


class AUDetectionPipeline(Pipeline):
    """Faces and their AU probabilities/occurrences for photos, folders and videos (see the module docstring).

    Extra arguments (at creation or per call): ``upsample`` (dlib upsampling for small faces), ``every`` (video
    frame step), ``output_attentions`` (adds each face's ``attention`` maps, AUs x h x w, to its dict).
    """

    _load_processor = False
    _load_image_processor = None
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            self.image_processor = processor_from_config(self.model.config)
        self.detector = AUDetector(
            self.model, device=self.device, batch_size=self._batch_size, processor=self.image_processor
        )

    def _sanitize_parameters(self, upsample=None, every=None, output_attentions=None, **kwargs):
        preprocess, forward, postprocess = {}, {}, {}
        if upsample is not None:
            preprocess["upsample"] = int(upsample)
        if every is not None:
            preprocess["every"] = int(every)
        if output_attentions is not None:
            forward["output_attentions"] = bool(output_attentions)
            postprocess["output_attentions"] = bool(output_attentions)
        return preprocess, forward, postprocess

    def __call__(self, inputs, **kwargs):
        """One still image: a list of face dicts. A video, folder or list of inputs: one flat list of face dicts."""
        if self._is_stream(inputs):
            preprocess, forward, _ = self._sanitize_parameters(**kwargs)
            preprocess = {**self._preprocess_params, **preprocess}
            forward = {**self._forward_params, **forward}
            self._set_upsample(preprocess.get("upsample"))
            attentions = forward.get("output_attentions", False)
            results = self.detector.detect(inputs, every=preprocess.get("every", 1), output_attentions=attentions)
            return [_as_dict(result, attentions) for result in results]
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _is_stream(inputs) -> bool:
        if isinstance(inputs, (list, tuple)):
            return True
        if isinstance(inputs, (str, os.PathLike)):
            sources, _ = expand_inputs([inputs])
            return os.path.isdir(inputs) or any(source.kind in ("video", "unknown") for source in sources)
        return False

    def _set_upsample(self, upsample: int | None) -> None:
        finder = self.detector.finder
        if upsample is not None and upsample != finder.upsample:
            self.detector.finder = shared_finder(upsample, finder.detector, finder.threshold, finder.landmark_model)

    def preprocess(self, image, upsample: int | None = None, every: int | None = None):
        self._set_upsample(upsample)
        entries = self.detector.prepare_image(image)
        faces = [aligned for _, aligned in entries if aligned is not None]
        pixel_values = self.image_processor(faces, return_tensors="pt")["pixel_values"] if faces else None
        return {"pixel_values": pixel_values, "results": [result for result, _ in entries]}

    def _forward(self, model_inputs, output_attentions: bool = False):
        pixel_values = model_inputs["pixel_values"]
        if pixel_values is None:
            return {"logits": None, "attentions": None, "results": model_inputs["results"]}
        dtype = next(self.model.parameters()).dtype
        outputs = self.model(
            pixel_values=pixel_values.to(dtype), output_attentions=output_attentions or None, return_dict=True
        )
        attentions = getattr(outputs, "au_attention_maps", None) if output_attentions else None
        return {"logits": outputs.logits, "attentions": attentions, "results": model_inputs["results"]}

    def postprocess(self, model_outputs, output_attentions: bool = False):
        results: list[FaceResult] = model_outputs["results"]
        logits = model_outputs["logits"]
        if logits is not None:
            probabilities = logits.float().sigmoid().numpy().astype(np.float64)
            maps = model_outputs["attentions"]
            faces = [result for result in results if result.status == "ok"]
            for index, result in enumerate(faces):
                result.probabilities = probabilities[index]
                result.occurrences = (probabilities[index] >= self.detector.thresholds).astype(np.int64)
                if maps is not None:
                    result.attention = maps[index].float().numpy()
        return [_as_dict(result, output_attentions) for result in results]


def _as_dict(result: FaceResult, with_attention: bool) -> dict:
    row = result.to_row()
    if with_attention:
        row["attention"] = result.attention
    return row


def register_pipeline() -> None:
    """Register the ``au-detection`` task with transformers (done when this module is imported)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is AUDetectionPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=AUDetectionPipeline, pt_model=AutoModelForImageClassification, type="image")


def au_pipeline(model, device=None, **kwargs) -> AUDetectionPipeline:
    """An ``au-detection`` pipeline for a saved folder, Hub id or loaded model (its processor is built from the
    config when none was saved)."""
    from transformers import pipeline

    register_pipeline()
    if not isinstance(model, (str, os.PathLike)) and kwargs.get("image_processor") is None:
        kwargs["image_processor"] = processor_from_config(model.config)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if device is None:
        device = -1 if not _cuda_available() else 0
    return pipeline(TASK, model=model, device=device, **kwargs)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


register_pipeline()
