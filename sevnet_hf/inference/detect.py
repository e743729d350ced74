"""AU detection on photos, folders and videos: ``sevnet-hf detect INPUT... --model PATH_OR_HUB_ID`` and
:class:`AUDetector`.

Per frame: decode -> find faces (dlib; on videos, detection + landmark tracking, see :mod:`.video`) -> five
landmarks -> align to 256 x 256 with the dataset-preparation code (:func:`sevnet_hf.data.align.align_face`) ->
the model's image processor (resize + centre crop) -> the model, in batches -> per-AU probabilities, and
occurrences (probability >= the AU's threshold: ``config.decision_thresholds``, 0.5 where none were set).

Output columns (one row per face per processed frame; a frame or file without a usable face gets one row too):

- ``source``: file path as found (or ``<input N>`` for in-memory images); ``frame``: frame index in the video
  (0 for photos); ``timestamp``: seconds from the video start (``frame / fps``; empty for photos).
- ``face``: index of the face within the frame (0, 1, ...; empty when there is none); ``track``: track id on videos
  (stable while a face is followed; on photos the same as ``face``).
- ``status``: ``ok``, ``no_face`` (nothing found) or ``error`` (file unreadable; ``message`` says why).
- ``detection``: ``detected`` (full-frame detector), ``verified`` (detector on a crop around a tracked face) or
  ``tracked`` (landmarks followed from the previous frame); ``detection_score``: the dlib detector's score when it ran
  (empty for tracked frames).
- ``box_x0, box_y0, box_x1, box_y1``: face box in source pixels.
- ``left_eye_x, left_eye_y, right_eye_x, right_eye_y, nose_x, nose_y, left_mouth_x, left_mouth_y, right_mouth_x,
  right_mouth_y``: the five alignment points in source pixels (left/right as seen in the image).
- ``<AU>_prob`` (e.g. ``AU12_prob``): sigmoid probability, one column per AU of the model, in the model's order.
- ``<AU>`` (e.g. ``AU12``): 1 when the probability reaches the AU's threshold, else 0.

Files: CSV by default, Parquet or JSON lines with ``--format``. Rows are appended to ``OUTPUT.partial`` and flushed
after every model batch, so a crash keeps everything computed so far; ``--resume`` continues from there (the last,
possibly unfinished source is redone). At the end the file is renamed to ``OUTPUT`` (Parquet is written from the
JSON-lines journal in chunks with ``pyarrow.parquet.ParquetWriter``). Files that cannot be read are reported and
skipped; the command still exits with 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..atomic_io import write_json_atomic
from ..data.align import TEMPLATE_SIZE, align_face, read_image, to_rgb_uint8
from ..protocols import DEFAULT_THRESHOLD
from .video import (
    VIDEO_EXTENSIONS,
    FaceTracker,
    FoundFace,
    Landmarker,
    find_faces,
    is_video_path,
    iter_video_frames,
    shared_finder,
    video_info,
)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm", ".pnm"}
)
STATUS_OK, STATUS_NO_FACE, STATUS_ERROR = "ok", "no_face", "error"
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y"))
BASE_COLUMNS = (
    "source",
    "frame",
    "timestamp",
    "face",
    "track",
    "status",
    "message",
    "detection",
    "detection_score",
    *BOX_COLUMNS,
    *LANDMARK_COLUMNS,
)
INTEGER_COLUMNS = ("frame", "face", "track")
TEXT_COLUMNS = ("source", "status", "message", "detection")
FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def result_columns(au_labels: Sequence[str]) -> list[str]:
    """Column names of the output table for a model with these AU labels."""
    return [*BASE_COLUMNS, *(f"{label}_prob" for label in au_labels), *au_labels]


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class FaceResult:
    """One face in one frame (or a ``no_face`` / ``error`` entry for a frame or file). See the module docstring."""

    source: str
    frame: int = 0
    timestamp: float | None = None
    face: int | None = None
    track: int | None = None
    status: str = STATUS_OK
    message: str = ""
    detection: str | None = None
    detection_score: float | None = None
    box: tuple[float, float, float, float] | None = None
    landmarks: np.ndarray | None = None
    au_labels: tuple[str, ...] = ()
    probabilities: np.ndarray | None = None
    occurrences: np.ndarray | None = None
    attention: np.ndarray | None = field(default=None, repr=False)
    aligned_face: np.ndarray | None = field(default=None, repr=False)

    def present_aus(self) -> list[str]:
        """Labels of the AUs detected as present."""
        if self.occurrences is None:
            return []
        return [label for label, on in zip(self.au_labels, self.occurrences) if on]

    def to_row(self) -> dict:
        """A flat dict with the output columns (plain Python values; missing values are None)."""

        def number(value):
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        row = {
            "source": self.source,
            "frame": int(self.frame),
            "timestamp": number(self.timestamp),
            "face": self.face,
            "track": self.track,
            "status": self.status,
            "message": self.message,
            "detection": self.detection,
            "detection_score": number(self.detection_score),
        }
        box = self.box if self.box is not None else (None,) * 4
        row.update({name: number(value) for name, value in zip(BOX_COLUMNS, box)})
        points = np.asarray(self.landmarks, dtype=np.float64).reshape(-1) if self.landmarks is not None else None
        row.update({name: (None if points is None else float(points[i])) for i, name in enumerate(LANDMARK_COLUMNS)})
        for i, label in enumerate(self.au_labels):
            row[f"{label}_prob"] = None if self.probabilities is None else float(self.probabilities[i])
        for i, label in enumerate(self.au_labels):
            row[label] = None if self.occurrences is None else int(self.occurrences[i])
        return row


def results_to_dataframe(results: Iterable[FaceResult], au_labels: Sequence[str]):
    """A pandas DataFrame of results with the output columns (nullable integers for ids and 0/1 columns)."""
    import pandas as pd

    columns = result_columns(au_labels)
    frame = pd.DataFrame([result.to_row() for result in results], columns=columns)
    for name in (*INTEGER_COLUMNS, *au_labels):
        frame[name] = frame[name].astype("Int64")
    for name in columns:
        if name not in INTEGER_COLUMNS and name not in TEXT_COLUMNS and name not in au_labels:
            frame[name] = frame[name].astype("float64")
    return frame


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _Source:
    name: str
    kind: str  # "image" | "video" | "unknown" (an explicit file: try image, then video) | "array" | "error"
    path: str | None = None
    image: np.ndarray | None = None
    message: str = ""


def _array_from_pil(image) -> np.ndarray:
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)  # upright, as for paths (a no-op without an orientation tag)
    if image.mode in ("RGB", "RGBA", "L", "I;16", "I;16L", "I;16B"):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def expand_inputs(inputs) -> tuple[list[_Source], list[str]]:
    """Turn paths (files, folders searched recursively), PIL images and arrays into sources, in order.

    Returns ``(sources, skipped)``: files inside folders without an image/video extension (and hidden files) are
    skipped and listed; a file named explicitly is always tried.
    """
    if isinstance(inputs, (str, os.PathLike, np.ndarray)) or hasattr(inputs, "mode"):
        inputs = [inputs]
    sources, skipped = [], []
    for position, item in enumerate(inputs):
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        extension = os.path.splitext(name)[1].lower()
                        if name.startswith(".") or name.endswith(".partial"):
                            continue
                        if extension in IMAGE_EXTENSIONS:
                            sources.append(_Source(full, "image", full))
                        elif extension in VIDEO_EXTENSIONS:
                            sources.append(_Source(full, "video", full))
                        else:
                            skipped.append(full)
            elif os.path.isfile(path):
                kind = "video" if is_video_path(path) else "image" if _has_image_extension(path) else "unknown"
                sources.append(_Source(path, kind, path))
            else:
                sources.append(_Source(path, "error", path, message=f"{path}: no such file or folder"))
        elif isinstance(item, np.ndarray) or hasattr(item, "mode"):
            array = _array_from_pil(item) if hasattr(item, "mode") else item
            sources.append(_Source(f"<input {position}>", "array", image=array))
        else:
            sources.append(
                _Source(
                    f"<input {position}>",
                    "error",
                    message=f"input {position}: unsupported type {type(item).__name__}; pass a path, PIL image or array",
                )
            )
    return sources, skipped


def _has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------------------------------------
# Model loading
# ----------------------------------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use --device cpu or auto")
    return resolved


def processor_from_config(config):
    """An image processor for a model saved without one: centre crop ``config.image_size`` out of a resize to
    256/224 of it, with the backbone's pretrained mean/std."""
    from ..image_processing_sevnet import SEVNetImageProcessor

    crop_size = int(getattr(config, "image_size", 224) or 224)
    size = round(crop_size * TEMPLATE_SIZE / 224)
    backbone = getattr(config, "backbone", None)
    if isinstance(backbone, str):
        try:
            return SEVNetImageProcessor.from_backbone(backbone, size=size, crop_size=crop_size)
        except Exception:  # unknown to timm: ImageNet statistics
            pass
    return SEVNetImageProcessor(size=size, crop_size=crop_size)


