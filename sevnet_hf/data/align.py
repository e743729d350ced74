"""Face alignment: five landmarks mapped onto a canonical template by a similarity transform.

Every prepared dataset stores faces aligned the same way, whatever the source landmarks were (BP4D/BP4D+ 49 points,
DISFA 66 points, dlib 68 or 5 points, or a dlib detection when a source ships none). Alignment reduces any layout to
five points in one order (image-left eye centre, image-right eye centre, nose tip, image-left mouth corner,
image-right mouth corner) and fits a rotation + uniform scale + translation (no shear, no reflection) onto
:data:`CANONICAL_TEMPLATE_5PT`.

Detection (:class:`FaceFinder`) needs the ``faces`` extra (``dlib-bin`` and ``face-recognition-models``); everything
else needs only numpy and OpenCV.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# The canonical template.
#
# Proportions are in units of the inter-ocular distance (IOD, eye centre to eye centre), measured from the midpoint
# between the eyes, x to the image right, y down. They follow dlib's 68-point convention (eye centre = mean of the
# six eye-contour points, nose tip = point 30, mouth corners = points 48/54) on a neutral frontal face; the 5-point
# residual of a neutral face (matplotlib's grace_hopper.jpg) against this template is about 1 pixel.
# The face is placed with IOD = 0.27 of the output width and the eye line at 0.35 of the height. On a 256 image this
# keeps the brows (~y 65), the chin (~y 215-222) and both cheeks (~x 50-207) inside with a margin, so a random
# 224 crop (training) or the centre 224 crop (test) still contains the whole face.
TEMPLATE_IOD_FRACTION = 0.27
TEMPLATE_EYE_LINE_FRACTION = 0.35
_TEMPLATE_IOD_UNITS = np.array(
    [
        [-0.50, 0.00],  # image-left eye centre
        [0.50, 0.00],  # image-right eye centre
        [0.00, 0.58],  # nose tip
        [-0.41, 1.12],  # image-left mouth corner
        [0.41, 1.12],  # image-right mouth corner
    ],
    dtype=np.float64,
)
TEMPLATE_SIZE = 256


def canonical_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Return the (5, 2) float32 five-point template for a ``size`` x ``size`` output."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    centre = np.array([0.5, TEMPLATE_EYE_LINE_FRACTION]) * size
    return (centre + _TEMPLATE_IOD_UNITS * TEMPLATE_IOD_FRACTION * size).astype(np.float32)


#: Five-point template in a 256 x 256 aligned face (order: image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner). Use :func:`canonical_template` for other sizes.
CANONICAL_TEMPLATE_5PT: np.ndarray = canonical_template(TEMPLATE_SIZE)
CANONICAL_TEMPLATE_5PT.flags.writeable = False

# dlib's own 5-point model (shape_predictor_5_face_landmarks.dat) marks different points in a different order:
# 0/1 = image-right eye outer/inner corner, 2/3 = image-left eye outer/inner corner, 4 = nose base (subnasale).
# It has no mouth points. These are the positions of those five points in the same IOD frame as the template,
# measured by fitting dlib's 68-point output onto the template on two sample photos (astronaut, grace_hopper) and
# mirror-averaging. A dlib-5 face is converted by fitting a similarity onto these and mapping the template back, so
# its nose tip and mouth corners are estimates, not measurements.
_DLIB5_IOD_UNITS = np.array(
    [[0.73, 0.05], [0.32, 0.07], [-0.73, 0.05], [-0.32, 0.07], [0.00, 0.82]],
    dtype=np.float64,
)

LANDMARK_LAYOUTS = {
    5: "5 points in template order (eyes, nose tip, mouth corners); pass layout='dlib5' for dlib's 5-point model",
    49: "49 points (BP4D/BP4D+ IntraFace: 68-point layout without the jaw and the inner mouth corners)",
    66: "66 points (DISFA: 68-point layout without the inner mouth corners 60 and 64)",
    68: "68 points (iBUG/dlib)",
}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` points onto ``dst``.

    Returns a (2, 3) float64 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point arrays with N >= 2 and equal shapes, got {src.shape} and {dst.shape}")
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = (src_c**2).sum() / len(src)
    if not np.isfinite(var_src) or var_src <= 1e-12:
        raise ValueError("source points are all identical (or not finite); cannot fit a similarity transform")
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_src)
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points; returns float64 (N, 2)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (N, 4) ``[x0, y0, x1, y1]`` boxes through an affine matrix; returns the enclosing axis-aligned boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
    mapped = transform_points(corners.reshape(-1, 2), matrix).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)


def _dlib5_to_five(points: np.ndarray) -> np.ndarray:
    """Eye centres = means of the measured eye corners; nose tip and mouth corners = the template's, mapped back
    through the similarity that fits the dlib points onto their usual positions (:data:`_DLIB5_IOD_UNITS`)."""
    to_unit = similarity_transform(points, _DLIB5_IOD_UNITS)
    back = np.linalg.inv(np.vstack([to_unit, [0.0, 0.0, 1.0]]))[:2]
    five = transform_points(_TEMPLATE_IOD_UNITS, back)
    five[0], five[1] = points[2:4].mean(axis=0), points[0:2].mean(axis=0)
    return five


def to_five_points(landmarks: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Reduce a landmark array to the template's five points, float64 (5, 2).

    Accepts 5 (template order), 49 (BP4D/BP4D+), 66 (DISFA) and 68 (dlib/iBUG) points; eye centres are the means of
    the eye contours. ``layout="dlib5"`` converts dlib's 5-point model output (eye corners + nose base), whose order
    and points differ from the template's.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim == 1 and points.size % 2 == 0:
        points = points.reshape(-1, 2)
    accepted = "; ".join(f"{n}: {text}" for n, text in LANDMARK_LAYOUTS.items())
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in LANDMARK_LAYOUTS:
        raise ValueError(
            f"landmarks of shape {tuple(np.shape(landmarks))} are not supported; accepted (N, 2): {accepted}"
        )
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks contain NaN or infinite values (a lost tracking frame?)")
    count = points.shape[0]
    if layout is not None and layout != "dlib5":
        raise ValueError(f"layout must be None or 'dlib5', got {layout!r}")
    if layout == "dlib5":
        if count != 5:
            raise ValueError(f"layout='dlib5' needs 5 points, got shape {points.shape}")
        return _dlib5_to_five(points)
    if count == 5:
        return points.copy()
    offset = 17 if count == 49 else 0  # the 49-point layout is the 68-point one without the 17 jaw points
    eyes_left = points[36 - offset : 42 - offset].mean(axis=0)
    eyes_right = points[42 - offset : 48 - offset].mean(axis=0)
    return np.stack([eyes_left, eyes_right, points[30 - offset], points[48 - offset], points[54 - offset]])


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert gray (HxW or HxWx1), RGB, RGBA, uint16 or float images to contiguous uint8 RGB (HxWx3).

    uint16 is scaled by 1/257 (full 16-bit range); floats with max <= 1 are taken as [0, 1], others as [0, 255].
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        finite_max = float(np.nanmax(array)) if array.size else 0.0
        scale = 255.0 if finite_max <= 1.0 else 1.0
        array = np.clip(np.rint(np.nan_to_num(array * scale)), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


_JPEG_MAGIC = b"\xff\xd8"


_EXIF_ORIENTATION = 0x0112


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag (1-8) of an image file; 1 (as stored) when it has none or it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H x W [x C]) upright as EXIF ``orientation`` says (PIL's ``exif_transpose`` order)."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # 5: transpose; with the flips below 6: 90 clockwise, 7: transverse, 8: 90 ccw
    flip_rows = orientation in (3, 4, 7, 8)  # 3: 180, 4: mirror vertical
    flip_columns = orientation in (2, 3, 6, 7)  # 2: mirror horizontal
    return np.ascontiguousarray(image[:: -1 if flip_rows else 1, :: -1 if flip_columns else 1])


def read_image(path: str | os.PathLike, reduce: int = 1, orient: bool = False) -> np.ndarray:
    """Read an image file as uint8 RGB (8/16-bit, gray or with alpha); raise ``ValueError`` if it cannot be decoded.

    ``reduce`` (2, 4 or 8; JPEG only) decodes at 1/reduce resolution through libjpeg's DCT scaling, several times
    faster than a full decode; pixel ``q`` of the result is centred on source pixel ``(q + 0.5) * reduce - 0.5``.
    By default pixels come as stored, which is what landmark files refer to; ``orient=True`` turns them upright as
    the EXIF orientation says (photos from phones and cameras; detection does this).
    """
    import cv2

    buffer = np.fromfile(os.fspath(path), dtype=np.uint8)
    flags = cv2.IMREAD_UNCHANGED
    if reduce != 1:
        reduced = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
        if reduce not in reduced:
            raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
        if buffer[:2].tobytes() != _JPEG_MAGIC:
            raise ValueError(f"{path}: reduce={reduce} needs a JPEG file; this one is not")
        flags = reduced[reduce] | cv2.IMREAD_IGNORE_ORIENTATION
    decoded = cv2.imdecode(buffer, flags) if buffer.size else None
    if decoded is None:
        raise ValueError(f"{path}: not a readable image (empty, truncated or an unknown format)")
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    elif decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    rgb = to_rgb_uint8(decoded)
    return apply_orientation(rgb, exif_orientation(path)) if orient else rgb


def jpeg_reduction(path: str | os.PathLike, landmarks: np.ndarray, size: int, layout: str | None = None) -> int:
    """The largest JPEG decode reduction (1, 2, 4, 8) that still leaves the face at least ``size`` resolution."""
    with open(path, "rb") as handle:
        if handle.read(2) != _JPEG_MAGIC:
            return 1
    matrix = alignment_matrix(landmarks, size, layout=layout)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return max([factor for factor in (1, 2, 4, 8) if factor * scale <= 1.0] or [1])


def alignment_matrix(landmarks: np.ndarray, size: int = TEMPLATE_SIZE, layout: str | None = None) -> np.ndarray:
    """The (2, 3) similarity that maps source-image coordinates to the ``size`` aligned face."""
    return similarity_transform(to_five_points(landmarks, layout=layout), canonical_template(size))


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = TEMPLATE_SIZE,
    *,
    layout: str | None = None,
    border: str = "constant",
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face so its landmarks land on the canonical template.

    Args:
        image: HxW gray, HxWx3 RGB, HxWx4 RGBA; uint8, uint16 or float (see :func:`to_rgb_uint8`).
        landmarks: source-image (x, y) points in a layout accepted by :func:`to_five_points`.
        size: output width and height; the template scales with it.
        layout: ``"dlib5"`` for dlib's 5-point model output, else None.
        border: ``"constant"`` (black outside the source image) or ``"replicate"`` (edge pixels repeated).

    Returns:
        ``(aligned, matrix)``: uint8 ``size`` x ``size`` x 3 RGB and the (2, 3) float64 source-to-aligned matrix.
    """
    import cv2

    modes = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}
    if border not in modes:
        raise ValueError(f"border must be one of {sorted(modes)}, got {border!r}")
    rgb = to_rgb_uint8(image)
    matrix = alignment_matrix(landmarks, size, layout=layout)
    source, warp = _shrink_for_warp(rgb, matrix, size)
    aligned = cv2.warpAffine(
        source, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=modes[border], borderValue=0
    )
    return aligned, matrix


