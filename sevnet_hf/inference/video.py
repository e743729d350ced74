"""Streaming video decoding and face finding: full detection on stills, detection + tracking on videos.

Frames are decoded one at a time (``cv2.VideoCapture``); skipped frames (``every > 1``) are only grabbed, not
decoded. Nothing here keeps more than the current frame, so memory does not depend on the video's length.

Face finding uses the colleague-owned :mod:`sevnet_hf.data.align` (dlib detector, five template points, the
alignment template). On a video, the full detector runs on the first frame and whenever every track is lost; in
between, each face is tracked:

1. the face box for this frame is predicted from the previous frame's five points (the detector's box is stored in
   aligned-face coordinates at detection time and mapped back through each new alignment), and dlib's shape predictor
   re-measures the landmarks inside it (~2 ms instead of ~100 ms for a 640x480 HOG pass);
2. a cheap check runs every frame: the new landmarks must keep a plausible scale and position, and a 48x48 aligned
   grey patch must still correlate with the one stored at the last detection (normalised cross-correlation);
3. when that check fails, and anyway every ``verify_every`` frames, the detector runs on a small crop around the
   face (rescaled so the face is ~100 px). No face there means the track is lost.

Optionally ``redetect_every`` frames the full detector runs again to pick up faces that entered the picture.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..data.align import (
    TEMPLATE_SIZE,
    FaceFinder,
    alignment_matrix,
    dlib_models_dir,
    to_five_points,
    transform_points,
)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".ogv"}
)

# Aligned grey patch used by the per-frame appearance check; its side and the correlation below which a track is
# re-checked with the detector (expression changes keep it above ~0.7 on real faces; background falls well below).
PATCH_SIZE = 48
MIN_PATCH_CORRELATION = 0.5
# Face side (pixels) the crop is rescaled to before the verification detector runs (dlib's HOG window is 80 px).
VERIFY_FACE_SIDE = 100
CROP_CONTEXT = 2.0  # the verification crop is this many face sides wide


# ----------------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class VideoInfo:
    """What the container says about a video (``frame_count`` may be an estimate, or 0 when unknown)."""

    fps: float
    frame_count: int
    width: int
    height: int


def is_video_path(path: str | os.PathLike) -> bool:
    """True for file names with a common video extension."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def _open_capture(path: str | os.PathLike):
    import cv2

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in the name: OpenCV crashes (SIGSEGV) on such a str
        name = os.fsencode(name)
    capture = cv2.VideoCapture(name)
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"{path}: cannot be opened as a video (unknown format or damaged file)")
    return capture


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count and size of a video file (raises ``ValueError`` if it cannot be opened)."""
    import cv2

    capture = _open_capture(path)
    try:
        return VideoInfo(
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
    finally:
        capture.release()


def iter_video_frames(
    path: str | os.PathLike, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """Yield ``(frame_index, timestamp_seconds, rgb_uint8)`` for every ``every``-th frame, decoding one at a time.

    The timestamp is ``frame_index / fps`` when the container gives a frame rate, else the decoder's position.
    ``max_frames`` stops after that many decoded (yielded) frames.
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    capture = _open_capture(path)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        index = yielded = 0
        while max_frames is None or yielded < max_frames:
            if index % every:
                if not capture.grab():
                    break
                index += 1
                continue
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            timestamp = index / fps if fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if frame.ndim == 2:
                rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            else:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)
            yield index, timestamp, rgb
            yielded += 1
            index += 1
    finally:
        capture.release()


# Still-image formats that can hold an animation; their frames are read with Pillow, like a video's.
ANIMATED_IMAGE_FORMATS = frozenset({"GIF", "PNG", "WEBP"})