def load_model_and_processor(model, processor=None, trust_remote_code: bool = False):
    """A model (path, Hub id or loaded model) and its image processor (saved alongside, or built from the config)."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoImageProcessor, AutoModel

        name = os.fspath(model)
        loaded = AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)
        if processor is None:
            try:
                processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError):
                processor = None
    else:
        loaded = model
    if not hasattr(loaded, "config") or not callable(loaded):
        raise TypeError(f"model must be a path, a Hub id or a loaded model, got {type(model).__name__}")
    if processor is None:
        processor = processor_from_config(loaded.config)
    return loaded, processor


def _au_labels(config) -> tuple[str, ...]:
    labels = getattr(config, "au_labels", None)
    if labels is None:
        labels = [config.id2label[i] for i in range(config.num_labels)]
    return tuple(labels)


# ----------------------------------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------------------------------
class _Stats:
    STAGES = ("decode", "find", "align", "model", "write")

    def __init__(self):
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.frames = self.faces = self.sources = 0
        self.started = time.perf_counter()

    def as_dict(self, tracker_counts: dict | None = None) -> dict:
        total = time.perf_counter() - self.started
        return {
            "sources": self.sources,
            "frames": self.frames,
            "faces": self.faces,
            "seconds": {**{k: round(v, 4) for k, v in self.seconds.items()}, "total": round(total, 4)},
            "frames_per_second": round(self.frames / total, 3) if total > 0 else None,
            "tracker": tracker_counts or {},
        }


class AUDetector:
    """Find faces in photos, folders and videos and detect their AUs with a SEV-Net (or baseline) model.

    Args:
        model: a saved model folder, a Hub id, or a loaded model.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        batch_size: faces per model call (default 8 on CPU, where larger batches are no faster and cost memory,
            32 on a GPU).
        upsample: times dlib doubles the image before detecting (finds small faces; ~4x slower each).
        processor: an image processor; by default the one saved with the model, or one built from its config.
        thresholds: per-AU thresholds; by default ``config.decision_thresholds`` (0.5 where none were set).
        detector: ``"hog"`` or ``"cnn"`` (dlib's); landmark_model: ``"5"`` or ``"68"`` (dlib's shape predictors).
        detection_threshold: minimum detector score (HOG: SVM margin; 0 is dlib's default and what dataset
            preparation uses). Weak false positives score near 0; real frontal faces usually score above 1.
        max_detect_side: longer side above which images are shrunk for detection (boxes are mapped back and the
            landmarks measured again at full resolution).
        verify_every, redetect_every: video tracking settings (see :class:`.video.FaceTracker`).
        trust_remote_code: passed to ``from_pretrained`` for Hub models with their own code.
        prefetch: decode, find and align faces in a background thread while the model runs.
        channels_last: run the model in channels-last memory format (faster convolutions; same results up to
            float rounding).
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        upsample: int = 0,
        processor=None,
        thresholds: Sequence[float] | None = None,
        detector: str = "hog",
        landmark_model: str = "5",
        detection_threshold: float = 0.0,
        max_detect_side: int | None = 1600,
        verify_every: int = 10,
        redetect_every: int = 0,
        trust_remote_code: bool = False,
        prefetch: bool = True,
        channels_last: bool = True,
    ):
        self.device = resolve_device(device)
        if batch_size is None:
            batch_size = 32 if self.device.type == "cuda" else 8
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.processor = load_model_and_processor(model, processor, trust_remote_code)
        self.model.to(self.device).eval()
        if channels_last:  # faster convolutions on CPU (oneDNN) and on recent GPUs; results equal up to rounding
            self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        config = self.model.config
        self.au_labels = _au_labels(config)
        if thresholds is None:
            thresholds = getattr(config, "decision_thresholds", None) or [DEFAULT_THRESHOLD] * len(self.au_labels)
        if len(thresholds) != len(self.au_labels):
            raise ValueError(f"{len(thresholds)} thresholds given for {len(self.au_labels)} AUs {self.au_labels}")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.batch_size = int(batch_size)
        self.finder = shared_finder(upsample, detector, detection_threshold, landmark_model)
        self.max_detect_side = max_detect_side
        self.verify_every = verify_every
        self.redetect_every = redetect_every
        self.prefetch = prefetch
        self._landmarker: Landmarker | None = None
        self._warned_no_attention = False
        self.stats = _Stats()
        self.tracker_counts: dict = {}
        self.skipped: list[str] = []

    @property
    def columns(self) -> list[str]:
        """The output table's columns for this model."""
        return result_columns(self.au_labels)

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            self._landmarker = Landmarker(self.finder.landmark_model)
        return self._landmarker

    # -- the model -------------------------------------------------------------------------------------------------
    def predict_aligned(
        self, faces: Sequence[np.ndarray] | np.ndarray, output_attentions: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (faces x AUs) for aligned faces (256 x 256 RGB from :func:`align_face`), and the
        attention maps (faces x AUs x h x w) when asked for and the model has them (else None)."""
        if isinstance(faces, np.ndarray) and faces.ndim == 3:
            faces = [faces]
        faces = list(faces)
        if not faces:
            return np.zeros((0, len(self.au_labels))), None
        pixel_values = self.processor(faces, return_tensors="pt")["pixel_values"]
        dtype = next(self.model.parameters()).dtype
        pixel_values = pixel_values.to(self.device, dtype)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=pixel_values,
                output_attentions=output_attentions or None,
                return_dict=True,
            )
        probabilities = outputs.logits.float().sigmoid().cpu().numpy().astype(np.float64)
        maps = getattr(outputs, "cross_attentions", None) if output_attentions else None
        if output_attentions and maps is None and not self._warned_no_attention:
            warnings.warn(
                f"{type(self.model).__name__} returns no attention maps; attention grids show probabilities only",
                stacklevel=2,
            )
            self._warned_no_attention = True
        return probabilities, (maps.float().cpu().numpy() if maps is not None else None)

    def _fill(self, pending: list[tuple[FaceResult, np.ndarray | None]], output_attentions: bool) -> None:
        """Run the model on the queued faces and fill their probabilities, occurrences (and attention)."""
        with_faces = [(result, aligned) for result, aligned in pending if aligned is not None]
        if not with_faces:
            return
        started = time.perf_counter()
        probabilities, maps = self.predict_aligned([aligned for _, aligned in with_faces], output_attentions)
        for index, (result, _) in enumerate(with_faces):
            result.probabilities = probabilities[index]
            result.occurrences = (probabilities[index] >= self.thresholds).astype(np.int64)
            if maps is not None:
                result.attention = maps[index]
        self.stats.seconds["model"] += time.perf_counter() - started

    # -- faces in one frame ----------------------------------------------------------------------------------------
    def _frame_faces(
        self,
        name: str,
        frame_index: int,
        timestamp: float | None,
        image: np.ndarray,
        tracker: FaceTracker | None,
        keep_aligned: bool,
    ) -> list[tuple[FaceResult, np.ndarray | None]]:
        started = time.perf_counter()
        if tracker is not None:
            faces: list[FoundFace] = tracker.update(image)
        else:
            faces = find_faces(image, self.finder, self.landmarker, self.max_detect_side)
        found = time.perf_counter()
        self.stats.seconds["find"] += found - started
        self.stats.frames += 1
        common = dict(source=name, frame=frame_index, timestamp=timestamp, au_labels=self.au_labels)
        if not faces:
            return [(FaceResult(status=STATUS_NO_FACE, message="no face found", **common), None)]
        entries = []
        for index, face in enumerate(faces):
            aligned, _ = align_face(image, face.landmarks5, size=TEMPLATE_SIZE)
            result = FaceResult(
                face=index,
                track=face.track if tracker is not None else index,
                detection=face.method,
                detection_score=face.score,
                box=tuple(float(v) for v in face.box),
                landmarks=np.asarray(face.landmarks5, dtype=np.float64),
                aligned_face=aligned if keep_aligned else None,
                **common,
            )
            entries.append((result, aligned))
        self.stats.faces += len(entries)
        self.stats.seconds["align"] += time.perf_counter() - found
        return entries

    def prepare_image(self, image, name: str = "<input 0>") -> list[tuple[FaceResult, np.ndarray | None]]:
        """Faces of one still image (path, PIL image or array) with their aligned crops, before the model runs."""
        sources, _ = expand_inputs([image])
        source = sources[0]
        if isinstance(image, (str, os.PathLike)):
            name = source.name
        try:
            rgb = self._load_still(source)
        except (ValueError, OSError) as error:
            return [(FaceResult(source=name, status=STATUS_ERROR, message=str(error), au_labels=self.au_labels), None)]
        return self._frame_faces(name, 0, None, rgb, None, keep_aligned=True)

    def _load_still(self, source: _Source) -> np.ndarray:
        if source.kind == "error":
            raise ValueError(source.message)
        if source.kind == "array":
            return to_rgb_uint8(source.image)
        if os.path.getsize(source.path) == 0:
            raise ValueError(f"{source.path}: empty file")
        return read_image(source.path, orient=True)  # photos from phones are stored sideways with an EXIF tag

    # -- the streaming engine --------------------------------------------------------------------------------------
    def iter_results(
        self,
        inputs,
        every: int = 1,
        output_attentions: bool = False,
        keep_aligned: bool = False,
        skip_sources: Iterable[str] = (),
        annotate_video: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> Iterator[list[FaceResult]]:
        """Yield results batch by batch, in input order, as soon as each model batch is done.

        Decoding, face finding and alignment run in a background thread (when ``prefetch`` is on) while the model
        works on the previous batch; at most about two batches of frames are in flight.

        Args:
            inputs: a path (file or folder), a PIL image, an array, or a list of them.
            every: process every ``every``-th video frame.
            output_attentions: keep each face's attention maps (``FaceResult.attention``).
            keep_aligned: keep each face's aligned 256 x 256 crop (``FaceResult.aligned_face``).
            skip_sources: source names to leave out (already done, when resuming).
            annotate_video: file (one video input) or folder for videos with boxes and detected AUs drawn.
            progress: show a progress bar with the frame rate.
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.stats = _Stats()
        self.tracker_counts = {}
        sources, self.skipped = expand_inputs(inputs)
        skip = set(skip_sources)
        sources = [source for source in sources if source.name not in skip]
        single_video = sum(source.kind == "video" for source in sources) == 1
        events = self._events(sources, every, keep_aligned, want_frames=annotate_video is not None)
        if self.prefetch:
            events = _in_background(events, maxsize=2 * self.batch_size)
        queue: list[tuple[FaceResult, np.ndarray | None]] = []
        pending_frames: list[tuple[np.ndarray, list[FaceResult]]] = []
        writer = None
        bar = _progress_bar(progress)

        def flush() -> list[FaceResult]:
            self._fill(queue, output_attentions)
            batch = [result for result, _ in queue]
            queue.clear()
            if writer is not None:
                from .overlay import draw_detections

                for frame, faces in pending_frames:
                    writer.write(draw_detections(frame, faces))
            pending_frames.clear()
            return batch

        try:
            for kind, source, entries, frame in events:
                if kind == "start":
                    self.stats.sources += 1
                    bar.set_postfix_str(_short(source.name), refresh=False)
                    if annotate_video is not None and source.kind == "video":
                        writer = self._annotation_writer(annotate_video, source, every, single_video)
                elif kind == "frame":
                    queue.extend(entries)
                    if writer is not None and frame is not None:
                        pending_frames.append((frame, [result for result, _ in entries]))
                    bar.update(1)
                    if len(queue) >= self.batch_size:
                        yield flush()
                elif kind == "end" and writer is not None:
                    if queue:
                        yield flush()
                    writer.close()
                    writer = None
            if queue:
                yield flush()
        finally:
            if writer is not None:
                writer.abort()
            events.close()
            bar.close()

    def _events(self, sources: list[_Source], every: int, keep_aligned: bool, want_frames: bool):
        """Decode, find and align, source by source: ``("start" | "frame" | "end", source, entries, frame)``.

        ``entries`` are (result, aligned face or None) pairs for one frame; ``frame`` is the decoded video frame
        when ``want_frames`` (for annotated videos), else None.
        """
        for source in sources:
            yield "start", source, None, None
            if source.kind == "video" or (source.kind == "unknown" and not self._is_image(source)):
                for entries, frame in self._video_entries(source, every, keep_aligned):
                    yield "frame", source, entries, frame if want_frames else None
            else:
                try:
                    started = time.perf_counter()
                    rgb = self._load_still(source)
                    self.stats.seconds["decode"] += time.perf_counter() - started
                    entries = self._frame_faces(source.name, 0, None, rgb, None, keep_aligned)
                except (ValueError, OSError) as error:
                    entries = [(self._error(source.name, error), None)]
                yield "frame", source, entries, None
            yield "end", source, None, None

    def _video_entries(self, source: _Source, every: int, keep_aligned: bool):
        """(entries, frame) per processed frame of a video; an unreadable video gives one error entry."""
        tracker = FaceTracker(
            self.finder,
            self.landmarker,
            max_side=self.max_detect_side,
            verify_every=self.verify_every,
            redetect_every=self.redetect_every,
        )
        frames = iter_video_frames(source.path, every=every)
        decoded = 0
        try:
            while True:
                started = time.perf_counter()
                item = next(frames, None)
                self.stats.seconds["decode"] += time.perf_counter() - started
                if item is None:
                    break
                index, timestamp, rgb = item
                decoded += 1
                yield self._frame_faces(source.name, index, timestamp, rgb, tracker, keep_aligned), rgb
            if decoded == 0:
                yield [(self._error(source.name, ValueError("no frame could be decoded")), None)], None
        except (ValueError, OSError, RuntimeError) as error:
            unreadable = source.kind == "unknown" and decoded == 0
            problem = ValueError(f"{source.name}: not a readable image or video file") if unreadable else error
            yield [(self._error(source.name, problem), None)], None
        finally:
            frames.close()
            for key, value in tracker.counts.items():
                self.tracker_counts[key] = self.tracker_counts.get(key, 0) + value

    def _is_image(self, source: _Source) -> bool:
        """For an explicit file without a known extension: does it decode as an image?"""
        if source.kind != "unknown":
            return True
        try:
            self._load_still(source)
            return True
        except (ValueError, OSError):
            return os.path.getsize(source.path) == 0  # report empty files as unreadable images

    def _error(self, name: str, error: Exception) -> FaceResult:
        message = str(error) if name in str(error) else f"{name}: {error}"
        return FaceResult(source=name, status=STATUS_ERROR, message=message, au_labels=self.au_labels)

    def _annotation_writer(self, target, source: _Source, every: int, single: bool):
        from .overlay import AnnotatedVideoWriter

        target = os.fspath(target)
        if single and os.path.splitext(target)[1].lower() in AnnotatedVideoWriter.FOURCC:
            path = target
        else:
            path = os.path.join(target, f"{_safe_name(source.name)}.annotated.avi")
        try:
            fps = video_info(source.path).fps / every
        except ValueError:
            fps = 25.0
        return AnnotatedVideoWriter(path, fps)

    def detect(
        self, inputs, every: int = 1, output_attentions: bool = False, progress: bool = False
    ) -> list[FaceResult]:
        """All results for ``inputs`` (paths, folders, videos, PIL images, arrays) as a list."""
        return [
            result
            for batch in self.iter_results(inputs, every=every, output_attentions=output_attentions, progress=progress)
            for result in batch
        ]

    def detect_dataframe(self, inputs, every: int = 1, progress: bool = False):
        """All results for ``inputs`` as a pandas DataFrame with the output columns."""
        return results_to_dataframe(self.detect(inputs, every=every, progress=progress), self.au_labels)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _in_background(iterator: Iterator, maxsize: int) -> Iterator:
    """Run a generator in a daemon thread, handing its items over through a bounded queue (order kept; its
    exceptions are raised here). Closing the returned generator stops the thread at its next item."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                items.put(("done", None))
        except BaseException as error:  # handed to the consumer
            items.put(("error", error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="sevnet-detect-frames", daemon=True)
    thread.start()

    def consume():
        try:
            while True:
                kind, value = items.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    items.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()

    return consume()


def _progress_bar(enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(unit="frame", desc="detect", file=sys.stderr, mininterval=0.5, smoothing=0.1, dynamic_ncols=True)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _safe_name(name: str, limit: int = 120) -> str:
    """A file-name-safe version of a source name (path separators and odd characters become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace(os.sep, "__").lstrip("./\\")).strip("_") or "input"
    return cleaned[-limit:]


# ----------------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------------
def _arrow_schema(columns: Sequence[str], au_labels: Sequence[str]):
    import pyarrow as pa

    fields = []
    for name in columns:
        if name in TEXT_COLUMNS:
            fields.append(pa.field(name, pa.string()))
        elif name in INTEGER_COLUMNS:
            fields.append(pa.field(name, pa.int64()))
        elif name in au_labels:
            fields.append(pa.field(name, pa.int8()))
        else:
            fields.append(pa.field(name, pa.float64()))
    return pa.schema(fields)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".7g")
    return str(value)