def align_image_file(
    path: str | os.PathLike,
    landmarks: np.ndarray,
    size: int = TEMPLATE_SIZE,
    *,
    layout: str | None = None,
    border: str = "constant",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`align_face` for an image file, decoding a large JPEG face at a reduced size (see :func:`read_image`).

    Decoding dominates the cost of a frame, and a BP4D face is ~3x larger than the template, so this is ~3x
    faster than a full decode while the face keeps at least the output's resolution. The returned matrix maps
    source-image coordinates, as :func:`align_face`'s does.
    """
    five = to_five_points(landmarks, layout=layout)
    reduce = jpeg_reduction(path, five, size)
    image = read_image(path, reduce=reduce)
    if reduce == 1:
        return align_face(image, five, size, border=border)
    aligned, _ = align_face(image, (five + 0.5) / reduce - 0.5, size, border=border)
    return aligned, alignment_matrix(five, size)


def _shrink_for_warp(rgb: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face region and shrink it by area averaging when the warp would downscale by more than 2x.

    A bilinear warp samples only 4 pixels per output pixel, so a large source face (BP4D: ~3x) would alias. Cropping
    first also keeps the resize cheap. Returns the image to warp and the matrix to warp it with.
    """
    import cv2

    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale >= 0.5:
        return rgb, matrix
    inverse = cv2.invertAffineTransform(matrix)
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64), inverse)
    height, width = rgb.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 3, [width, height])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return rgb, matrix
    crop = rgb[y0:y1, x0:x1]
    new_w, new_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA)
    factors = np.array([new_w / (x1 - x0), new_h / (y1 - y0)])
    warp = np.empty_like(matrix)
    warp[:, :2] = matrix[:, :2] / factors[None, :]
    # Pixel centres: small pixel q covers source pixels around p = (q + 0.5) / factor - 0.5 + (x0, y0).
    offset = np.array([x0, y0], dtype=np.float64) + 0.5 / factors - 0.5
    warp[:, 2] = matrix[:, :2] @ offset + matrix[:, 2]
    return small, warp


