"""Drawing synthetic AU-coded faces with numpy and OpenCV.

A face is described in a *canonical* frame (origin midway between the eyes, x to the image right, y down, inter-ocular
distance about 64 units), deformed by the AU intensities there, lifted onto an ellipsoid head model for yaw and pitch,
then rolled, scaled and shifted into the raw image by one affine map. Every primitive is drawn straight into the raw
image with anti-aliased sub-pixel polygons, so the only resampling is the camera model at the end (low resolution,
blur, noise, JPEG).

Three kinds of parameters drive a frame, each drawn from its own random stream so that switching an AU on changes
nothing else: :class:`Identity` (a person), :class:`Scene` (one recording: background, light, camera, base pose) and
:class:`FrameNuisance` (head motion, gaze, blink, blur, noise and JPEG of one frame). :func:`render_frame` returns the
image, the five landmarks a tracker would report, and per AU the raw-image points that bound the region the AU changes.

The AU vocabulary is :data:`sevnet_hf.protocols.PAPER_DESCRIBED_AUS`; see ``docs/synthetic.md`` for what each AU does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..protocols import PAPER_DESCRIBED_AUS

SYNTHETIC_AUS: tuple[int, ...] = PAPER_DESCRIBED_AUS
AU_INDEX: dict[int, int] = {au: i for i, au in enumerate(SYNTHETIC_AUS)}
MAX_INTENSITY = 5.0

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = float(1 << _SHIFT)

_SKIN_PALETTE = np.array(
    [
        (250, 224, 205),
        (238, 200, 172),
        (226, 180, 148),
        (204, 154, 116),
        (178, 126, 90),
        (146, 98, 68),
        (112, 74, 52),
        (84, 56, 42),
    ],
    dtype=np.float32,
)
_HAIR_COLOURS = np.array(
    [
        (28, 24, 22),
        (48, 34, 26),
        (82, 56, 38),
        (120, 86, 56),
        (170, 130, 80),
        (210, 176, 118),
        (140, 66, 34),
        (150, 148, 146),
        (210, 208, 204),
    ],
    dtype=np.float32,
)
_HAIR_WEIGHTS = np.array([0.22, 0.2, 0.16, 0.1, 0.08, 0.07, 0.05, 0.07, 0.05])
_IRIS_COLOURS = np.array(
    [(70, 44, 28), (40, 28, 20), (110, 84, 48), (76, 104, 68), (70, 106, 150), (104, 116, 126)], dtype=np.float32
)
_IRIS_WEIGHTS = np.array([0.35, 0.25, 0.12, 0.08, 0.12, 0.08])

HAIR_STYLES = ("short", "long", "shaved", "curly", "bangs", "receding", "bun")
BEARD_STYLES = ("none", "stubble", "moustache", "goatee", "full")


# ---------------------------------------------------------------------------------------------------------------
# Parameters


@dataclass
class Identity:
    """Everything fixed about one synthetic person. Geometry is in canonical units (eye centres at x = +-eye_dx)."""

    skin: np.ndarray
    lip_colour: np.ndarray
    hair_colour: np.ndarray
    brow_colour: np.ndarray
    iris_colour: np.ndarray
    clothes_colour: np.ndarray
    face_hw: float
    skull_top: float
    cheek_y: float
    chin_y: float
    jaw_frac: float
    chin_hw: float
    eye_dx: float
    eye_y: float
    eye_asym: float
    eye_hw: float
    eye_up: float
    eye_lo: float
    eye_tilt: float
    iris_r: float
    brow_gap: float
    brow_thick: float
    brow_inner: float
    brow_outer: float
    brow_arch: float
    nose_y: float
    nose_hw: float
    nostril: float
    nose_len: float
    mouth_y: float
    mouth_hw: float
    lip_up: float
    lip_lo: float
    bow: float
    hair_style: int
    hairline_y: float
    hair_volume: float
    ear_size: float
    age: float
    beard: int
    glasses: dict | None
    freckles: np.ndarray
    mole: np.ndarray | None
    chin_dimples: np.ndarray
    hair_strands: np.ndarray
    texture: np.ndarray
    au_gain: np.ndarray


@dataclass
class Scene:
    """One recording of one person (a task): background, light, camera and base head pose."""

    size: int
    background_seed: int
    background_kind: int
    background_colours: np.ndarray
    light_dir: np.ndarray
    light_strength: float
    gradient: np.ndarray
    tint: np.ndarray
    exposure: float
    lowres: float
    blur: float
    noise: float
    jpeg: float
    roll: float
    yaw: float
    pitch: float
    scale: float
    centre: np.ndarray
    motion: np.ndarray
    clothes_colour: np.ndarray
    _background: np.ndarray | None = field(default=None, repr=False)
    _light: np.ndarray | None = field(default=None, repr=False)


@dataclass
class FrameNuisance:
    """Per-frame variation that is independent of the AUs."""

    roll: float
    yaw: float
    pitch: float
    scale: float
    centre: np.ndarray
    gaze: np.ndarray
    blink: float
    blur: float
    motion_blur: float
    motion_angle: float
    noise: float
    jpeg: int
    light_flicker: float
    noise_offset: tuple[int, int]
    landmark_jitter: np.ndarray


@dataclass
class RenderedFrame:
    """A drawn frame: RGB uint8 image, (5, 2) landmarks and (n_aus, k, 2) region points, both in raw pixels."""

    image: np.ndarray
    landmarks: np.ndarray
    region_points: np.ndarray

    @property
    def regions(self) -> np.ndarray:
        """(n_aus, 4) raw-image boxes ``[x0, y0, x1, y1]`` enclosing each AU's region."""
        return np.concatenate([self.region_points.min(axis=1), self.region_points.max(axis=1)], axis=1)


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return np.asarray(a, np.float32) * (1.0 - t) + np.asarray(b, np.float32) * t


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person: face shape, skin tone, features, hair, accessories and per-AU expressiveness."""
    u = rng.uniform
    tone = u(0, len(_SKIN_PALETTE) - 1)
    lo = int(math.floor(tone))
    hi = min(lo + 1, len(_SKIN_PALETTE) - 1)
    skin = _mix(_SKIN_PALETTE[lo], _SKIN_PALETTE[hi], tone - lo) + rng.normal(0, 5, 3).astype(np.float32)
    skin = np.clip(skin * np.array([1.0, u(0.96, 1.02), u(0.93, 1.03)], np.float32), 20, 255)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)] * u(0.85, 1.15)
    hair = np.clip(hair + rng.normal(0, 6, 3), 5, 250).astype(np.float32)
    brow = np.clip(_mix(hair, skin * 0.35, u(0.0, 0.35)) * u(0.7, 0.95), 5, 230)
    if hair.mean() > 170:  # grey/white or blond hair still has visible brows
        brow = _mix(brow, skin * 0.45, 0.5)
    lipstick = u() < 0.15
    lip_target = np.array([rng.choice([150, 180, 200]), u(30, 70), u(50, 90)], np.float32)
    lip = _mix(skin, (175, 82, 82), u(0.3, 0.5)) * u(0.82, 0.97)
    if lipstick:
        lip = _mix(lip, lip_target, u(0.5, 0.8))
    face_hw = u(64.0, 80.0)
    masculine = u() < 0.5
    beard = 0
    if masculine and u() < 0.55:
        beard = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.2, 0.15, 0.25]))
    style = int(rng.choice(len(HAIR_STYLES), p=[0.24, 0.2, 0.1, 0.14, 0.12, 0.1, 0.1]))
    if masculine and style in (1, 6) and u() < 0.6:
        style = int(rng.choice([0, 2, 5]))
    glasses = None
    if u() < 0.28:
        glasses = {
            "round": bool(u() < 0.5),
            "colour": np.array(rng.choice([(20, 20, 20), (70, 45, 30), (150, 150, 155), (120, 30, 30)]), np.float32),
            "thick": float(u(1.0, 3.0)),
            "tint": float(u(0.0, 0.3) if u() < 0.3 else u(0.0, 0.06)),
            "w": float(u(6.0, 11.0)),
            "h": float(u(6.0, 11.0)),
            "dy": float(u(-1.0, 3.0)),
        }
    n_freckles = int(rng.integers(15, 40)) if u() < 0.15 else 0
    freckles = np.column_stack(
        [
            rng.uniform(-0.9, 0.9, n_freckles) * face_hw * 0.7,
            rng.uniform(8, 45, n_freckles),
            rng.uniform(0.6, 1.4, n_freckles),
        ]
    )
    mole = np.array([u(-0.7, 0.7) * face_hw, u(-40, 90), u(0.9, 1.8)]) if u() < 0.3 else None
    strands = rng.uniform(0, 1, (int(rng.integers(14, 30)), 3))
    texture = cv2.GaussianBlur(rng.normal(0, 1, (24, 24)).astype(np.float32), (0, 0), 1.5)
    texture = 1.0 + texture / (texture.std() + 1e-6) * u(0.02, 0.05)
    eye_dx = u(29.0, 35.0)
    return Identity(
        skin=skin.astype(np.float32),
        lip_colour=np.clip(lip, 10, 255).astype(np.float32),
        hair_colour=hair,
        brow_colour=brow.astype(np.float32),
        iris_colour=(_IRIS_COLOURS[rng.choice(len(_IRIS_COLOURS), p=_IRIS_WEIGHTS)] * u(0.85, 1.15)).astype(
            np.float32
        ),
        clothes_colour=rng.uniform(20, 235, 3).astype(np.float32),
        face_hw=face_hw,
        skull_top=u(-118.0, -104.0),
        cheek_y=u(0.0, 12.0),
        chin_y=u(112.0, 128.0),
        jaw_frac=u(0.62, 0.86) + (0.05 if masculine else 0.0),
        chin_hw=u(0.2, 0.36) * face_hw + (3.0 if masculine else 0.0),
        eye_dx=eye_dx,
        eye_y=0.0,
        eye_asym=u(-1.2, 1.2),
        eye_hw=u(12.0, 15.0),
        eye_up=u(5.5, 7.5),
        eye_lo=u(3.0, 4.5),
        eye_tilt=u(-0.06, 0.14),
        iris_r=u(5.4, 6.4),
        brow_gap=u(14.0, 21.0),
        brow_thick=u(3.5, 5.5) + (1.5 if masculine else 0.0) * u(0, 1),
        brow_inner=u(6.0, 11.0),
        brow_outer=eye_dx + u(12.0, 20.0),
        brow_arch=u(1.5, 6.0),
        nose_y=u(34.0, 42.0),
        nose_hw=u(13.0, 18.0),
        nostril=u(2.4, 3.6),
        nose_len=u(14.0, 22.0),
        mouth_y=u(68.0, 77.0),
        mouth_hw=u(21.0, 28.0),
        lip_up=u(4.5, 7.5),
        lip_lo=u(6.5, 10.5),
        bow=u(0.6, 2.4),
        hair_style=style,
        hairline_y=u(-80.0, -64.0),
        hair_volume=u(6.0, 16.0),
        ear_size=u(0.9, 1.15),
        age=float(u() ** 1.5),
        beard=beard,
        glasses=glasses,
        freckles=freckles,
        mole=mole,
        chin_dimples=rng.uniform(-1, 1, (9, 3)),
        hair_strands=strands,
        texture=texture.astype(np.float32),
        au_gain=rng.uniform(0.8, 1.2, len(SYNTHETIC_AUS)),
    )


def sample_scene(rng: np.random.Generator, identity: Identity, size: int = 320) -> Scene:
    """Draw one recording: background, light, camera quality and base head pose."""
    u = rng.uniform
    angle = u(0, 2 * math.pi)
    elevation = u(0.35, 0.9)
    light = np.array([math.cos(angle) * (1 - elevation), math.sin(angle) * (1 - elevation), elevation])
    grad_angle = u(0, 2 * math.pi)
    gradient = np.array([math.cos(grad_angle), math.sin(grad_angle)]) * u(0.0, 0.35)
    tint = 1.0 + np.array([1.0, 0.0, -1.0]) * rng.normal(0, 0.05) + rng.normal(0, 0.015, 3)
    kind = int(rng.integers(0, 5))
    colours = rng.uniform(15, 240, (3, 3)).astype(np.float32)
    if u() < 0.5:  # desaturated, office-like walls
        colours = _mix(colours, colours.mean(axis=1, keepdims=True), u(0.4, 0.9))
    scale = u(0.78, 1.08) * size / 320.0
    return Scene(
        size=size,
        background_seed=int(rng.integers(0, 2**31 - 1)),
        background_kind=kind,
        background_colours=colours.astype(np.float32),
        light_dir=light / np.linalg.norm(light),
        light_strength=u(0.15, 0.5),
        gradient=gradient,
        tint=tint.astype(np.float32),
        exposure=u(0.82, 1.12),
        lowres=u(0.45, 0.8) if u() < 0.3 else 1.0,
        blur=u(0.0, 0.8),
        noise=u(1.0, 6.0),
        jpeg=u(40.0, 95.0),
        roll=float(np.clip(rng.normal(0, 6), -14, 14)),
        yaw=float(np.clip(rng.normal(0, 7), -16, 16)),
        pitch=float(np.clip(rng.normal(0, 4), -9, 9)),
        scale=scale,
        centre=np.array([size * (0.5 + u(-0.06, 0.06)), size * (0.41 + u(-0.05, 0.05))]),
        motion=rng.uniform(0, 1, (6, 3)),
        clothes_colour=np.clip(identity.clothes_colour + rng.normal(0, 25, 3), 10, 245).astype(np.float32),
    )


def sample_frame_nuisances(rng: np.random.Generator, scene: Scene, times: np.ndarray) -> list[FrameNuisance]:
    """Per-frame nuisances for frames at ``times`` (seconds): smooth head motion and gaze, blinks, camera noise."""
    times = np.asarray(times, dtype=np.float64)
    motion = scene.motion

    def wave(row: int, amplitude: float) -> np.ndarray:
        freq = 0.04 + 0.25 * motion[row, 0]
        slow = np.sin(2 * math.pi * freq * times + 2 * math.pi * motion[row, 1])
        fast = np.sin(2 * math.pi * (freq * 2.7) * times + 2 * math.pi * motion[row, 2])
        return amplitude * (0.75 * slow + 0.25 * fast)

    blink_times = np.cumsum(rng.exponential(4.0, 16)) - rng.uniform(0, 4)
    gaze_phase = rng.uniform(0, 2 * math.pi, 4)
    gaze_freq = rng.uniform(0.05, 0.35, 2)
    frames = []
    for j, t in enumerate(times):
        closeness = np.clip(1.0 - np.abs(t - blink_times) / 0.14, 0.0, 1.0).max()
        motion_blur = float(rng.uniform(3, 8)) if rng.uniform() < 0.07 else 0.0
        frames.append(
            FrameNuisance(
                roll=scene.roll + wave(0, 4.0)[j] + rng.normal(0, 0.3),
                yaw=scene.yaw + wave(1, 6.0)[j] + rng.normal(0, 0.3),
                pitch=scene.pitch + wave(2, 3.0)[j] + rng.normal(0, 0.3),
                scale=scene.scale * (1.0 + wave(3, 0.03)[j]),
                centre=scene.centre + np.array([wave(4, 8.0)[j], wave(5, 5.0)[j]]) * scene.size / 320.0,
                gaze=np.array(
                    [
                        0.6 * math.sin(2 * math.pi * gaze_freq[0] * t + gaze_phase[0]),
                        0.4 * math.sin(2 * math.pi * gaze_freq[1] * t + gaze_phase[1]),
                    ]
                ),
                blink=float(closeness),
                blur=float(scene.blur + abs(rng.normal(0, 0.25))),
                motion_blur=motion_blur,
                motion_angle=float(rng.uniform(0, 180)),
                noise=float(scene.noise * rng.uniform(0.8, 1.2)),
                jpeg=int(np.clip(scene.jpeg + rng.normal(0, 5), 25, 98)),
                light_flicker=float(rng.normal(0, 0.015)),
                noise_offset=(int(rng.integers(0, 128)), int(rng.integers(0, 128))),
                landmark_jitter=rng.normal(0, 0.7, (5, 2)) * scene.size / 320.0,
            )
        )
    return frames


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers


def _smooth(t: np.ndarray | float) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@functools.lru_cache(maxsize=64)
def _tvec(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    t.flags.writeable = False
    return t


@functools.lru_cache(maxsize=64)
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.cos(th), np.sin(th)


@functools.lru_cache(maxsize=64)
def _bernstein(n: int, degree: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    s = 1.0 - t
    if degree == 2:
        return np.column_stack([s * s, 2 * s * t, t * t])
    return np.column_stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3])


def _bezier(p0, p1, p2, p3, n: int) -> np.ndarray:
    return _bernstein(n, 3) @ np.array([p0, p1, p2, p3], np.float64)


def _quad(p0, p1, p2, n: int) -> np.ndarray:
    return _bernstein(n, 2) @ np.array([p0, p1, p2], np.float64)


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    cos, sin = _circle(n)
    x, y = ax * cos, ay * sin
    out = np.empty((n, 2))
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        out[:, 0] = cx + ca * x - sa * y
        out[:, 1] = cy + sa * x + ca * y
    else:
        out[:, 0] = cx + x
        out[:, 1] = cy + y
    return out


_GRID_W = np.array([(wx, wy) for wy in (0.0, 0.5, 1.0) for wx in (0.0, 0.5, 1.0)])


def _box_points(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) boxes -> (n, 9, 2) points on a 3 x 3 grid over each box (the head model bends straight edges)."""
    boxes = np.asarray(boxes, np.float64)
    lo, hi = boxes[:, None, :2], boxes[:, None, 2:]
    return lo + (hi - lo) * _GRID_W[None]