class ResultWriter:
    """Append result rows to ``PATH.partial`` (flushed per batch); :meth:`close` renames it to ``PATH``.

    CSV and JSON lines are written in their final format; Parquet goes through a JSON-lines journal
    (``PATH.partial.jsonl``) converted at the end, since a Parquet file is unreadable until its footer is written.
    With ``resume=True`` an existing partial file is kept: :attr:`done_sources` lists the sources it completed, and
    the rows of its last source (possibly unfinished) are dropped so that source runs again.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, au_labels: Sequence[str], resume: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; choose one of {sorted(FORMATS)}")
        self.path = os.fspath(path)
        self.format = fmt
        self.au_labels = tuple(au_labels)
        self.columns = result_columns(au_labels)
        self.journal_format = "jsonl" if fmt == "parquet" else fmt
        self.partial = self.path + (".partial.jsonl" if fmt == "parquet" else ".partial")
        self.done_sources: set[str] = set()
        self.rows = 0
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if resume and os.path.exists(self.partial):
            self._recover()
            self._handle = open(self.partial, "a", encoding="utf-8", newline="")
        else:
            self._handle = open(self.partial, "w", encoding="utf-8", newline="")
            if self.journal_format == "csv":
                csv.writer(self._handle).writerow(self.columns)
                self._handle.flush()

    def _read_partial(self) -> Iterator[tuple[str, str]]:
        """(source, raw line) of every complete row of the partial file."""
        with open(self.partial, encoding="utf-8", newline="") as handle:
            if self.journal_format == "csv":
                header = handle.readline()
                found = next(csv.reader([header]), [])
                if found != self.columns:
                    raise ValueError(
                        f"{self.partial}: its columns differ from this model's ({len(found)} vs {len(self.columns)}); "
                        "resume with the same model, or delete the partial file to start again"
                    )
                for line in handle:
                    if not line.endswith("\n"):
                        break  # a row cut off by the crash
                    fields = next(csv.reader([line]), [])
                    if len(fields) == len(self.columns):
                        yield fields[0], line
            else:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if list(row) != self.columns:
                        raise ValueError(
                            f"{self.partial}: its rows have other columns than this model's output; resume with the "
                            "same model, or delete the partial file to start again"
                        )
                    yield row["source"], line

    def _recover(self) -> None:
        sources = []
        for source, _ in self._read_partial():
            if not sources or sources[-1] != source:
                sources.append(source)
        last = sources[-1] if sources else None
        self.done_sources = set(sources[:-1])
        tmp = self.partial + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            if self.journal_format == "csv":
                csv.writer(out).writerow(self.columns)
            for source, line in self._read_partial():
                if source != last:
                    out.write(line)
                    self.rows += 1
        os.replace(tmp, self.partial)

    def write(self, results: Sequence[FaceResult]) -> None:
        """Append rows and flush them to the file."""
        if self.journal_format == "csv":
            writer = csv.writer(self._handle)
            for result in results:
                row = result.to_row()
                writer.writerow([_csv_value(row[name]) for name in self.columns])
        else:
            for result in results:
                self._handle.write(json.dumps(result.to_row(), allow_nan=False) + "\n")
        self._handle.flush()
        self.rows += len(results)

    def close(self) -> None:
        """Finish: rename the partial file (or convert the journal to Parquet) to the final path."""
        self._handle.close()
        if self.format != "parquet":
            os.replace(self.partial, self.path)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _arrow_schema(self.columns, self.au_labels)
        tmp = os.path.join(os.path.dirname(self.path) or ".", f".{os.path.basename(self.path)}.tmp")
        with pq.ParquetWriter(tmp, schema) as writer, open(self.partial, encoding="utf-8") as journal:
            chunk = []
            for line in journal:
                chunk.append(json.loads(line))
                if len(chunk) >= 8192:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    chunk = []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        os.replace(tmp, self.path)
        os.remove(self.partial)


def read_results(path: str | os.PathLike):
    """Read an output file (CSV, Parquet or JSON lines, by extension) back as a DataFrame."""
    import pandas as pd

    path = os.fspath(path)
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".jsonl", ".json")):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path, keep_default_na=True)


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class DetectArguments:
    """Options of ``sevnet-hf detect INPUT... --model PATH_OR_HUB_ID``."""

    model: str = field(metadata={"help": "Saved model folder or Hub id (SEV-Net or a baseline)."})
    inputs: list[str] = field(
        default_factory=list, metadata={"help": "Images, folders (searched recursively) and videos; also positional."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Output file (default: au_detections.<format> in the current folder)."}
    )
    format: str | None = field(
        default=None, metadata={"help": "csv | parquet | jsonl (default: from the output's extension, else csv)."}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Faces per model call (default: 8 on CPU, 32 on GPU)."}
    )
    upsample: int = field(default=0, metadata={"help": "Times dlib doubles the image before detecting (small faces)."})
    detector: str = field(default="hog", metadata={"help": "dlib detector: hog (fast) | cnn (slow on CPU)."})
    landmark_model: str = field(default="5", metadata={"help": "dlib shape predictor: 5 | 68 points."})
    detection_threshold: float = field(
        default=0.0, metadata={"help": "Minimum detector score (0: dlib's default, as in dataset preparation)."}
    )
    max_detect_side: int = field(
        default=1600, metadata={"help": "Longer side above which images are shrunk for face detection only."}
    )
    every: int = field(default=1, metadata={"help": "Process every N-th video frame."})
    verify_every: int = field(
        default=10, metadata={"help": "Video tracking: re-detect on a crop around each face every N frames."}
    )
    redetect_every: int = field(
        default=0, metadata={"help": "Video tracking: full-frame detection every N frames (0: only when lost)."}
    )
    save_attention: str | None = field(
        default=None, metadata={"help": "Folder for per-face grids of AU attention heat maps (PNG)."}
    )
    annotate_video: str | None = field(
        default=None, metadata={"help": "Video file (one video input) or folder for videos with boxes and AUs drawn."}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    prefetch: bool = field(
        default=True, metadata={"help": "Decode and find faces in a background thread while the model runs."}
    )
    channels_last: bool = field(default=True, metadata={"help": "Run the model in channels-last memory format."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted run from OUTPUT.partial."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar with frames per second."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models that ship their own code."})
    stats_json: str | None = field(
        default=None, metadata={"help": "Write timing statistics (seconds per stage, frames/s) to this JSON file."}
    )

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.every < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("--every and --batch_size must be positive integers")

    def resolved_output(self) -> tuple[str, str]:
        """(output path, format)."""
        fmt = self.format
        if fmt is None and self.output:
            extension = os.path.splitext(self.output)[1].lower()
            fmt = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}.get(extension, "csv")
        fmt = fmt or "csv"
        return self.output or f"au_detections{FORMATS[fmt]}", fmt


def parse_detect_args(argv: list[str] | None = None) -> DetectArguments:
    """Parse ``detect`` arguments: flags (inputs may also be positional) or a single JSON/YAML file."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        DetectArguments,
        prog="sevnet-hf detect",
        usage="sevnet-hf detect INPUT [INPUT ...] --model PATH_OR_HUB_ID [options]  (or: sevnet-hf detect ARGS.json)",
        description="Detect facial action units in photos, folders and videos; one output row per face per frame.",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")) and os.path.isfile(argv[0]):
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        return loader(argv[0])[0]
    args, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    unknown = [item for item in remaining if item.startswith("-")]
    if unknown:
        parser.error(f"unrecognised option(s): {' '.join(unknown)}")
    args.inputs = [*remaining, *args.inputs]
    return args