# ---------------------------------------------------------------------------------------------------------------
# Detection with dlib.


def dlib_models_dir() -> str:
    """Folder of the model files shipped by ``face-recognition-models`` (located without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "face detection needs the 'face-recognition-models' package (dlib model files); "
            "install it with `pip install sevnet-hf[faces]` or `pip install face-recognition-models`"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def _model_file(name: str) -> str:
    path = os.path.join(dlib_models_dir(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib model file {path} is missing; reinstall face-recognition-models")
    return path


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as error:
        raise ImportError(
            "face detection needs dlib; install it with `pip install sevnet-hf[faces]` or `pip install dlib-bin`"
        ) from error
    return dlib


#: Minimum detector score for a detection to count as a face in AU detection (``sevnet-hf detect``, AUDetector).
#: dlib's HOG score is an SVM margin (its own default threshold is 0). Measured on the sample photos: weak hits on
#: textures, clothes and background score 0.03-0.21 (issue 15: a mission patch on a suit, 0.14); real faces above 1
#: when frontal and sharp, and 0.43-0.63 when turned 10-20 degrees or blurred. 0.3 drops the first and keeps the
#: second. Dataset preparation keeps dlib's 0: it takes the largest face of each image, which a weak hit seldom is.
MIN_FACE_SCORE = 0.3


@dataclass
class DetectedFace:
    """One detected face. ``box`` is (x0, y0, x1, y1) in source pixels; ``landmarks5`` is in the template's order."""

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class FaceFinder:
    """Find faces and their five template points with dlib (models load on first use).

    Args:
        upsample: how many times dlib doubles the image before detecting (finds smaller faces, ~4x slower each).
        detector: ``"hog"`` (dlib's frontal HOG + linear SVM, fast on CPU) or ``"cnn"`` (dlib's MMOD CNN, more
            robust to pose, slow without a GPU build of dlib).
        threshold: detection score threshold (HOG: SVM margin, 0 is dlib's default; CNN: confidence).
        landmark_model: ``"5"`` (dlib's 5-point model; nose tip and mouth corners are then estimated from the eye
            corners and the nose base) or ``"68"`` (the 68-point model: all five points measured, larger file).
        max_side: when set, images whose longer side exceeds it are shrunk before detection (HOG time grows with
            the pixel count: a 1392 x 1040 frame takes ~4x longer than at 800). Faces narrower than ~80 px after
            shrinking are missed. None (default) searches at full size. Landmarks are fitted at full resolution.
    """

    def __init__(
        self,
        upsample: int = 0,
        detector: str = "hog",
        threshold: float = 0.0,
        landmark_model: str = "5",
        max_side: int | None = None,
    ):
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        if landmark_model not in ("5", "68"):
            raise ValueError(f"landmark_model must be '5' or '68', got {landmark_model!r}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.upsample = int(upsample)
        self.detector = detector
        self.threshold = float(threshold)
        self.landmark_model = landmark_model
        self.max_side = int(max_side) if max_side else None
        self._detector: Any = None
        self._predictor: Any = None

    def describe(self) -> dict:
        """JSON-able settings, recorded in a prepared dataset's metadata."""
        return {
            "library": "dlib",
            "detector": self.detector,
            "upsample": self.upsample,
            "threshold": self.threshold,
            "landmark_model": f"shape_predictor_{self.landmark_model}_face_landmarks.dat",
            "max_side": self.max_side,
        }

    def _load(self) -> None:
        if self._predictor is not None:
            return
        dlib = _import_dlib()
        if self.detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
        self._predictor = dlib.shape_predictor(
            _model_file(f"shape_predictor_{self.landmark_model}_face_landmarks.dat")
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_detector"] = state["_predictor"] = None  # dlib objects do not pickle; reload in the other process
        return state

    def find(self, image: np.ndarray) -> list[DetectedFace]:
        """Detect faces in an image (any form :func:`to_rgb_uint8` accepts); best score first."""
        self._load()
        dlib = _import_dlib()
        rgb = to_rgb_uint8(image)
        search, factor = rgb, 1.0
        if self.max_side and max(rgb.shape[:2]) > self.max_side:
            import cv2

            factor = self.max_side / max(rgb.shape[:2])
            new_size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
            search = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)
        if self.detector == "hog":
            rects, scores, _ = self._detector.run(search, self.upsample, self.threshold)
            found = list(zip(rects, scores))
        else:
            found = [
                (d.rect, d.confidence) for d in self._detector(search, self.upsample) if d.confidence >= self.threshold
            ]
        faces = []
        for rect, score in found:
            # Boxes found on the shrunken image are scaled back; landmarks are fitted on the full image.
            corners = [round(value / factor) for value in (rect.left(), rect.top(), rect.right(), rect.bottom())]
            rect = dlib.rectangle(*corners)
            shape = self._predictor(rgb, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            five = to_five_points(points, layout="dlib5" if self.landmark_model == "5" else None)
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            faces.append(DetectedFace(box=box, score=float(score), landmarks5=five.astype(np.float32)))
        faces.sort(key=lambda face: -face.score)
        return faces

    def largest(self, image: np.ndarray) -> DetectedFace | None:
        """The detected face with the largest box, or None when there is none."""
        faces = self.find(image)
        return max(faces, key=lambda face: face.area) if faces else None
