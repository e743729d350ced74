r"""AU detection on photos, folders and videos: ``sevnet-hf detect INPUT... --model PATH_OR_HUB_ID`` and
:class:`AUDetector`.

Per frame: decode -> find faces (dlib; on videos, detection + landmark tracking, see :mod:`.video`) -> five
landmarks -> align to 256 x 256 with the dataset-preparation code (:func:`sevnet_hf.data.align.align_face`) ->
the model's image processor (resize + centre crop) -> the model, in batches -> per-AU probabilities, and
occurrences (probability >= the AU's threshold: ``config.decision_thresholds``, 0.5 where none were set).

Output columns (one row per face per processed frame; a frame or file without a usable face gets one row too):

- ``source``: file path as found (or ``<input N>`` for in-memory images); ``frame``: frame index in the video or
  animated image (0 for photos); ``timestamp``: seconds from the video start (``frame / fps``; for animated GIF,
  APNG and WebP the sum of the earlier frames' durations; empty for photos). A path that is not valid UTF-8 (bytes
  such as ``\xff`` in a file name), holds a control character (a newline, a tab) or starts with ``"`` is written
  C-quoted, the way git quotes such paths: ``"a\xffb.jpg"``, with ``\xNN`` for each undecodable byte, ``\n``,
  ``\t``, ``\r``, ``\"`` and ``\\``. Every other path is written as it is. The quoting is lossless:
  :func:`decode_source_name` gives back the path to open, and every output format stays valid UTF-8.
- ``face``: index of the face within the frame (0, 1, ...; empty when there is none); ``track``: track id on videos
  (stable while a face is followed; on photos the same as ``face``).
- ``status``: ``ok``, ``no_face`` (nothing found) or ``error`` (file unreadable; ``message`` says why).
- ``detection``: ``detected`` (full-frame detector), ``verified`` (detector on a crop around a tracked face) or
  ``tracked`` (landmarks followed from the previous frame); ``detection_score``: the dlib detector's score when it ran
  (empty for tracked frames). Detections scoring below ``--detection_threshold`` (default
  :data:`~sevnet_hf.data.align.MIN_FACE_SCORE`, 0.3) are not faces: weak HOG hits on textures and patches (a
  mission patch on a suit scored 0.14) would otherwise get AU scores.
- ``box_x0, box_y0, box_x1, box_y1``: face box in source pixels.
- ``left_eye_x, left_eye_y, right_eye_x, right_eye_y, nose_x, nose_y, left_mouth_x, left_mouth_y, right_mouth_x,
  right_mouth_y``: the five alignment points in source pixels (left/right as seen in the image).
- ``<AU>_prob`` (e.g. ``AU12_prob``): sigmoid probability, one column per AU of the model, in the model's order.
- ``<AU>`` (e.g. ``AU12``): 1 when the probability reaches the AU's threshold, else 0.

Files: CSV by default, Parquet or JSON lines with ``--format``. Rows are appended to ``OUTPUT.partial`` and flushed
after every model batch, so a crash keeps everything computed so far; ``--resume`` continues from there (the last,
possibly unfinished source is redone). At the end the file is renamed to ``OUTPUT`` (Parquet is written from the
JSON-lines journal in chunks with ``pyarrow.parquet.ParquetWriter``); a finished ``OUTPUT`` from an earlier run is
replaced then. A run holds an exclusive lock (``fcntl.flock``, POSIX only; not taken on Windows) on its partial file
until it has renamed it, so a second run on the same ``OUTPUT`` stops at once with a message instead of mixing its
rows in; the lock goes with the process, however it ends (SIGKILL included). A partial file holding rows of an
earlier run is never truncated silently: the command stops and asks for ``--resume`` (continue it) or
``--overwrite`` (discard it).

Inputs: folders are searched recursively for files with an image or video extension (hidden files are skipped;
the files without such an extension are listed at the end). GIF, AVIF and HEIC/HEIF files are tried as images
(HEIC needs the ``pillow-heif`` package), then as videos; animated GIF, APNG and WebP give one row per frame per
face, tracked like a video. Files named explicitly are always tried.

Exit status: 0 when the run finished (files that cannot be read are reported, get an ``error`` row and are skipped);
2 for usage errors, each reported in one line before any input is read: bad options, an output path that cannot be
written (a folder, under a file, no permission), an output in use by another run, a partial file without
``--resume``/``--overwrite``, a ``--model`` that cannot be loaded, and inputs that hold no image or video at all
(an empty folder: nothing is written). An empty folder beside other inputs is only a warning.
"""