def is_animated_image(path: str | os.PathLike) -> bool:
    """True for an image file with more than one frame (animated GIF, APNG or WebP); False otherwise or if unreadable.

    Multi-picture JPEGs (MPO: a camera's preview or stereo pair) and multi-page TIFFs are not animations and count
    as stills, read as their first picture.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format in ANIMATED_IMAGE_FORMATS and getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, EOFError):
        return False


def iter_animation_frames(
    path: str | os.PathLike, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """:func:`iter_video_frames` for animated images: ``(frame_index, timestamp_seconds, rgb_uint8)``.

    The timestamp is the sum of the durations of the frames before (each frame's own ``duration``, in ms). A frame
    that cannot be decoded ends the animation with ``ValueError`` naming the file and the frame.
    """
    from PIL import Image

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    with Image.open(path) as image:
        elapsed_ms = 0.0
        yielded = 0
        for index in range(getattr(image, "n_frames", 1)):
            if max_frames is not None and yielded >= max_frames:
                break
            try:
                image.seek(index)
                duration = float(image.info.get("duration") or 0.0)
                rgb = np.asarray(image.convert("RGB")) if index % every == 0 else None
            except (OSError, ValueError, EOFError) as error:
                raise ValueError(f"{path}: frame {index} cannot be decoded ({error})") from error
            if rgb is not None:
                yield index, elapsed_ms / 1000.0, np.ascontiguousarray(rgb)
                yielded += 1
            elapsed_ms += duration


# ----------------------------------------------------------------------------------------------------------------------
# Face finding
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class FoundFace:
    """A face in one frame: box (x0, y0, x1, y1) and five template points in frame pixels.

    ``score`` is the detector's score when a detector ran on this frame for this face, else NaN; ``method`` is
    ``"detected"`` (full frame), ``"verified"`` (detector on a crop around the track) or ``"tracked"`` (landmarks
    only). ``track`` is a track id, stable while a face is followed through a video (the face's index on stills).
    """

    box: tuple[float, float, float, float]
    landmarks5: np.ndarray
    score: float
    method: str
    track: int


class Landmarker:
    """dlib's shape predictor run inside a given box; returns the five template points (the models' own files)."""

    def __init__(self, landmark_model: str = "5"):
        import dlib

        if landmark_model not in ("5", "68"):
            raise ValueError(f"landmark_model must be '5' or '68', got {landmark_model!r}")
        path = os.path.join(dlib_models_dir(), f"shape_predictor_{landmark_model}_face_landmarks.dat")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dlib model file {path} is missing; reinstall face-recognition-models")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(path)
        self._layout = "dlib5" if landmark_model == "5" else None

    def __call__(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return to_five_points(points, layout=self._layout)


_FINDERS: dict[tuple, FaceFinder] = {}


def shared_finder(
    upsample: int = 0, detector: str = "hog", threshold: float = 0.0, landmark_model: str = "5"
) -> FaceFinder:
    """A :class:`FaceFinder` shared by everything in this process that uses the same settings.

    Loading dlib's HOG detector takes seconds; detectors, trackers and pipelines created one after another reuse
    the loaded models. Treat the returned finder as read-only (ask for another one to change a setting).
    """
    key = (int(upsample), detector, float(threshold), landmark_model)
    if key not in _FINDERS:
        _FINDERS[key] = FaceFinder(
            upsample=upsample, detector=detector, threshold=threshold, landmark_model=landmark_model
        )
    return _FINDERS[key]


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def find_faces(
    image: np.ndarray, finder: FaceFinder, landmarker: Landmarker | None = None, max_side: int | None = 1600
) -> list[FoundFace]:
    """Run the full detector on one image (best score first).

    Images whose longer side exceeds ``max_side`` are shrunk (area averaging) for detection only: boxes are mapped
    back and, when a ``landmarker`` is given, the landmarks are measured again on the full-resolution image.
    """
    import cv2

    height, width = image.shape[:2]
    scale = 1.0
    small = image
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        small = cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    found = []
    for index, face in enumerate(finder.find(small)):
        box = tuple(float(v) / scale for v in face.box)
        if scale != 1.0:
            five = landmarker(image, box) if landmarker is not None else face.landmarks5 / scale
        else:
            five = face.landmarks5
        found.append(FoundFace(box, np.asarray(five, dtype=np.float32), float(face.score), "detected", index))
    return found


def _similarity_scale(matrix: np.ndarray) -> float:
    return math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))


def _box_to_template(box: tuple[float, ...], five: np.ndarray) -> np.ndarray:
    """(centre x, centre y, side) of a box in aligned-face coordinates."""
    matrix = alignment_matrix(five, TEMPLATE_SIZE)
    centre = transform_points([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], matrix)[0]
    side = math.sqrt(max(1.0, (box[2] - box[0]) * (box[3] - box[1]))) * _similarity_scale(matrix)
    return np.array([centre[0], centre[1], side])


def _box_from_template(template_box: np.ndarray, five: np.ndarray) -> tuple[float, float, float, float]:
    matrix = alignment_matrix(five, TEMPLATE_SIZE)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    centre = transform_points(template_box[None, :2], inverse)[0]
    half = template_box[2] / _similarity_scale(matrix) / 2
    return (float(centre[0] - half), float(centre[1] - half), float(centre[0] + half), float(centre[1] + half))


def _appearance_patch(gray: np.ndarray, five: np.ndarray) -> np.ndarray:
    """A zero-mean, unit-norm aligned grey patch for the normalised cross-correlation check."""
    import cv2

    patch = cv2.warpAffine(gray, alignment_matrix(five, PATCH_SIZE), (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR)
    patch = patch.astype(np.float32)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else patch


def _interocular(five: np.ndarray) -> float:
    return float(np.linalg.norm(five[1] - five[0]))


@dataclass
class _Track:
    track_id: int
    five: np.ndarray
    template_box: np.ndarray
    reference: np.ndarray
    since_verified: int = 0
    extra: dict = field(default_factory=dict)


class FaceTracker:
    """Follow faces through the frames of one video (see the module docstring for the procedure).

    Args:
        finder: the full detector (its ``upsample`` applies to full-frame detection).
        landmarker: the shape predictor used for tracking; built from ``finder.landmark_model`` when omitted.
        max_side: longer side above which frames are shrunk for full-frame detection.
        verify_every: run the detector on a crop around each track at least every this many frames (0: only when
            the cheap check fails).
        redetect_every: run the full detector every this many frames to find new faces (0: only when all tracks
            are lost).
    """

    def __init__(
        self,
        finder: FaceFinder,
        landmarker: Landmarker | None = None,
        max_side: int | None = 1600,
        verify_every: int = 10,
        redetect_every: int = 0,
    ):
        if verify_every < 0 or redetect_every < 0:
            raise ValueError("verify_every and redetect_every must be >= 0")
        self.finder = finder
        self.landmarker = landmarker if landmarker is not None else Landmarker(finder.landmark_model)
        self.crop_finder = shared_finder(0, finder.detector, finder.threshold, finder.landmark_model)
        self.max_side = max_side
        self.verify_every = verify_every
        self.redetect_every = redetect_every
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.since_full_detection = 0
        self.counts = {"full_detections": 0, "verifications": 0, "tracked": 0, "lost": 0}

    def reset(self) -> None:
        """Forget all tracks (the next frame runs the full detector)."""
        self.tracks = []

    # -- full detection --------------------------------------------------------------------------------------------
    def _detect_all(self, frame: np.ndarray, gray: np.ndarray) -> list[FoundFace]:
        self.counts["full_detections"] += 1
        self.since_full_detection = 0
        detections = find_faces(frame, self.finder, self.landmarker, self.max_side)
        previous = {t.track_id: _box_from_template(t.template_box, t.five) for t in self.tracks}
        tracks, found = [], []
        for face in detections:
            match = max(previous, key=lambda i: box_iou(previous[i], face.box), default=None)
            if match is not None and box_iou(previous[match], face.box) > 0.3:
                track_id = match
                del previous[match]
            else:
                track_id, self.next_id = self.next_id, self.next_id + 1
            five = face.landmarks5.astype(np.float64)
            tracks.append(_Track(track_id, five, _box_to_template(face.box, five), _appearance_patch(gray, five)))
            found.append(FoundFace(face.box, face.landmarks5, face.score, "detected", track_id))
        self.tracks = tracks
        return found

    # -- verification on a crop ------------------------------------------------------------------------------------
    def _verify(self, frame: np.ndarray, box: tuple[float, ...]) -> tuple[tuple[float, ...], float] | None:
        """Run the detector on a rescaled crop around ``box``; the matching detection's (box, score) or None."""
        import cv2

        self.counts["verifications"] += 1
        height, width = frame.shape[:2]
        side = max(box[2] - box[0], box[3] - box[1], 1.0)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = side * CROP_CONTEXT / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(math.ceil(cx + half))), min(height, int(math.ceil(cy + half)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        scale = VERIFY_FACE_SIDE / side
        crop = frame[y0:y1, x0:x1]
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        best = None
        for face in self.crop_finder.find(crop):
            mapped = (
                face.box[0] / scale + x0,
                face.box[1] / scale + y0,
                face.box[2] / scale + x0,
                face.box[3] / scale + y0,
            )
            overlap = box_iou(mapped, box)
            if overlap > 0.3 and (best is None or overlap > best[2]):
                best = (mapped, face.score, overlap)
        return None if best is None else (best[0], float(best[1]))

    # -- one frame -------------------------------------------------------------------------------------------------
    def update(self, frame: np.ndarray) -> list[FoundFace]:
        """Faces in this frame (ordered by track id); runs the full detector when no track survives."""
        gray = _gray(frame)
        self.since_full_detection += 1
        if not self.tracks or (self.redetect_every and self.since_full_detection >= self.redetect_every):
            return self._detect_all(frame, gray)
        kept, found = [], []
        for track in self.tracks:
            result = self._follow(track, frame, gray)
            if result is None:
                self.counts["lost"] += 1
                continue
            kept.append(track)
            found.append(result)
        # Two tracks that drifted onto the same face: keep the older one.
        unique, faces = [], []
        for track, face in sorted(zip(kept, found), key=lambda pair: pair[0].track_id):
            if any(box_iou(face.box, other.box) > 0.5 for other in faces):
                continue
            unique.append(track)
            faces.append(face)
        self.tracks = unique
        if not self.tracks:
            return self._detect_all(frame, gray)
        return faces

    def _follow(self, track: _Track, frame: np.ndarray, gray: np.ndarray) -> FoundFace | None:
        box = _box_from_template(track.template_box, track.five)
        five = self.landmarker(frame, box)
        previous_iod, iod = _interocular(track.five), _interocular(five)
        plausible = (
            iod > 4
            and 0.6 < iod / max(previous_iod, 1e-6) < 1.67
            and np.linalg.norm(five[:2].mean(0) - track.five[:2].mean(0)) < 1.5 * previous_iod
        )
        patch = _appearance_patch(gray, five) if plausible else None
        similar = patch is not None and float((patch * track.reference).sum()) >= MIN_PATCH_CORRELATION
        track.since_verified += 1
        due = self.verify_every and track.since_verified >= self.verify_every
        if plausible and similar and not due:
            self.counts["tracked"] += 1
            track.five = five
            return FoundFace(
                _box_from_template(track.template_box, five),
                five.astype(np.float32),
                math.nan,
                "tracked",
                track.track_id,
            )
        verified = self._verify(frame, box)
        if verified is None:
            return None
        detected_box, score = verified
        five = self.landmarker(frame, detected_box)
        track.five = five
        track.template_box = _box_to_template(detected_box, five)
        track.reference = _appearance_patch(gray, five)
        track.since_verified = 0
        return FoundFace(tuple(detected_box), five.astype(np.float32), score, "verified", track.track_id)