def _save_attention_grids(results: Sequence[FaceResult], folder: str, detector: AUDetector) -> None:
    from .overlay import attention_grid, model_view

    size = getattr(detector.processor, "size", None)
    crop = getattr(detector.processor, "crop_size", None)
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    if getattr(detector.processor, "do_center_crop", True) is False:
        crop = None
    for result in results:
        if result.status != STATUS_OK or result.aligned_face is None:
            continue
        if result.timestamp is None:
            path = os.path.join(folder, f"{_safe_name(result.source)}_face{result.face}.png")
        else:
            path = os.path.join(folder, _safe_name(result.source), f"frame{result.frame:06d}_face{result.face}.png")
        attention_grid(
            model_view(result.aligned_face, size, crop),
            result.attention,
            detector.au_labels,
            probabilities=result.probabilities,
            thresholds=detector.thresholds,
            path=path,
        )
        result.aligned_face = None  # drop the pixels once drawn


def main(argv: list[str] | None = None) -> int:
    """``sevnet-hf detect``: write one row per face per frame; report unreadable inputs and carry on."""
    args = parse_detect_args(argv)
    if not args.inputs:
        print("sevnet-hf detect: give at least one image, folder or video (sevnet-hf detect --help)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    output, fmt = args.resolved_output()
    detector = AUDetector(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        upsample=args.upsample,
        detector=args.detector,
        landmark_model=args.landmark_model,
        detection_threshold=args.detection_threshold,
        max_detect_side=args.max_detect_side,
        verify_every=args.verify_every,
        redetect_every=args.redetect_every,
        trust_remote_code=args.trust_remote_code,
        prefetch=args.prefetch,
        channels_last=args.channels_last,
    )
    writer = ResultWriter(output, fmt, detector.au_labels, resume=args.resume)
    want_attention = args.save_attention is not None
    problems: list[str] = []
    no_face: dict[str, int] = {}
    for batch in detector.iter_results(
        args.inputs,
        every=args.every,
        output_attentions=want_attention,
        keep_aligned=want_attention,
        skip_sources=writer.done_sources,
        annotate_video=args.annotate_video,
        progress=args.progress,
    ):
        started = time.perf_counter()
        if want_attention:
            _save_attention_grids(batch, args.save_attention, detector)
        writer.write(batch)
        detector.stats.seconds["write"] += time.perf_counter() - started
        for result in batch:
            if result.status == STATUS_ERROR:
                problems.append(result.message)
            elif result.status == STATUS_NO_FACE:
                no_face[result.source] = no_face.get(result.source, 0) + 1
    writer.close()
    stats = detector.stats.as_dict(detector.tracker_counts)
    _print_summary(stats, output, writer, problems, no_face, detector.skipped)
    if args.stats_json:
        write_json_atomic(args.stats_json, {**stats, "output": output, "rows": writer.rows, "problems": problems})
    return 0


def _print_summary(stats, output, writer, problems, no_face, skipped) -> None:
    out = io.StringIO()
    rate = stats["frames_per_second"]
    print(
        f"sevnet-hf detect: {stats['sources']} source(s), {stats['frames']} frame(s), {stats['faces']} face(s) -> "
        f"{output} ({writer.rows} rows, {rate} frames/s)",
        file=out,
    )
    if writer.done_sources:
        print(f"resumed: {len(writer.done_sources)} source(s) were already done", file=out)
    if no_face:
        listed = ", ".join(
            f"{name} ({count} frame(s))" if count > 1 else name for name, count in list(no_face.items())[:20]
        )
        more = f" and {len(no_face) - 20} more" if len(no_face) > 20 else ""
        print(f"no face found in: {listed}{more}", file=out)
    if problems:
        print(f"problems ({len(problems)}), skipped:", file=out)
        for message in problems:
            print(f"  {message}", file=out)
    if skipped:
        print(
            f"ignored {len(skipped)} file(s) without an image or video extension: {', '.join(skipped[:10])}", file=out
        )
    sys.stderr.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