from __future__ import annotations

import csv
import errno
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

from ..atomic_io import FileLockedError, open_locked, write_json_atomic
from ..data.align import MIN_FACE_SCORE, TEMPLATE_SIZE, align_face, read_image, to_rgb_uint8
from ..protocols import DEFAULT_THRESHOLD
from .arguments import FORMATS, DetectArguments, detect_parser, parse_detect_args  # noqa: F401  (re-exported)
from .video import (
    VIDEO_EXTENSIONS,
    FaceTracker,
    FoundFace,
    Landmarker,
    find_faces,
    is_animated_image,
    is_video_path,
    iter_animation_frames,
    iter_video_frames,
    shared_finder,
    video_info,
)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm", ".pnm"}
)
# Formats OpenCV may or may not decode (it depends on its build): tried as an image with OpenCV, then Pillow (HEIC
# through the pillow-heif plugin when installed), then as a video, as a file named explicitly is.
OTHER_IMAGE_EXTENSIONS = frozenset({".gif", ".avif", ".heic", ".heif"})
# Extensions whose files may hold an animation (read frame by frame; see :func:`.video.is_animated_image`).
ANIMATION_EXTENSIONS = frozenset({".gif", ".png", ".apng", ".webp"})
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


def result_columns(au_labels: Sequence[str]) -> list[str]:
    """Column names of the output table for a model with these AU labels."""
    return [*BASE_COLUMNS, *(f"{label}_prob" for label in au_labels), *au_labels]


# ----------------------------------------------------------------------------------------------------------------------
# Source names in output files
# ----------------------------------------------------------------------------------------------------------------------
_NEEDS_QUOTING = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNQUOTE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def encode_source_name(name: str) -> str:
    """The ``source`` text for a path: the path itself, or a C-quoted form when it is not valid UTF-8, holds a control
    character or starts with ``"`` (see the module docstring). :func:`decode_source_name` reverses it."""
    if not _NEEDS_QUOTING.search(name) and not name.startswith('"'):
        return name
    out = ['"']
    for char in name:
        code = ord(char)
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode (surrogateescape) carries it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (possible in Windows file names)
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def decode_source_name(text: str) -> str:
    """The path (a ``str`` for ``open``/``os.fsencode``) that :func:`encode_source_name` wrote as ``text``."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    out, index, body = [], 0, text[1:-1]
    while index < len(body):
        char = body[index]
        if char != "\\" or index + 1 == len(body):
            out.append(char)
            index += 1
            continue
        kind = body[index + 1]
        if kind == "x" and index + 4 <= len(body):
            code = int(body[index + 2 : index + 4], 16)
            out.append(chr(0xDC00 + code) if code >= 0x80 else chr(code))
            index += 4
        elif kind == "u" and index + 6 <= len(body):
            out.append(chr(int(body[index + 2 : index + 6], 16)))
            index += 6
        else:
            out.append(_UNQUOTE_ESCAPES.get(kind, kind))
            index += 2
    return "".join(out)


def _one_line(text: str, name: str | None = None) -> str:
    """A message as one line of valid UTF-8: ``name`` in its ``source`` form, other odd characters escaped."""
    if name and name != encode_source_name(name):
        text = text.replace(name, encode_source_name(name))
    if _NEEDS_QUOTING.search(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # other lone surrogates
        text = re.sub("[\x00-\x1f\x7f]", lambda match: f"\\x{ord(match.group()):02x}", text)
    return text


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
        """A flat dict with the output columns (plain Python values; missing values are None; ``source`` as
        :func:`encode_source_name` writes it, ``message`` on one line)."""

        def number(value):
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        row = {
            "source": encode_source_name(self.source),
            "frame": int(self.frame),
            "timestamp": number(self.timestamp),
            "face": self.face,
            "track": self.track,
            "status": self.status,
            "message": _one_line(self.message, self.source),
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
    skipped and listed; a file named explicitly is always tried. GIF, AVIF and HEIC/HEIF files in folders are tried
    like files named explicitly (as an image, then as a video). Symbolic links that lead nowhere (a loop, a missing
    target) are reported as such.
    """
    if isinstance(inputs, (str, os.PathLike, np.ndarray, _Source)) or hasattr(inputs, "mode"):
        inputs = [inputs]
    sources, skipped = [], []
    for position, item in enumerate(inputs):
        if isinstance(item, _Source):
            sources.append(item)
        elif isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        extension = os.path.splitext(name)[1].lower()
                        if name.startswith(".") or name.endswith((".partial", ".partial.jsonl")):
                            continue
                        if not os.path.exists(full):  # a link to nowhere (os.walk lists those among files)
                            sources.append(_Source(full, "error", full, message=_dangling_link_message(full)))
                        elif extension in IMAGE_EXTENSIONS:
                            sources.append(_Source(full, "image", full))
                        elif extension in VIDEO_EXTENSIONS:
                            sources.append(_Source(full, "video", full))
                        elif extension in OTHER_IMAGE_EXTENSIONS:
                            sources.append(_Source(full, "unknown", full))
                        else:
                            skipped.append(full)
            elif os.path.isfile(path):
                kind = "video" if is_video_path(path) else "image" if _has_image_extension(path) else "unknown"
                sources.append(_Source(path, kind, path))
            elif os.path.islink(path):
                sources.append(_Source(path, "error", path, message=_dangling_link_message(path)))
            elif os.path.exists(path):
                sources.append(_Source(path, "error", path, message=f"{path}: not a regular file or folder"))
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


