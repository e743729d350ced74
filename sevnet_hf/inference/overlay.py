"""Pictures of what the detector did: per-AU attention heat maps over the face (the paper's Fig. 4), and frames
annotated with face boxes and detected AUs (for ``--annotate-video``).

Only numpy and OpenCV are needed, so the training demo can reuse :func:`attention_grid`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..atomic_io import write_bytes_atomic

TEXT_FONT_SCALE = 0.45
PRESENT_COLOUR = (80, 255, 80)  # RGB, for AUs at or above their threshold
ABSENT_COLOUR = (255, 255, 255)
BOX_COLOUR = (0, 220, 0)


def _as_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def write_image_atomic(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Encode an RGB image by its file extension (PNG, JPEG, ...) and write it via a temporary file."""
    import cv2

    path = os.fspath(path)
    extension = os.path.splitext(path)[1] or ".png"
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode images as {extension!r}; use .png or .jpg")
    write_bytes_atomic(path, encoded.tobytes())


def model_view(aligned_face: np.ndarray, size: int | None, crop_size: int | None) -> np.ndarray:
    """The part of an aligned face the model sees after the image processor's resize (shorter side to ``size``)
    and centre crop (``crop_size``), at the aligned face's resolution. Attention maps cover exactly this region."""
    if not size or not crop_size or crop_size >= size:
        return aligned_face
    height, width = aligned_face.shape[:2]
    side_h, side_w = round(height * crop_size / size), round(width * crop_size / size)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    return aligned_face[top : top + side_h, left : left + side_w]


def _put_label(tile: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    """Write text lines on a dark strip at the top of a tile (in place)."""
    import cv2

    line_height = int(22 * TEXT_FONT_SCALE / 0.45)
    strip = min(tile.shape[0], line_height * len(lines) + 4)
    tile[:strip] = (tile[:strip].astype(np.float32) * 0.35).astype(np.uint8)
    for row, (text, colour) in enumerate(lines):
        origin = (4, line_height * (row + 1) - 6)
        cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, TEXT_FONT_SCALE, colour, 1, cv2.LINE_AA)