class _Projector:
    """Canonical points -> raw pixels: ellipsoid head for yaw/pitch, then roll, scale and translation."""

    def __init__(self, identity: Identity, nuisance: FrameNuisance):
        self.cy = identity.cheek_y + 8.0
        self.ax = identity.face_hw * 1.02
        self.ay = (identity.chin_y - identity.skull_top) * 0.55
        self.az = identity.face_hw * 0.95
        yaw, pitch, roll = (math.radians(v) for v in (nuisance.yaw, nuisance.pitch, nuisance.roll))
        self.cyaw, self.syaw = math.cos(yaw), math.sin(yaw)
        self.cpit, self.spit = math.cos(pitch), math.sin(pitch)
        s = nuisance.scale
        cr, sr = math.cos(roll), math.sin(roll)
        self.linear = np.array([[cr, -sr], [sr, cr]]) * s
        self.offset = np.asarray(nuisance.centre, np.float64)
        self.scale = s

    def depth(self, pts: np.ndarray) -> np.ndarray:
        qx = pts[:, 0] * (1.0 / self.ax)
        qy = (pts[:, 1] - self.cy) * (1.0 / self.ay)
        return self.az * np.sqrt(np.maximum(1.0 - qx * qx - qy * qy, 0.0))

    def __call__(self, pts: np.ndarray, dz: float | np.ndarray = 0.0) -> np.ndarray:
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        depth = self.depth(pts) + dz
        px = pts[:, 0]
        x = px * self.cyaw + depth * self.syaw
        z1 = depth * self.cyaw - px * self.syaw
        y = (pts[:, 1] - self.cy) * self.cpit - z1 * self.spit + self.cy
        (l00, l01), (l10, l11) = self.linear
        out = np.empty_like(pts)
        out[:, 0] = x * l00 + y * l01 + self.offset[0]
        out[:, 1] = x * l10 + y * l11 + self.offset[1]
        return out