def _dangling_link_message(path: str) -> str:
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{path}: symbolic link loop (the link leads back to itself); fix or remove the link"
    try:
        target = os.readlink(path)
    except OSError:
        return f"{path}: no such file or folder"
    return f"{path}: broken symbolic link (its target {target} does not exist)"


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


class ModelLoadError(OSError):
    """``--model`` names no loadable model; the message says which file or folder and what to do."""


def check_model_location(name: str) -> None:
    """Raise :class:`ModelLoadError` for a ``--model`` that is clearly a local path but no saved model folder.

    A name is taken as a local path when it exists, or when it cannot be a Hub id (``owner/name``): absolute, starting
    with ``.`` or ``~``, with more than one ``/`` or with a backslash. Other names are left to the Hub.
    """
    if not os.path.exists(name):
        if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
            raise ModelLoadError(
                f"--model {name}: no such folder; give a folder written by save_pretrained, or a Hub id (owner/name)"
            )
        return
    if not os.path.isdir(name):
        raise ModelLoadError(f"--model {name}: is a file; give the folder that holds config.json and the weights")
    config = os.path.join(name, "config.json")
    if not os.path.isfile(config):
        content = "it is empty" if not os.listdir(name) else "it has no config.json"
        raise ModelLoadError(
            f"--model {name}: not a saved model folder ({content}); give the folder save_pretrained wrote "
            "(config.json and model.safetensors)"
        )
    try:
        with open(config, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"--model {name}: {config} is not readable JSON ({error}); save the model again") from None


def _model_load_error(name: str, error: Exception) -> ModelLoadError:
    """One line for a failed ``from_pretrained``: the damaged weight file when there is one, else the reason."""
    if os.path.isdir(name):
        from safetensors import safe_open

        for file in sorted(os.listdir(name)):
            if not file.endswith(".safetensors"):
                continue
            path = os.path.join(name, file)
            try:
                with safe_open(path, framework="pt") as weights:
                    weights.keys()
            except Exception as damage:  # safetensors raises its own error type
                return ModelLoadError(
                    f"--model {name}: {path} is damaged or incomplete ({_one_line(str(damage))}); "
                    "copy or download it again"
                )
    first_line = (str(error).strip().splitlines() or [""])[0]
    reason = _one_line(f"{type(error).__name__}: {first_line}")
    where = "the folder" if os.path.isdir(name) else "no local folder of that name, and the Hub id"
    return ModelLoadError(f"--model {name}: {where} could not be loaded ({reason})")