def heatmap_overlay(face: np.ndarray, attention_map: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend one attention map (h x w, any scale), stretched to [0, 1] and drawn with the jet colour map, over an
    RGB face. A constant map (no preference for any location) is drawn as the lowest colour."""
    import cv2

    face = np.ascontiguousarray(face)
    values = _as_numpy(attention_map).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    flat = high - low <= 1e-6 * max(abs(high), abs(low), 1e-30)
    scaled = np.zeros_like(values) if flat else (values - low) / (high - low)
    scaled = cv2.resize(scaled.astype(np.float32), (face.shape[1], face.shape[0]), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.clip(scaled * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(face, 1.0 - opacity, heat, opacity, 0.0)


def attention_grid(
    aligned_face_uint8: np.ndarray,
    maps: np.ndarray | None,
    au_labels: Sequence[str],
    probabilities: Sequence[float] | None = None,
    path: str | os.PathLike | None = None,
    thresholds: Sequence[float] | None = None,
    tile_size: int = 160,
    columns: int | None = None,
) -> np.ndarray:
    """A grid image: the face, then one heat map per AU over it, each titled with the AU (and its probability).

    Args:
        aligned_face_uint8: H x W x 3 RGB face the maps refer to (for SEV-Net: :func:`model_view` of the aligned
            face, the centre crop the model saw).
        maps: N x h x w attention maps in ``au_labels`` order (numpy or torch). ``None`` (models without
            attention, such as the ResNet baseline) gives the face and a list of probabilities instead.
        au_labels: N AU names.
        probabilities: optional N probabilities, printed after the labels.
        path: when given, the grid is also written there (PNG/JPEG by extension, atomically).
        thresholds: optional N thresholds; labels of AUs at or above theirs are drawn in green (0.5 by default
            when probabilities are given).
        tile_size: side of each square tile in pixels.
        columns: tiles per row (default: about square).

    Returns:
        The grid as an RGB uint8 array.
    """
    import cv2

    from ..data.align import to_rgb_uint8

    face = cv2.resize(to_rgb_uint8(aligned_face_uint8), (tile_size, tile_size), interpolation=cv2.INTER_AREA)
    labels = list(au_labels)
    probs = None if probabilities is None else [float(p) for p in _as_numpy(probabilities).reshape(-1)]
    if probs is not None and len(probs) != len(labels):
        raise ValueError(f"attention_grid: {len(probs)} probabilities for {len(labels)} AU labels")
    limits = [0.5] * len(labels) if thresholds is None else [float(t) for t in thresholds]

    def title(index: int) -> tuple[str, tuple[int, int, int]]:
        if probs is None:
            return labels[index], ABSENT_COLOUR
        colour = PRESENT_COLOUR if probs[index] >= limits[index] else ABSENT_COLOUR
        return f"{labels[index]} {probs[index]:.2f}", colour

    tiles = [face.copy()]
    _put_label(tiles[0], [("input", ABSENT_COLOUR)])
    if maps is None or len(maps) == 0:
        lines = [("no attention maps", ABSENT_COLOUR), *(title(i) for i in range(len(labels)))]
        per_tile = max(1, (tile_size - 8) // int(22 * TEXT_FONT_SCALE / 0.45))
        for start in range(0, len(lines), per_tile):
            block = np.zeros_like(face)
            _put_label(block, lines[start : start + per_tile])
            tiles.append(block)
    else:
        values = _as_numpy(maps)
        if values.ndim != 3 or values.shape[0] != len(labels):
            raise ValueError(
                f"attention_grid: maps must be N x h x w with N = {len(labels)} AU labels, got shape {values.shape}"
            )
        for index in range(len(labels)):
            tile = heatmap_overlay(face, values[index])
            _put_label(tile, [title(index)])
            tiles.append(tile)
    count = len(tiles)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * tile_size, columns * tile_size, 3), dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid[row * tile_size : (row + 1) * tile_size, column * tile_size : (column + 1) * tile_size] = tile
    if path is not None:
        write_image_atomic(path, grid)
    return grid


def draw_detections(frame: np.ndarray, faces: Sequence) -> np.ndarray:
    """A copy of an RGB frame with each face's box, landmarks, track id and detected AUs drawn on it.

    ``faces`` are :class:`~sevnet_hf.inference.detect.FaceResult` objects (rows without a face are ignored).
    """
    import cv2

    canvas = np.ascontiguousarray(frame).copy()
    for face in faces:
        if face.box is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), BOX_COLOUR, 2)
        if face.landmarks is not None:
            for x, y in np.asarray(face.landmarks).reshape(-1, 2):
                cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (255, 60, 60), -1)
        present = face.present_aus() if face.occurrences is not None else []
        header = f"#{face.track if face.track is not None else face.face}"
        lines = [header, " ".join(present) if present else "no AU"]
        for row, text in enumerate(lines):
            origin = (x0, min(canvas.shape[0] - 4, y1 + 16 * (row + 1)))
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1, cv2.LINE_AA)
    return canvas


class AnnotatedVideoWriter:
    """Write RGB frames to a video (MJPG for .avi, mp4v for .mp4/.m4v/.mov) under a temporary name, renamed to
    ``path`` by :meth:`close`; :meth:`abort` removes the partial file."""

    FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "MJPG"}

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = os.fspath(path)
        stem, extension = os.path.splitext(self.path)
        extension = extension.lower()
        if extension not in self.FOURCC:
            raise ValueError(f"{self.path}: annotated videos must end in one of {sorted(self.FOURCC)}")
        self.fourcc = self.FOURCC[extension]
        self.tmp = f"{stem}.partial{extension}"
        self.fps = fps if fps and fps > 0 else 25.0
        self._writer = None
        self.frames = 0

    def write(self, frame_rgb: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            height, width = frame_rgb.shape[:2]
            self._writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write {self.fourcc} video here")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