# Soft effects (wrinkles, folds, shadows, highlights) are multiplicative: they go into shading layers, one per blur
# width, stored as uint8 codes of log(factor) around 128 so that OpenCV's anti-aliasing blends them. Opaque fills
# drawn later reset the layers underneath (hair over forehead lines, lips over the sulcus).
_LEVELS = (0.6, 1.3, 2.8)
_CODE = 150.0
_NEUTRAL = (128.0, 128.0, 128.0)


class _Painter:
    """Records drawing commands on canonical points; :meth:`render` projects all points at once, then draws."""

    def __init__(self, project: _Projector, size: int):
        self.p = project
        self.s = project.scale
        self.size = size
        self._pts: list[np.ndarray] = []
        self._dz: list[float] = []
        self._counts: list[int] = []
        self._n = 0
        self.cmds: list[tuple] = []

    def _add(self, pts: np.ndarray, dz: float) -> tuple[int, int]:
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        self._pts.append(pts)
        self._dz.append(dz)
        self._counts.append(len(pts))
        start = self._n
        self._n += len(pts)
        return start, self._n

    def _px(self, width: float) -> int:
        return max(1, int(round(width * self.s)))

    def fill(self, pts: np.ndarray, colour, dz: float = 0.0, skin: bool = False) -> None:
        """Opaque anti-aliased polygon; ``skin`` polygons receive the face shading and texture."""
        self.cmds.append(("fill", [self._add(pts, dz)], _colour(colour), skin))

    def line(self, pts: np.ndarray, colour, width: float = 1.0, closed: bool = False, dz: float = 0.0) -> None:
        self.lines([pts], colour, width, closed, dz)

    def lines(
        self, shapes: Sequence[np.ndarray], colour, width: float = 1.0, closed: bool = False, dz: float = 0.0
    ) -> None:
        """Opaque anti-aliased polylines of ``width`` canonical units."""
        ranges = [self._add(pts, dz) for pts in shapes]
        if ranges:
            self.cmds.append(("line", ranges, _colour(colour), self._px(width), closed))

    def shade(
        self,
        shapes: Sequence[np.ndarray],
        factor: float | Sequence[float],
        alpha: float,
        sigma: float,
        width: float = 0.0,
        dz: float = 0.0,
    ) -> None:
        """Multiply pixels under the blurred ``shapes`` by ``factor`` (< 1 darker) with opacity ``alpha``.

        ``width`` 0 fills the shapes, otherwise they are stroked with that width (canonical units). ``sigma`` picks
        the nearest shading layer.
        """
        alpha = min(float(alpha), 1.0)
        if alpha <= 2e-3:
            return
        level = min(range(len(_LEVELS)), key=lambda i: abs(sigma - _LEVELS[i]))
        factors = (factor, factor, factor) if isinstance(factor, (int, float)) else factor
        code = tuple(min(255.0, max(0.0, 128.0 + alpha * _CODE * math.log(f))) for f in factors)
        ranges = [self._add(shape, dz) for shape in shapes]
        self.cmds.append(("shade", ranges, level, code, self._px(width) if width > 0 else 0))

    def paint(self, shapes: Sequence[np.ndarray], colour, alpha: float, sigma: float, dz: float = 0.0) -> None:
        """Blend soft-edged filled ``shapes`` toward ``colour`` (hair on skin: beards, brow edges, stubble)."""
        if alpha <= 2e-3:
            return
        self.cmds.append(("paint", [self._add(s, dz) for s in shapes], np.asarray(colour, np.float32), alpha, sigma))

    def render(self, background: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Execute the commands: returns the drawn image, the summed log-shading (or None) and the skin mask."""
        raw = self.p(np.concatenate(self._pts), np.repeat(np.asarray(self._dz, np.float64), self._counts))
        fixed = np.round(raw * _ONE).astype(np.int32)
        img = background.copy()
        h, w = img.shape[:2]
        layers: list[np.ndarray | None] = [None] * len(_LEVELS)
        spans: list[list[tuple[int, int]]] = [[] for _ in _LEVELS]
        skin = np.zeros((h, w), np.uint8)
        for cmd in self.cmds:
            kind, ranges = cmd[0], cmd[1]
            polys = [fixed[a:b].reshape(-1, 1, 2) for a, b in ranges]
            if kind == "fill":
                cv2.fillPoly(img, polys, cmd[2], cv2.LINE_AA, _SHIFT)
                for layer in layers:
                    if layer is not None:
                        cv2.fillPoly(layer, polys, _NEUTRAL, cv2.LINE_AA, _SHIFT)
                if cmd[3]:
                    cv2.fillPoly(skin, polys, 255, cv2.LINE_AA, _SHIFT)
            elif kind == "line":
                cv2.polylines(img, polys, cmd[4], cmd[2], cmd[3], cv2.LINE_AA, _SHIFT)
                for layer in layers:
                    if layer is not None:
                        cv2.polylines(layer, polys, cmd[4], _NEUTRAL, cmd[3], cv2.LINE_AA, _SHIFT)
            elif kind == "shade":
                level, code, thickness = cmd[2], cmd[3], cmd[4]
                if layers[level] is None:
                    layers[level] = np.full((h, w, 3), 128, np.uint8)
                if thickness:
                    cv2.polylines(layers[level], polys, False, code, thickness, cv2.LINE_AA, _SHIFT)
                else:
                    cv2.fillPoly(layers[level], polys, code, cv2.LINE_AA, _SHIFT)
                spans[level].extend(ranges)
            else:
                self._paint(img, layers, raw, polys, ranges, cmd[2], cmd[3], cmd[4])
        total = None
        for level, layer in enumerate(layers):
            if layer is None:
                continue
            sigma = _LEVELS[level] * self.s
            pad = int(3 * sigma) + 3
            used = raw[np.concatenate([np.arange(a, b) for a, b in spans[level]])]
            (x0, y0), (x1, y1) = used.min(axis=0).astype(int) - pad, used.max(axis=0).astype(int) + pad + 1
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x1 <= x0 or y1 <= y0:
                continue
            part = layer[y0:y1, x0:x1].astype(np.float32)
            k = 2 * int(round(1.6 * sigma)) + 1
            if k > 1:
                part = cv2.stackBlur(part, (k, k))
            if total is None:
                total = np.zeros((h, w, 3), np.float32)
            total[y0:y1, x0:x1] += part - 128.0
        return img, total, skin

    def _paint(self, img, layers, raw, polys, ranges, colour, alpha, sigma) -> None:
        pts = np.concatenate([raw[a:b] for a, b in ranges])
        sig = max(0.3, sigma * self.s)
        pad = int(math.ceil(3 * sig + 2))
        h, w = img.shape[:2]
        x0, y0 = max(0, int(pts[:, 0].min()) - pad), max(0, int(pts[:, 1].min()) - pad)
        x1, y1 = min(w, int(pts[:, 0].max()) + pad + 1), min(h, int(pts[:, 1].max()) + pad + 1)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [p - np.array([x0, y0], np.int32) * int(_ONE) for p in polys], 255, cv2.LINE_AA, _SHIFT)
        k = 2 * int(round(1.6 * sig)) + 1
        if k > 1:
            mask = cv2.stackBlur(mask, (k, k))
        weight = (mask.astype(np.float32) * (min(alpha, 1.0) / 255.0))[..., None]
        roi = img[y0:y1, x0:x1].astype(np.float32)
        img[y0:y1, x0:x1] = cv2.convertScaleAbs(roi + weight * (colour - roi))
        for layer in layers:
            if layer is not None:
                part = layer[y0:y1, x0:x1].astype(np.float32)
                layer[y0:y1, x0:x1] = cv2.convertScaleAbs(part + weight * (128.0 - part))


def _colour(c) -> tuple[float, float, float]:
    return tuple(min(255.0, max(0.0, float(v))) for v in c)


# ---------------------------------------------------------------------------------------------------------------
# Backgrounds, shading and camera


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed bank of sensor-like noise (shared luminance plus chroma); frames take shifted crops of it."""
    rng = np.random.default_rng(20240601 + size)
    shape = (size + 128, size + 128)
    shared = rng.standard_normal(shape, dtype=np.float32)
    bank = rng.standard_normal((*shape, 3), dtype=np.float32) + 0.6 * shared[..., None]
    return np.ascontiguousarray(bank / np.float32(math.sqrt(1.36)))


def warm_render_caches(size: int = 320) -> None:
    """Build the shared noise bank now (before worker processes fork, so they share it)."""
    _noise_bank(size)


def _light_map(scene: Scene) -> np.ndarray:
    """The scene's global lighting gradient (computed once per scene)."""
    if scene._light is None:
        coords = (np.arange(scene.size, dtype=np.float32) + 0.5) / scene.size - 0.5
        scene._light = (1.0 + scene.gradient[0] * coords[None, :] + scene.gradient[1] * coords[:, None]).astype(
            np.float32
        )
    return scene._light


def _background(scene: Scene) -> np.ndarray:
    """The scene's background (computed once per scene): gradient plus blobs, stripes, texture or tiles.

    Drawn at a quarter (smooth kinds) or half (patterned kinds) of the frame size, then enlarged.
    """
    if scene._background is not None:
        return scene._background
    size = scene.size
    kind = scene.background_kind
    work = max(16, size // (4 if kind in (0, 1) else 2))
    rng = np.random.default_rng(scene.background_seed)
    c0, c1, c2 = scene.background_colours
    coords = (np.arange(work, dtype=np.float32) + 0.5) / work
    xx, yy = coords[None, :], coords[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp
    if kind == 1:  # out-of-focus blobs
        layer = np.zeros((work, work, 3), np.float32)
        for _ in range(int(rng.integers(6, 16))):
            centre = (int(rng.integers(0, work)), int(rng.integers(0, work)))
            axes = (int(rng.integers(work // 16 + 1, work // 4)), int(rng.integers(work // 16 + 1, work // 4)))
            colour = _mix(c2, rng.uniform(0, 255, 3), 0.5)
            cv2.ellipse(layer, centre, axes, rng.uniform(0, 180), 0, 360, _colour(colour), -1)
        mask = (layer.sum(axis=2, keepdims=True) > 0).astype(np.float32)
        img = cv2.GaussianBlur(img * (1 - 0.7 * mask) + 0.7 * layer, (0, 0), work / 40)
    elif kind == 2:  # stripes / panels
        period = rng.uniform(0.06, 0.3)
        phase = (xx * math.cos(angle + 1.2) + yy * math.sin(angle + 1.2)) / period
        stripe = (np.sin(2 * math.pi * phase) > rng.uniform(-0.5, 0.5)).astype(np.float32)[..., None]
        img = img * (1 - 0.35 * stripe) + c2 * 0.35 * stripe
    elif kind == 3:  # fabric-like texture
        tex = cv2.GaussianBlur(rng.standard_normal((work, work)).astype(np.float32), (0, 0), rng.uniform(0.5, 2))
        img = img * (1 + 0.12 * (tex / (tex.std() + 1e-6))[..., None])
    elif kind == 4:  # tiles
        cell = rng.uniform(0.08, 0.2)
        checker = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)[..., None]
        img = img * (1 - 0.25 * checker) + c2 * 0.25 * checker
    img = cv2.resize(np.clip(img, 0, 255).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    scene._background = cv2.convertScaleAbs(img)
    return scene._background


def _skin_shading(skin_mask: np.ndarray, identity: Identity, scene: Scene, project: _Projector) -> np.ndarray:
    """Single-channel multiplier: ellipsoid diffuse shading and skin texture on skin pixels, 1 elsewhere."""
    size = scene.size
    grid = max(16, size // 8)
    inv = np.linalg.inv(project.linear)
    centres = (np.arange(grid, dtype=np.float64) + 0.5) * (size / grid)
    xs, ys = np.meshgrid(centres, centres)
    canon = (np.column_stack([xs.ravel(), ys.ravel()]) - project.offset) @ inv.T
    canon[:, 0] -= project.az * 0.6 * project.syaw
    qx = canon[:, 0] / project.ax
    qy = (canon[:, 1] - project.cy) / (project.ay * 1.05)
    nz = np.sqrt(np.clip(1 - qx * qx - qy * qy, 0.02, 1.0))
    normal = np.column_stack([qx, qy, nz])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    diffuse = np.clip(normal @ scene.light_dir, 0.0, 1.0)
    shade = (1.0 - scene.light_strength) + scene.light_strength * 1.25 * diffuse
    tex = identity.texture
    tx = ((np.clip(qx, -1, 1) * 0.5 + 0.5) * (tex.shape[1] - 1)).reshape(grid, grid).astype(np.float32)
    ty = ((np.clip(qy, -1, 1) * 0.5 + 0.5) * (tex.shape[0] - 1)).reshape(grid, grid).astype(np.float32)
    texture = cv2.remap(tex, tx, ty, cv2.INTER_LINEAR)
    mult = cv2.resize((shade.reshape(grid, grid) * texture).astype(np.float32), (size, size))
    mask = skin_mask.astype(np.float32) * np.float32(1.0 / 255.0)
    return cv2.scaleAdd(cv2.multiply(mask, mult - 1.0), 1.0, np.ones_like(mult))


def _camera(
    image: np.ndarray, shading: np.ndarray | None, skin_mult: np.ndarray, scene: Scene, nuisance: FrameNuisance
) -> np.ndarray:
    """Light, colour cast, optics (low resolution, blur, motion blur), sensor noise and JPEG."""
    size = scene.size
    gain = cv2.multiply(_light_map(scene), skin_mult, scale=float(scene.exposure + nuisance.light_flicker))
    gain3 = cv2.merge([gain * float(t) for t in scene.tint])
    if shading is not None:
        gain3 = cv2.multiply(gain3, cv2.exp(shading * np.float32(1.0 / _CODE)))
    out = cv2.multiply(image.astype(np.float32), gain3)
    if scene.lowres < 0.99:
        small = max(8, int(size * scene.lowres))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if nuisance.blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), nuisance.blur)
    if nuisance.motion_blur > 0:
        length = max(2, int(nuisance.motion_blur * size / 320))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), nuisance.motion_angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    ox, oy = nuisance.noise_offset
    out = cv2.scaleAdd(_noise_bank(size)[oy : oy + size, ox : ox + size], float(nuisance.noise), out)
    out = cv2.convertScaleAbs(out)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(nuisance.jpeg)])
    if ok:
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The face. Functions take the painter, the identity and the AU activations ``a`` (AU -> 0..~1.2).


def _face_outline(idt: Identity, jaw_drop: float, chin_up: float) -> np.ndarray:
    """Closed face contour (skull top, cheeks, jaw, chin), jaw lowered by ``jaw_drop`` units."""
    hw = idt.face_hw
    cy = idt.cheek_y
    phi = np.linspace(0, math.pi / 2, 14)
    upper = np.column_stack([hw * np.sin(phi), cy + (idt.skull_top - cy) * np.cos(phi)])
    jaw_hw = hw * idt.jaw_frac
    lower = _bezier(
        (hw, cy),
        (hw * 1.0, cy + 0.45 * (idt.mouth_y - cy)),
        (jaw_hw + 0.15 * hw, idt.mouth_y + 10),
        (jaw_hw, idt.mouth_y + 16),
        10,
    )[1:]
    chin = _bezier(
        (jaw_hw, idt.mouth_y + 16),
        (jaw_hw - 0.2 * hw, idt.chin_y - 4),
        (idt.chin_hw + 6, idt.chin_y),
        (0, idt.chin_y + 1),
        12,
    )[1:]
    right = np.concatenate([upper, lower, chin])
    right[:, 1] += _jaw_shift(idt, right[:, 1], jaw_drop)
    right[:, 0] *= 1.0 - 0.04 * (jaw_drop / 12.0) * _smooth((right[:, 1] - idt.mouth_y) / 20.0)
    right[:, 1] -= chin_up * _smooth(1 - np.abs(right[:, 0]) / (idt.chin_hw + 10)) * (right[:, 1] > idt.mouth_y)
    left = right[::-1].copy()
    left[:, 0] *= -1
    return np.concatenate([right, left[1:-1]])


def _jaw_shift(idt: Identity, y: float | np.ndarray, jaw_drop: float) -> np.ndarray:
    """How far the jaw opening (AU26) moves a point at height ``y``: nothing above the mouth, fully at the chin."""
    start = idt.mouth_y - 2.0
    return jaw_drop * _smooth((np.asarray(y, np.float64) - start) / (idt.chin_y - start))


def _draw_hair_back(pt: _Painter, idt: Identity) -> None:
    style = HAIR_STYLES[idt.hair_style]
    hw = idt.face_hw
    vol = idt.hair_volume
    col = idt.hair_colour
    if style in ("long", "curly", "bun"):
        bottom = {"long": idt.chin_y + 70, "curly": idt.mouth_y + 10, "bun": idt.cheek_y + 10}[style]
        width = hw + vol + (10 if style == "curly" else 4)
        top = idt.skull_top - vol
        shape = np.concatenate(
            [
                _quad((-width * 0.95, bottom), (-width * 1.08, idt.cheek_y - 20), (-width * 0.8, top + 25), 10),
                _quad((-width * 0.8, top + 25), (0, top - 12), (width * 0.8, top + 25), 12),
                _quad((width * 0.8, top + 25), (width * 1.08, idt.cheek_y - 20), (width * 0.95, bottom), 10),
            ]
        )
        pt.fill(shape, col * 0.8, dz=-pt.p.az * 0.5)
    if style == "bun":
        pt.fill(_ellipse(0, idt.skull_top - vol - 8, 20, 15), col * 0.9, dz=-pt.p.az * 0.3)


def _draw_hair_front(pt: _Painter, idt: Identity) -> None:
    style = HAIR_STYLES[idt.hair_style]
    hw = idt.face_hw
    col = idt.hair_colour
    top = idt.skull_top
    vol = idt.hair_volume if style != "shaved" else 1.5
    hl = idt.hairline_y
    if style == "bangs":
        hl = idt.eye_y - idt.brow_gap - idt.brow_arch - 16
    elif style == "receding":
        hl = idt.hairline_y - 14
    phi = np.linspace(-math.pi / 2, math.pi / 2, 25)
    ax, ay = hw + vol * 0.6, (idt.cheek_y - top) + vol
    outer = np.column_stack([ax * np.sin(phi), idt.cheek_y - 18 - (ay - 18) * np.cos(phi)])
    side = idt.cheek_y - 30 + (20 if style in ("long", "curly", "bun") else 0)
    outer[0] = (-ax * 0.99, side)
    outer[-1] = (ax * 0.99, side)
    if style == "curly":
        bumps = 1.0 + 0.06 * np.sin(np.linspace(0, 14 * math.pi, len(outer)))
        outer = np.column_stack([outer[:, 0] * bumps, idt.cheek_y + (outer[:, 1] - idt.cheek_y) * bumps])
    xs = np.linspace(hw * 0.97, -hw * 0.97, 25)
    rel = xs / hw
    inner_y = hl + (side - hl) * np.abs(rel) ** 2.2
    if style == "receding":
        inner_y -= 10 * np.exp(-((np.abs(rel) - 0.45) ** 2) / 0.02)
    if style == "bangs":
        inner_y += 3 * np.sin(np.linspace(0, 9 * math.pi, len(xs)))
    shape = np.concatenate([outer, np.column_stack([xs, inner_y])])
    if style == "shaved":
        pt.paint([shape], col, 0.5, 1.5)
        return
    pt.fill(shape, col)
    dark, light = [], []
    for a, b, c in idt.hair_strands:
        x = (a * 2 - 1) * hw * 0.85
        y0 = top + 6 + b * 10
        y1 = hl + (side - hl) * abs(x / hw) ** 2.2 - 2
        if y1 - y0 >= 6:
            curve = _quad((x, y0), (x + (c - 0.5) * 20, (y0 + y1) / 2), (x + (c - 0.5) * 8, y1), 6)
            (dark if c > 0.5 else light).append(curve)
    pt.lines(dark, col * 0.75, 1.0)
    pt.lines(light, np.clip(col * 1.25 + 4, 0, 255), 1.0)


def _eye_geometry(idt: Identity, sgn: int, a: dict, blink: float) -> tuple[np.ndarray, np.ndarray, dict]:
    cx = sgn * idt.eye_dx
    cy = idt.eye_y + sgn * idt.eye_asym * 0.5
    hw = idt.eye_hw
    inner = np.array([cx - sgn * hw, cy + idt.eye_tilt * hw * 0.3])
    outer = np.array([cx + sgn * hw, cy - idt.eye_tilt * hw])
    t = _tvec(13)
    base = inner[None, :] * (1 - t) + outer[None, :] * t
    t = t[:, 0]
    bump = np.sin(math.pi * t) ** 0.9 * (1 + 0.25 * np.sin(math.pi * t - 0.6))
    up = idt.eye_up * (1 - 0.3 * a[4] - 0.25 * a[7]) * (1 - 0.92 * blink)
    lo = idt.eye_lo * (1 - 0.4 * a[6] - 0.6 * a[7]) * (1 - 0.3 * blink)
    # AU6 pushes the lower lid up mostly at its outer half; AU7 straightens it.
    lo_shape = np.sin(math.pi * t) ** (1.0 - 0.5 * min(a[7], 1.0)) * (1.0 - 0.35 * a[6] * t)
    upper = base.copy()
    upper[:, 1] -= up * bump
    lower = base.copy()
    lower[:, 1] += lo * lo_shape
    lower[:, 1] = np.maximum(lower[:, 1], upper[:, 1] + 0.2)
    return upper, lower, {"cx": cx, "cy": cy, "inner": inner, "outer": outer}


def _draw_eyeballs(pt: _Painter, idt: Identity, a: dict, nz: FrameNuisance) -> list:
    """Sclera, iris and pupil, then skin-coloured lids drawn over whatever the opening does not show."""
    geoms = []
    for sgn in (-1, 1):
        upper, lower, info = _eye_geometry(idt, sgn, a, nz.blink)
        geoms.append((sgn, upper, lower, info))
        cx, cy = info["cx"], info["cy"]
        pt.fill(np.concatenate([upper, lower[::-1]]), np.clip(_mix((240, 234, 228), idt.skin, 0.12), 0, 255))
        ix = cx + nz.gaze[0] * idt.eye_hw * 0.3
        iy = cy + nz.gaze[1] * 1.5 + 0.3
        pt.fill(_ellipse(ix, iy, idt.iris_r, idt.iris_r, n=20), idt.iris_colour)
        pt.fill(_ellipse(ix, iy, idt.iris_r * 0.42, idt.iris_r * 0.42, n=14), (15, 12, 12))
        pt.fill(_ellipse(ix - 1.5, iy - 1.8, 1.0, 1.0, n=8), (245, 245, 245))
        reach = idt.iris_r + 3.0
        cover_up = np.concatenate([upper, (upper - (0, reach))[::-1]])
        cover_lo = np.concatenate([lower, (lower + (0, reach))[::-1]])
        pt.fill(cover_up, idt.skin)
        pt.fill(cover_lo, idt.skin)
    return geoms


def _draw_eye_details(pt: _Painter, idt: Identity, a: dict, nz: FrameNuisance, geoms: list) -> None:
    lash = np.clip(_mix(idt.brow_colour, (20, 15, 12), 0.6), 0, 255)
    crow_alpha = 0.95 * a[6] + 0.25 * idt.age
    for sgn, upper, lower, info in geoms:
        cx, cy = info["cx"], info["cy"]
        crease = upper.copy()
        crease[:, 1] -= 3.0 + 0.6 * idt.eye_up * (1 - 0.6 * min(a[4], 1.0))
        pt.shade([_ellipse(cx, cy - 4, idt.eye_hw * 1.2, idt.eye_up + 5)], 0.9, 0.7, 2.8)
        pt.shade([crease[2:-1]], 0.7, 0.65 * (1 - 0.5 * min(a[4], 1.0)), 0.6, width=1.0)
        pt.line(upper, lash, 1.7 + 0.4 * (1 - nz.blink))
        pt.shade([lower[1:-1]], 0.7, 0.7, 0.6, width=0.9)
        if a[7] > 0:  # AU7: tense lower lid bulge right under the lid
            bulge = lower[2:-2] + (0, 2.4)
            pt.shade([bulge], 0.7, 0.9 * a[7], 0.6, width=1.0)
        # AU6: infraorbital bag line and puff, crow's feet
        bag = lower[1:-1] + (0, 6.5 - 2.5 * a[6] + 1.0 * (1 - idt.age))
        pt.shade([bag], 0.72, 0.85 * a[6] + 0.25 * idt.age, 0.6, width=1.1)
        if a[6] > 0:
            puff = np.concatenate([lower[2:-1] + (0, 1.5), bag[::-1][1:-1]])
            pt.shade([puff], 1.13, 0.8 * a[6], 1.3)
        if crow_alpha > 0.01:
            corner = info["outer"] + np.array([sgn * 3.0, 0.5])
            lines = []
            for ang in (-0.5, -0.15, 0.2, 0.55):
                d = np.array([sgn * math.cos(ang), math.sin(ang)])
                lines.append(np.stack([corner + d * 1.5, corner + d * (6 + 5 * a[6])]))
            pt.shade(lines, 0.62, crow_alpha, 0.6, width=0.9)


def _brow(idt: Identity, sgn: int, a: dict) -> tuple[np.ndarray, np.ndarray]:
    s = _tvec(11)[:, 0]
    x = sgn * (idt.brow_inner + (idt.brow_outer - idt.brow_inner) * s)
    y = idt.eye_y - idt.brow_gap - idt.brow_arch * np.sin(math.pi * np.clip(s * 0.95, 0, 1) * 0.9) + 2.0 * s
    y = y + sgn * idt.eye_asym * 0.5
    y -= 9.0 * a[1] * (1 - s) ** 1.8
    y -= 8.5 * a[2] * s**1.3
    y += 6.0 * a[4] * (1 - 0.45 * s)
    x -= sgn * (5.0 * a[4] * (1 - s) ** 1.5)
    thick = idt.brow_thick * (1.0 - 0.55 * s**1.5) * (1 + 0.25 * a[4] * (1 - s))
    return np.column_stack([x, y - thick * 0.55]), np.column_stack([x, y + thick * 0.45])


def _draw_brows_and_forehead(pt: _Painter, idt: Identity, a: dict) -> None:
    brow_y = idt.eye_y - idt.brow_gap
    lines_age, lines_1, lines_2 = [], [], []
    for k, dy in enumerate((10.0, 17.0, 24.0)):
        yb = brow_y - dy - idt.brow_arch * 0.5
        span = idt.face_hw * 0.62
        lines_age.append(_quad((-span, yb + 2), (0, yb - 3), (span, yb + 2), 9))
        w = idt.eye_dx * (0.65 - 0.08 * k)
        yc = yb + 4 - 3.5 * a[1]
        lines_1.append(_quad((-w, yc + 2.5), (0, yc - 3.0 - 2 * a[1]), (w, yc + 2.5), 9))
        for sgn in (-1, 1):
            xa, xb = sgn * idt.eye_dx * 0.55, sgn * (idt.brow_outer - 2)
            yc = yb + 4 - 4.0 * a[2]
            lines_2.append(_quad((xa, yc), ((xa + xb) / 2, yc - 3.5), (xb, yc + 3.5), 8))
    if idt.age > 0.3:
        pt.shade(lines_age, 0.82, 0.35 * idt.age, 0.6, width=1.0)
    pt.shade(lines_1, 0.66, 1.1 * a[1], 0.6, width=1.0)  # AU1: central forehead wrinkles
    pt.shade(lines_2, 0.66, 1.1 * a[2], 0.6, width=1.0)  # AU2: lateral forehead wrinkles
    if a[4] > 0:  # AU4: vertical glabella furrows and bulge
        furrows = []
        for sgn in (-1, 1):
            x = sgn * (2.5 + 1.5 * (1 - min(a[4], 1.0)))
            furrows.append(_quad((x, brow_y - 7), (x + sgn * 1.5, brow_y + 1), (x + sgn * 0.5, brow_y + 8), 7))
        pt.shade(furrows, 0.58, 1.2 * a[4], 0.6, width=1.1)
        pt.shade([_ellipse(0, brow_y + 2, 6, 5)], 1.08, a[4], 2.8)
    polys = []
    for sgn in (-1, 1):
        top, bottom = _brow(idt, sgn, a)
        polys.append(np.concatenate([top, bottom[::-1]]))
    pt.paint(polys, idt.brow_colour, 0.55, 1.2)
    for poly in polys:
        pt.fill(poly, idt.brow_colour)


def _draw_nose(pt: _Painter, idt: Identity, a: dict) -> None:
    ny = idt.nose_y
    nw = idt.nose_hw
    nl = idt.nose_len
    lift = 3.0 * a[9] + 1.5 * a[10]
    widen = 1.0 + 0.2 * a[9]
    bridges = [_quad((sgn * 6, idt.eye_y + 4), (sgn * 7.5, ny - 14), (sgn * nw * 0.7, ny - 7), 7) for sgn in (-1, 1)]
    pt.shade(bridges, 0.85, 0.55, 1.3, width=2.0, dz=nl * 0.4)
    pt.shade([_ellipse(0, ny - 5, nw * 0.42, 6)], 1.1, 0.8, 2.8, dz=nl)
    pt.shade([_ellipse(0, ny + 6 - lift * 0.5, nw * 0.8, 4)], 0.8, 0.5, 2.8, dz=nl * 0.4)
    wings = []
    for sgn in (-1, 1):
        wings.append(
            _quad(
                (sgn * nw * 0.55 * widen, ny - 9 - lift),
                (sgn * nw * 1.1 * widen, ny - 3 - lift),
                (sgn * nw * 0.5 * widen, ny + 4.5 - lift * 0.8),
                8,
            )
        )
        nostril = _ellipse(
            sgn * nw * 0.42 * widen, ny + 3 - lift, idt.nostril * 1.3 * widen, idt.nostril * 0.62, sgn * 0.35, n=14
        )
        pt.fill(nostril, idt.skin * 0.38, dz=nl * 0.45)
    pt.shade(wings, 0.6, 0.85, 0.6, width=1.2, dz=nl * 0.3)
    if a[9] > 0:  # AU9: wrinkles across and beside the bridge
        lines = []
        for k in range(3):
            y = idt.eye_y + 9 + 5 * k
            lines.append(_quad((-6, y + 1), (0, y - 2), (6, y + 1), 6))
        for sgn in (-1, 1):
            lines.append(np.array([(sgn * 6.5, idt.eye_y + 13), (sgn * (nw * 0.75), idt.eye_y + 22)]))
            lines.append(np.array([(sgn * 6.0, idt.eye_y + 19), (sgn * (nw * 0.8), idt.eye_y + 28)]))
        pt.shade(lines, 0.6, 1.2 * a[9], 0.6, width=1.0, dz=nl * 0.35)


def _mouth_geometry(idt: Identity, a: dict) -> dict:
    """Lip contours in canonical units for the current AU state."""
    mw = idt.mouth_hw * (1 + 0.07 * a[12] - 0.07 * a[14] - 0.1 * a[23] - 0.05 * a[24])
    corner_dx = mw + 5.0 * a[12]
    corner_dy = -7.0 * a[12] + 6.5 * a[15] - 1.0 * a[14] + 0.5 * a[17]
    my = idt.mouth_y
    jaw = 12.0 * a[26]
    thin = 1.0 - 0.42 * min(a[23], 1.0) - 0.5 * min(a[24], 1.0)
    gap = (6.5 * a[25] + 0.7 * jaw * min(1.0, 3 * a[25])) * (1.0 - 0.5 * min(a[24], 1.0))
    raise_up = 4.5 * a[10]
    v = np.linspace(-1.0, 1.0, 17)
    av = np.abs(v)
    x = v * corner_dx
    line = my + corner_dy * av**2.2 - 1.2 * a[17] * (1 - av**2) - 2.0 * a[12] * av**6
    # the jaw drop separates the lips only as far as they part (AU25); otherwise the closed mouth moves down a little
    lower_drop = 0.45 * jaw * (1 - av**2) ** 0.8 * min(1.0, 3.0 * a[25])
    line = line + 0.2 * jaw * (1 - av**2)
    g = gap * (1 - av**2) ** 0.7
    up_raise = raise_up * (1 - av**2) ** 1.5
    upper_inner = line - 0.35 * g - up_raise * 0.75
    lower_inner = line + 0.65 * g + lower_drop
    bow = idt.bow * np.exp(-((av - 0.25) ** 2) / 0.02) - idt.bow * 0.7 * np.exp(-(v**2) / 0.01)
    upper_outer = upper_inner - (idt.lip_up * thin * (1 - av**2.5) ** 0.6 + bow * thin) - up_raise * 0.25
    lower_outer = lower_inner + idt.lip_lo * thin * (1 - av**2) ** 0.55 - 2.5 * a[17] * (1 - av**2)
    return {
        "x": x,
        "upper_inner": upper_inner,
        "upper_outer": upper_outer,
        "lower_inner": lower_inner,
        "lower_outer": lower_outer,
        "gap": g,
        "corners": np.array([[-corner_dx, my + corner_dy], [corner_dx, my + corner_dy]]),
        "jaw": jaw,
    }


def _draw_lower_face(pt: _Painter, idt: Identity, a: dict, m: dict) -> None:
    jaw = m["jaw"]
    corners = m["corners"]
    fold_alpha = 0.25 * idt.age + 0.7 * a[12] + 0.6 * a[10]
    folds, cheeks, dimples, dimple_spots, drops = [], [], [], [], []
    for sgn, corner in ((-1, corners[0]), (1, corners[1])):
        start = (sgn * (idt.nose_hw + 2), idt.nose_y - 4 - 1.5 * a[10])
        end = (corner[0] + sgn * 5, corner[1] + 5)
        ctrl = (sgn * (idt.nose_hw + 10 + 3 * a[12]), (start[1] + end[1]) / 2 - 2)
        fold = _quad(start, ctrl, end, 10)
        folds.append(fold)
        cheeks.append(fold + np.array([sgn * 3.5, -1.0]))
        d = corner + np.array([sgn * 4.5, -0.5])
        dimples.append(_quad(d + (0, -4), d + (sgn * 2.5, 0), d + (0, 4), 6))
        dimple_spots.append(_ellipse(corner[0] + sgn * 1.0, corner[1], 2.0, 2.0, n=10))
        drops.append(_quad(corner + (sgn * 2, 2), corner + (sgn * 4, 8), corner + (sgn * 3, 14), 6))
    pt.shade(folds, 0.6, fold_alpha, 0.6, width=1.2)  # nasolabial folds (AU10, AU12, age)
    pt.shade(cheeks, 1.12, 0.8 * a[12], 1.3, width=2.0)
    pt.shade(dimples, 0.55, 1.2 * a[14], 0.6, width=1.2)  # AU14
    pt.shade(dimple_spots, 0.7, a[14], 1.3)
    pt.shade(drops, 0.6, 1.2 * a[15], 0.6, width=1.1)  # AU15
    lo_c = m["lower_outer"][len(m["x"]) // 2]
    sulcus_y = lo_c + 4.5 - 1.0 * a[17]
    sulcus = _quad(
        (-idt.mouth_hw * 0.45, sulcus_y + 2), (0, sulcus_y - 1.0 - 3.0 * a[17]), (idt.mouth_hw * 0.45, sulcus_y + 2), 9
    )
    pt.shade([sulcus], 0.72, 0.35 + 0.6 * a[17], 1.3, width=1.4)
    pt.shade([_ellipse(0, idt.chin_y + jaw - 14 - 3.5 * a[17], idt.chin_hw * 0.8, 8)], 1.1, 0.7, 2.8)
    if a[17] > 0:  # AU17: chin wrinkling ("orange peel")
        dots = []
        for dx, dy, r in idt.chin_dimples:
            cy = (sulcus_y + 5 + (idt.chin_y + jaw - 6)) / 2 + dy * 5
            dots.append(_ellipse(dx * idt.chin_hw * 0.7, cy, 1.1 + 0.4 * r, 0.9, n=8))
        pt.shade(dots, 0.68, 1.1 * a[17], 0.6)
    if a[24] > 0:  # AU24: bulges above and below the pressed lips
        xs = np.linspace(-idt.mouth_hw * 0.7, idt.mouth_hw * 0.7, 9)
        above = np.column_stack([xs, np.interp(xs, m["x"], m["upper_outer"]) - 3.5])
        below = np.column_stack([xs, np.interp(xs, m["x"], m["lower_outer"]) + 3.0])
        pt.shade([above, below], 0.72, 1.1 * a[24], 0.6, width=1.2)


def _draw_beard(pt: _Painter, idt: Identity, outline: np.ndarray) -> None:
    """Stubble, goatee or full beard over the jaw and chin (drawn before the lips, which stay visible)."""
    style = BEARD_STYLES[idt.beard]
    if style not in ("stubble", "full", "goatee"):
        return
    shape = outline[outline[:, 1] > idt.nose_y + 8]
    if style == "goatee":
        shape = shape[(np.abs(shape[:, 0]) < idt.mouth_hw * 0.9) & (shape[:, 1] > idt.mouth_y)]
    if len(shape) < 3:
        return
    pt.paint([shape], idt.hair_colour * 0.9, 0.22 if style == "stubble" else 0.88, 2.8 if style == "stubble" else 1.2)


def _draw_moustache(pt: _Painter, idt: Identity, m: dict) -> None:
    if BEARD_STYLES[idt.beard] not in ("moustache", "full", "goatee"):
        return
    x = m["x"]
    ux = np.linspace(x[0] - 3, x[-1] + 3, 13)
    uy = np.interp(ux, x, m["upper_outer"]) - 0.8
    shape = np.concatenate([np.column_stack([ux, uy]), np.column_stack([ux[::-1] * 0.85, uy[::-1] - 6])])
    pt.paint([shape], idt.hair_colour * 0.9, 0.85, 0.8)


def _draw_mouth(pt: _Painter, idt: Identity, a: dict, m: dict) -> None:
    x = m["x"]
    n = len(x)
    ui, uo, li, lo = m["upper_inner"], m["upper_outer"], m["lower_inner"], m["lower_outer"]
    lip = idt.lip_colour
    opening = li - ui  # lips part (AU25/26) or the upper lip lifts off the lower one (AU10)
    if opening.max() > 0.4:
        pt.fill(np.concatenate([np.column_stack([x, ui]), np.column_stack([x[::-1], li[::-1]])]), (70, 28, 30))
        core = np.abs(x) < x[-1] * 0.72
        teeth_h = np.minimum(opening * 0.6, 5.5)
        top = np.column_stack([x[core], ui[core] - 0.5])
        pt.fill(np.concatenate([top, np.column_stack([x[core], (ui + teeth_h)[core]])[::-1]]), (226, 220, 205))
        if m["jaw"] > 4:
            low_h = np.minimum(opening * 0.25, 3.5)
            bottom = np.column_stack([x[core], li[core] + 0.5])
            pt.fill(np.concatenate([np.column_stack([x[core], (li - low_h)[core]]), bottom[::-1]]), (205, 198, 185))
    pt.fill(np.concatenate([np.column_stack([x, li]), np.column_stack([x[::-1], lo[::-1]])]), lip * 1.06)
    pt.fill(np.concatenate([np.column_stack([x, uo]), np.column_stack([x[::-1], ui[::-1]])]), lip * 0.9)
    highlight = np.column_stack([x[n // 4 : 3 * n // 4], (li + 0.6 * (lo - li))[n // 4 : 3 * n // 4]])
    pt.shade([highlight], 1.18, 0.6, 1.3, width=1.5)
    tight = 0.8 * min(a[23], 1.0) + 0.4 * min(a[24], 1.0)
    closed = opening.max() <= 0.4
    pt.line(np.column_stack([x, (ui + li) / 2 if closed else ui]), lip * (0.42 - 0.15 * tight), 1.0 + 0.8 * tight)
    if a[23] > 0:  # AU23: tightened lip margins
        pt.shade([np.column_stack([x, uo]), np.column_stack([x, lo])], 0.72, a[23] * 1.1, 0.6, width=1.0)


def _draw_glasses(pt: _Painter, idt: Identity) -> None:
    g = idt.glasses
    col = g["colour"]
    y = idt.eye_y + g["dy"]
    w, h = idt.eye_hw + g["w"], idt.eye_up + g["h"]
    for sgn in (-1, 1):
        cx = sgn * idt.eye_dx
        if g["round"]:
            rim = _ellipse(cx, y, w, h, n=32)
        else:
            c, s = _circle(32)
            rim = np.column_stack([cx + w * np.sign(c) * np.abs(c) ** 0.5, y + h * np.sign(s) * np.abs(s) ** 0.5])
        pt.shade([rim], 0.6, g["tint"], 0.6, dz=8)
        pt.line(rim, col, g["thick"], closed=True, dz=8)
        arm = np.array([(sgn * (idt.eye_dx + w), y - 2), (sgn * idt.face_hw * 0.99, idt.eye_y + 2)])
        pt.line(arm, col, g["thick"])
    inner = idt.eye_dx - w + 1
    pt.line(_quad((-inner, y - 2), (0, y - 6), (inner, y - 2), 7), col, g["thick"], dz=10)


def _region_boxes(idt: Identity) -> list[tuple[float, float, float, float]]:
    """Canonical boxes of the skin each AU moves, in :data:`SYNTHETIC_AUS` order (see docs/synthetic.md)."""
    e, b = idt.eye_y, idt.eye_y - idt.brow_gap
    bo = idt.brow_outer + 4
    ex = idt.eye_dx + idt.eye_hw + 10
    my, mw = idt.mouth_y, idt.mouth_hw
    ny, nw = idt.nose_y, idt.nose_hw
    chin = idt.chin_y
    top_wr = b - 24 - 3 - idt.brow_arch * 0.5 - 8
    chin_x = max(mw * 0.85, idt.chin_hw + 12)
    boxes = {
        1: (-idt.eye_dx - 4, min(top_wr, b - idt.brow_arch - 16), idt.eye_dx + 4, b + 6),
        2: (-bo, top_wr, bo, b + 4),
        4: (-bo + 2, b - idt.brow_arch - 9, bo - 2, e + 2),
        6: (-ex - 8, e - 4, ex + 8, e + 42),
        7: (-ex + 4, e - idt.eye_up - 3, ex - 4, e + idt.eye_lo + 5),
        9: (-nw * 1.35 - 4, e - 3, nw * 1.35 + 4, ny + 12),
        10: (-mw - 12, ny - 14, mw + 12, my + 5),
        12: (-mw - 18, e + 12, mw + 18, my + 18),
        14: (-mw - 13, my - 12, mw + 13, my + 10),
        15: (-mw - 13, my - 6, mw + 13, my + 24),
        17: (-chin_x, my - 6, chin_x, chin + 6),
        23: (-mw - 4, my - idt.lip_up - 8, mw + 4, my + idt.lip_lo + 6),
        24: (-mw - 4, my - idt.lip_up - 9, mw + 4, my + idt.lip_lo + 9),
        25: (-mw - 4, my - idt.lip_up - 7, mw + 4, my + idt.lip_lo + 10),
        26: (-idt.face_hw * idt.jaw_frac - 6, my - 8, idt.face_hw * idt.jaw_frac + 6, chin + 16),
    }
    return [boxes[au] for au in SYNTHETIC_AUS]


def _activations(idt: Identity, intensities) -> dict:
    if isinstance(intensities, Mapping):
        values = np.array([float(intensities.get(au, 0.0)) for au in SYNTHETIC_AUS])
    else:
        values = np.asarray(intensities, np.float64).reshape(-1)
        if values.shape[0] != len(SYNTHETIC_AUS):
            raise ValueError(f"intensities has {values.shape[0]} values; expected one per AU in {SYNTHETIC_AUS}")
    scaled = np.clip(values, 0.0, MAX_INTENSITY) / MAX_INTENSITY * idt.au_gain
    return {au: float(scaled[i]) for i, au in enumerate(SYNTHETIC_AUS)}


def render_frame(
    identity: Identity, scene: Scene, nuisance: FrameNuisance, intensities: Mapping[int, float] | Sequence[float]
) -> RenderedFrame:
    """Draw one frame. ``intensities`` maps AU -> 0..5 (missing AUs are 0) or lists them in SYNTHETIC_AUS order."""
    idt = identity
    a = _activations(idt, intensities)
    project = _Projector(idt, nuisance)
    pt = _Painter(project, scene.size)
    skin = idt.skin
    hw = idt.face_hw
    m = _mouth_geometry(idt, a)
    outline = _face_outline(idt, m["jaw"], 1.5 * a[17])
    back = -project.az * 0.6
    shoulder_y = idt.chin_y + 75
    neck = np.array(
        [
            (-hw * 0.42, idt.cheek_y + 30),
            (-hw * 0.46, shoulder_y + 5),
            (hw * 0.46, shoulder_y + 5),
            (hw * 0.42, idt.cheek_y + 30),
        ]
    )
    pt.fill(neck, skin * 0.82, dz=back, skin=True)
    clothes = np.array(
        [
            (-hw * 0.5, shoulder_y - 8),
            (-hw * 2.6, shoulder_y + 45),
            (-hw * 3.2, shoulder_y + 400),
            (hw * 3.2, shoulder_y + 400),
            (hw * 2.6, shoulder_y + 45),
            (hw * 0.5, shoulder_y - 8),
        ]
    )
    pt.fill(clothes, scene.clothes_colour, dz=back)
    _draw_hair_back(pt, idt)
    ears = []
    for sgn in (-1, 1):
        ear = _ellipse(sgn * hw * 0.96, idt.cheek_y + 6, 8.5 * idt.ear_size, 17 * idt.ear_size, sgn * 0.15, n=20)
        pt.fill(ear, skin * 0.93, dz=-project.az * 0.25, skin=True)
        ears.append(_ellipse(sgn * hw * 1.0, idt.cheek_y + 7, 4 * idt.ear_size, 11 * idt.ear_size, n=14))
    pt.shade(ears, 0.75, 0.7, 1.3, dz=-project.az * 0.2)
    pt.fill(outline, skin, skin=True)
    geoms = _draw_eyeballs(pt, idt, a, nuisance)
    pt.shade([outline[outline[:, 1] > idt.mouth_y + 10] + (0, 5)], 0.75, 0.5, 2.8, width=4.0, dz=-5)
    blush_y = idt.eye_y + 27 - 5.0 * a[6] - 2.0 * a[12]
    pt.shade([_ellipse(sgn * (idt.eye_dx + 3), blush_y, 13, 9) for sgn in (-1, 1)], (1.07, 1.0, 0.97), 0.9, 2.8)
    pt.shade([_ellipse(sgn * (idt.eye_dx + 1), blush_y - 2, 8, 5) for sgn in (-1, 1)], 1.07, 0.6 + 0.4 * a[6], 1.3)
    if len(idt.freckles):
        pt.shade([_ellipse(x, y, r, r * 0.8, n=8) for x, y, r in idt.freckles], 0.82, 0.6, 0.6)
    if idt.mole is not None:
        pt.fill(_ellipse(idt.mole[0], idt.mole[1], idt.mole[2], idt.mole[2], n=10), skin * 0.45)
    _draw_brows_and_forehead(pt, idt, a)
    _draw_eye_details(pt, idt, a, nuisance, geoms)
    _draw_nose(pt, idt, a)
    _draw_lower_face(pt, idt, a, m)
    _draw_beard(pt, idt, outline)
    _draw_mouth(pt, idt, a, m)
    _draw_moustache(pt, idt, m)
    _draw_hair_front(pt, idt)
    if idt.glasses is not None:
        _draw_glasses(pt, idt)
    image, shading, skin_mask = pt.render(_background(scene))
    image = _camera(image, shading, _skin_shading(skin_mask, idt, scene, project), scene, nuisance)
    # what a landmark tracker would report: eye centres, nose tip, mouth corners (plus tracker jitter)
    canon = np.array(
        [
            (-idt.eye_dx, idt.eye_y - idt.eye_asym * 0.5 - 0.5),
            (idt.eye_dx, idt.eye_y + idt.eye_asym * 0.5 - 0.5),
            (0.0, idt.nose_y - 2.0),
            tuple(m["corners"][0]),
            tuple(m["corners"][1]),
        ]
    )
    landmarks = project(canon, np.array([0.0, 0.0, idt.nose_len, 0.0, 0.0])) + nuisance.landmark_jitter
    grid = _box_points(np.array(_region_boxes(idt)))
    regions = project(grid.reshape(-1, 2)).reshape(grid.shape)
    return RenderedFrame(image=image, landmarks=landmarks.astype(np.float32), region_points=regions)