def load_model_and_processor(model, processor=None, trust_remote_code: bool = False):
    """A model (path, Hub id or loaded model) and its image processor (saved alongside, or built from the config).

    For a path or Hub id that gives no model (a missing or empty folder, a damaged weight file, a Hub id that cannot
    be fetched) raises :class:`ModelLoadError`, one line that names the folder or file.
    """
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        name = os.fspath(model)
        check_model_location(name)
        try:
            loaded = AutoModelForImageClassification.from_pretrained(name, trust_remote_code=trust_remote_code)
        except Exception as error:  # transformers, huggingface_hub and safetensors each raise their own types
            raise _model_load_error(name, error) from error
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
        detection_threshold: minimum detector score (HOG: SVM margin; CNN: confidence); default
            :data:`~sevnet_hf.data.align.MIN_FACE_SCORE` (0.3). 0 is dlib's own default and what dataset preparation
            uses (it keeps the largest face); weak false positives score 0.03-0.21, real faces 0.4 (turned, blurred)
            to above 1.
        max_detect_side: longer side above which images are shrunk for detection (boxes are mapped back and the
            landmarks measured again at full resolution).
        verify_every, redetect_every: video tracking settings (see :class:`.video.FaceTracker`).
        trust_remote_code: passed to ``from_pretrained`` for Hub models with their own code.
        prefetch: decode, find and align faces in a background thread while the model runs.
        channels_last: run the model in channels-last memory format (faster convolutions; same results up to
            float rounding).
        add_aus, text_encoder: AUs to score from their descriptions alone (a dict or JSON file for
            ``SEVNetForAUDetection.add_aus``) and the text encoder to embed them (default: the model's).
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
        detection_threshold: float = MIN_FACE_SCORE,
        max_detect_side: int | None = 1600,
        verify_every: int = 10,
        redetect_every: int = 0,
        trust_remote_code: bool = False,
        prefetch: bool = True,
        channels_last: bool = True,
        add_aus=None,
        text_encoder: str | None = None,
    ):
        self.device = resolve_device(device)
        if batch_size is None:
            batch_size = 32 if self.device.type == "cuda" else 8
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.processor = load_model_and_processor(model, processor, trust_remote_code)
        if add_aus is not None:  # zero-shot AUs from their descriptions (dict or JSON file): see add_aus
            if not hasattr(self.model, "add_aus"):
                raise ValueError(f"{type(self.model).__name__} cannot add AUs from descriptions (SEV-Net can)")
            self.model.add_aus(add_aus, text_encoder=text_encoder)
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
        maps = getattr(outputs, "au_attention_maps", None) if output_attentions else None
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
        if source.image is not None:  # decoded by _is_image
            image, source.image = source.image, None
            return image
        if os.path.getsize(source.path) == 0:
            raise ValueError(f"{source.path}: empty file")
        try:
            return read_image(source.path, orient=True)  # photos from phones are stored sideways with an EXIF tag
        except ValueError:
            extension = os.path.splitext(source.path)[1].lower()
            if extension not in OTHER_IMAGE_EXTENSIONS:
                raise
            return _read_with_pillow(source.path, extension)

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
            elif self._is_animation(source):
                for entries, frame in self._video_entries(source, every, keep_aligned, animated=True):
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

    def _video_entries(self, source: _Source, every: int, keep_aligned: bool, animated: bool = False):
        """(entries, frame) per processed frame of a video (or of an animated image); an unreadable video gives one
        error entry."""
        tracker = FaceTracker(
            self.finder,
            self.landmarker,
            max_side=self.max_detect_side,
            verify_every=self.verify_every,
            redetect_every=self.redetect_every,
        )
        frames = (iter_animation_frames if animated else iter_video_frames)(source.path, every=every)
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

    @staticmethod
    def _is_animation(source: _Source) -> bool:
        """An animated GIF, APNG or WebP (read frame by frame like a video)."""
        if source.kind not in ("image", "unknown") or not source.path:
            return False
        extension = os.path.splitext(source.path)[1].lower()
        if (source.kind == "unknown" or extension in ANIMATION_EXTENSIONS) and is_animated_image(source.path):
            source.image = None  # frame 0, decoded by _is_image; the animation is read frame by frame instead
            return True
        return False

    def _is_image(self, source: _Source) -> bool:
        """For an explicit file without a known extension: does it decode as an image?"""
        if source.kind != "unknown":
            return True
        try:
            source.image = self._load_still(source)  # kept for the still branch, which would decode it again
            return True
        except MissingDecoderError:
            return True  # report the missing package rather than "not a video"
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


class MissingDecoderError(ValueError):
    """The file's format needs a package that is not installed (the message names it)."""


def _read_with_pillow(path: str, extension: str) -> np.ndarray:
    """Pillow's decoders for the formats OpenCV builds may lack (GIF, AVIF; HEIC/HEIF through pillow-heif)."""
    from PIL import Image, ImageOps

    if extension in (".heic", ".heif"):
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            raise MissingDecoderError(
                f"{path}: HEIC/HEIF cannot be decoded here; install pillow-heif (pip install pillow-heif), or "
                "convert the file to JPEG"
            ) from None
        register_heif_opener()
    try:
        with Image.open(path) as image:
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


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


class OutputError(OSError):
    """The output cannot be written now; the message names the path and what to do (a usage error, exit 2)."""


# POSIX renames and removes open files, so the lock is held until the partial file is gone; Windows cannot (and
# takes no lock: see atomic_io.open_locked), so there the file is closed first.
_OPEN_FILES_RENAME = os.name != "nt"


def partial_path(path: str | os.PathLike, fmt: str) -> str:
    """The file rows go to while a run is under way: ``PATH.partial`` (``PATH.partial.jsonl`` for Parquet)."""
    return os.fspath(path) + (".partial.jsonl" if fmt == "parquet" else ".partial")


def _claim_output(path: str, fmt: str, resume: bool, overwrite: bool) -> tuple[int, int]:
    """Open and lock the partial file of ``path``; returns (descriptor, rows it already holds).

    Raises :class:`OutputError` for a folder, a path under a file, no permission, a partial file locked by another
    run, and a partial file with rows when neither ``resume`` nor ``overwrite`` is set.
    """
    if resume and overwrite:
        raise OutputError("--resume and --overwrite exclude each other: continue the earlier run, or discard it")
    if os.path.isdir(path):
        example = os.path.join(path, f"au_detections{FORMATS[fmt]}")
        raise OutputError(f"--output {path} is a folder; give a file name, e.g. --output {example}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"--output {path}: {existing} is a file, not a folder; choose another --output")
    partial = partial_path(path, fmt)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = open_locked(partial)
    except FileLockedError:
        raise OutputError(
            f"--output {path} is being written by another sevnet-hf detect run ({partial} is locked); wait for it "
            "to finish, or choose another --output"
        ) from None
    except OSError as error:
        raise OutputError(
            f"--output {path}: cannot write there ({error.strerror or error}); choose a folder you can write to"
        ) from None
    rows = _count_lines(fd) - (1 if fmt == "csv" else 0)
    if rows > 0 and not resume and not overwrite:
        os.close(fd)
        raise OutputError(
            f"{partial} holds {rows} row(s) of an earlier run that did not finish; add --resume to continue it, "
            "or --overwrite to discard those rows and start again"
        )
    return fd, max(rows, 0)


def _count_lines(fd: int) -> int:
    """Complete (newline-terminated) lines in an open file."""
    count = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        count += chunk.count(b"\n")
    return count


def check_output(path: str | os.PathLike, fmt: str, resume: bool = False, overwrite: bool = False) -> None:
    """Raise :class:`OutputError` unless a run could write ``path`` now (what :class:`ResultWriter` checks), without
    leaving anything behind: the command runs this before loading the model."""
    path = os.fspath(path)
    partial = partial_path(path, fmt)
    existed = os.path.lexists(partial)
    fd, _ = _claim_output(path, fmt, resume, overwrite)
    if not _OPEN_FILES_RENAME:
        os.close(fd)
    try:
        if not existed:
            os.remove(partial)  # still locked (POSIX): nobody else can be using the empty file we created
    finally:
        if _OPEN_FILES_RENAME:
            os.close(fd)


class ResultWriter:
    """Append result rows to ``PATH.partial`` (flushed per batch); :meth:`close` renames it to ``PATH``.

    CSV and JSON lines are written in their final format; Parquet goes through a JSON-lines journal
    (``PATH.partial.jsonl``) converted at the end, since a Parquet file is unreadable until its footer is written.
    The partial file stays locked (:func:`~sevnet_hf.atomic_io.open_locked`) from here until :meth:`close` has
    renamed it, so a second writer on the same path fails at once with :class:`OutputError`. A partial file that
    holds rows is continued with ``resume=True`` (:attr:`done_sources` lists the sources it completed; the rows of
    its last source, possibly unfinished, are cut off so that source runs again), emptied with ``overwrite=True``,
    and otherwise left alone with an :class:`OutputError` that names both options.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fmt: str,
        au_labels: Sequence[str],
        resume: bool = False,
        overwrite: bool = False,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; choose one of {sorted(FORMATS)}")
        self.path = os.fspath(path)
        self.format = fmt
        self.au_labels = tuple(au_labels)
        self.columns = result_columns(au_labels)
        self.journal_format = "jsonl" if fmt == "parquet" else fmt
        self.partial = partial_path(self.path, fmt)
        self.done_sources: set[str] = set()
        self.rows = 0
        fd, existing = _claim_output(self.path, fmt, resume, overwrite)
        try:
            keep = self._recover() if resume and existing else 0
            os.ftruncate(fd, keep)
            self._handle = open(fd, "r+", encoding="utf-8", newline="")
        except BaseException:
            os.close(fd)
            raise
        self._handle.seek(0, os.SEEK_END)
        if keep == 0 and self.journal_format == "csv":
            csv.writer(self._handle).writerow(self.columns)
            self._handle.flush()

    def _recover(self) -> int:
        """Read the partial file: fill :attr:`done_sources` and :attr:`rows`; returns the byte length to keep (the
        header and every row before the last source's, or before the first damaged line)."""
        sources: list[tuple[str, int, int]] = []  # (source as written, byte offset of its first row, rows before it)
        rows = 0
        with open(self.partial, "rb") as handle:
            offset = 0
            if self.journal_format == "csv":
                header = handle.readline()
                found = next(csv.reader([header.decode("utf-8", "replace")]), [])
                if not header.endswith(b"\n"):
                    return 0  # the header itself was cut off: start again
                if found != self.columns:
                    raise OutputError(
                        f"{self.partial}: its columns differ from this model's ({len(found)} vs {len(self.columns)});"
                        " resume with the same model, or start again with --overwrite"
                    )
                offset = len(header)
            end = offset
            for line in handle:
                source = self._row_source(line)
                if source is None:
                    break  # a row cut off by the crash (or damaged): it and everything after it are redone
                if not sources or sources[-1][0] != source:
                    sources.append((source, end, rows))
                rows += 1
                end += len(line)
        if not sources:
            return end
        _, keep, self.rows = sources[-1]
        self.done_sources = {decode_source_name(source) for source, _, _ in sources[:-1]}
        return keep

    def _row_source(self, line: bytes) -> str | None:
        """The ``source`` of one complete row of the partial file, or None for a cut-off or damaged line."""
        if not line.endswith(b"\n"):
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.journal_format == "csv":
            fields = next(csv.reader([text]), [])
            return fields[0] if len(fields) == len(self.columns) else None
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(row, dict) or list(row) != self.columns:
            raise OutputError(
                f"{self.partial}: its rows have other columns than this model's output; resume with the same model, "
                "or start again with --overwrite"
            )
        return row["source"]

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
        """Finish: rename the partial file (or convert the journal to Parquet) to the final path, then let go of the
        lock (held until the rename, so no other run can take the file over half-way)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if not _OPEN_FILES_RENAME:
            self._handle.close()
        try:
            if self.format != "parquet":
                os.replace(self.partial, self.path)
            else:
                self._write_parquet()
                os.remove(self.partial)
        finally:
            self._handle.close()

    def _write_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _arrow_schema(self.columns, self.au_labels)
        tmp = os.path.join(os.path.dirname(self.path) or ".", f".{os.path.basename(self.path)}.tmp-{os.getpid()}")
        try:
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
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


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
def _save_attention_grids(results: Sequence[FaceResult], folder: str, detector: AUDetector) -> None:
    from .overlay import attention_grid, model_view

    try:  # the region the attention maps cover: SEV-Net's processor has a shorter side and a square crop
        size, crop = detector.processor.square_sizes()
    except (AttributeError, ValueError):  # another processor: show the whole aligned face
        size = crop = None
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


def _usage_error(message: str) -> int:
    print(f"sevnet-hf detect: {_one_line(message)}", file=sys.stderr)
    return 2


def _expand_command_inputs(inputs: Sequence[str]) -> tuple[list[_Source], list[str], list[str]]:
    """Sources and skipped files of the command's inputs, and the folders among them with no image or video."""
    sources, skipped, barren = [], [], []
    for item in inputs:
        found, ignored = expand_inputs([item])
        sources.extend(found)
        skipped.extend(ignored)
        if not found and os.path.isdir(item):
            barren.append(item)
    return sources, skipped, barren


def _ignored_note(skipped: Sequence[str]) -> str:
    names = ", ".join(encode_source_name(name) for name in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f"{len(skipped)} file(s) without an image or video extension ignored (name one to try it): {names}{more}"


def main(argv: list[str] | None = None) -> int:
    """``sevnet-hf detect``: write one row per face per frame; report unreadable inputs and carry on.

    Returns 0 when the run finished, 2 for a usage error (see the module docstring), each reported in one line.
    """
    try:
        args = parse_detect_args(argv)
    except ValueError as error:  # a field's check in DetectArguments.__post_init__ (e.g. --format xlsx)
        return _usage_error(str(error))
    if not args.inputs:
        return _usage_error("give at least one image, folder or video (sevnet-hf detect --help)")
    output, fmt = args.resolved_output()
    try:
        check_output(output, fmt, resume=args.resume, overwrite=args.overwrite)
    except OutputError as error:
        return _usage_error(str(error))
    sources, skipped, barren = _expand_command_inputs(args.inputs)
    if not sources:
        where = ", ".join(encode_source_name(item) for item in args.inputs)
        note = f"; {_ignored_note(skipped)}" if skipped else ""
        return _usage_error(f"no image or video found in {where}{note}; nothing was written")
    for folder in barren:
        print(f"sevnet-hf detect: warning: {encode_source_name(folder)}: no image or video in it", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        detector = _command_detector(args)
        writer = ResultWriter(output, fmt, detector.au_labels, resume=args.resume, overwrite=args.overwrite)
    except (ModelLoadError, OutputError, ValueError) as error:  # ValueError: --device, --batch_size, thresholds
        return _usage_error(str(error))
    if args.add_aus is not None and hasattr(detector.model, "zero_shot_neighbours"):  # (older remote code: no note)
        print(_zero_shot_note(detector.model), file=sys.stderr)
    want_attention = args.save_attention is not None
    problems: list[str] = []
    no_face: dict[str, int] = {}
    for batch in detector.iter_results(
        sources,
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
                problems.append(_one_line(result.message, result.source))
            elif result.status == STATUS_NO_FACE:
                name = encode_source_name(result.source)
                no_face[name] = no_face.get(name, 0) + 1
    writer.close()
    stats = detector.stats.as_dict(detector.tracker_counts)
    _print_summary(stats, output, writer, problems, no_face, skipped)
    if args.stats_json:
        write_json_atomic(args.stats_json, {**stats, "output": output, "rows": writer.rows, "problems": problems})
    return 0


def _command_detector(args: DetectArguments) -> AUDetector:
    return AUDetector(
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
        add_aus=args.add_aus,
        text_encoder=args.text_encoder,
    )


def _zero_shot_note(model) -> str:
    """Which trained AU each added AU's embedding landed nearest: with a cosine near 1 the added AU is scored through
    that trained AU's map, i.e. by its detector (README, zero-shot)."""
    neighbours = model.zero_shot_neighbours()
    pairs = ", ".join(f"{added} -> {trained} {cosine:.2f}" for added, (trained, cosine) in neighbours.items())
    return (
        f"sevnet-hf detect: added AUs, each with the trained AU whose embedding it landed nearest (cosine): {pairs}; "
        "near 1, the added AU is read through that trained AU's attention map"
    )


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
        print(_ignored_note(skipped), file=out)
    sys.stderr.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
