"""Builders of miniature BP4D, DISFA and BP4D+ trees in the official on-disk formats, for reader tests.

Every image is a tiny drawn face (64x48) whose landmark files match the drawing, so alignment runs from the shipped
landmarks and no face detector is needed. Each image also carries its own number in a flat grey block in the top-left
corner (:func:`read_image_number`), so a test can tell which file or video frame a record really came from. Each
builder returns a :class:`BenchmarkTree` listing what it wrote: every coded frame with its labels, the image it maps to
and that image's landmarks.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sevnet_hf.protocols import BP4D_AUS, BP4D_UNKNOWN_CODE, DISFA_OCCURRENCE_THRESHOLD, UNKNOWN_LABEL

WIDTH, HEIGHT = 64, 48
BLOCK = 10  # side of the corner block that encodes the image number
BP4DPLUS_HEADER_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28, 29, 30)
BP4DPLUS_HEADER_AUS += (31, 32, 33, 34, 35, 36, 37, 38, 39, 99)
DISFA_FILE_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


# --------------------------------------------------------------------------------------------------------------------
# Faces and landmarks.


def _landmarks68_unit() -> np.ndarray:
    """A frontal 68-point face (iBUG order) in inter-ocular units, eyes at y = 0, x to the image right."""
    points = np.zeros((68, 2))
    theta = np.linspace(np.pi, 0.0, 17)
    points[0:17] = np.stack([np.cos(theta), -0.1 + 1.3 * np.sin(theta)], axis=1)  # image-left to image-right
    brow_x = np.linspace(-0.85, -0.15, 5)
    points[17:22] = np.stack([brow_x, -0.35 - 0.08 * np.sin(np.linspace(0, np.pi, 5))], axis=1)
    points[22:27] = np.stack([-brow_x[::-1], points[17:22, 1][::-1]], axis=1)
    points[27:31] = np.stack([np.zeros(4), [0.05, 0.2, 0.35, 0.58]], axis=1)
    points[31:36] = np.stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.66)], axis=1)
    eye = np.array([[-0.15, 0.0], [-0.07, -0.05], [0.07, -0.05], [0.15, 0.0], [0.07, 0.05], [-0.07, 0.05]])
    points[36:42] = eye + [-0.5, 0.0]
    points[42:48] = eye + [0.5, 0.0]
    upper = np.pi + np.pi * np.arange(7) / 6
    lower = np.pi * np.arange(1, 6) / 6
    angles = np.concatenate([upper, lower])
    points[48:60] = np.stack([0.4 * np.cos(angles), 1.12 + 0.12 * np.sin(angles)], axis=1)
    inner = np.concatenate([np.pi + np.pi * np.arange(5) / 4, np.pi * np.arange(1, 4) / 4])
    points[60:68] = np.stack([0.25 * np.cos(inner), 1.12 + 0.05 * np.sin(inner)], axis=1)
    return points


_UNIT_FACE = _landmarks68_unit()


def face_landmarks68(number: int) -> np.ndarray:
    """68 points of the face drawn in image ``number``: it moves a little from image to image."""
    shift = np.array([(number % 5) - 2.0, (number % 3) - 1.0])
    centre = np.array([WIDTH / 2, HEIGHT * 0.36]) + shift
    return _UNIT_FACE * 15.0 + centre


def to49(points68: np.ndarray) -> np.ndarray:
    """BP4D/BP4D+ 49-point layout: the 68 points without the jaw (0-16) and the inner mouth corners (60, 64)."""
    keep = [i for i in range(17, 68) if i not in (60, 64)]
    return points68[keep]


def to66(points68: np.ndarray) -> np.ndarray:
    """DISFA 66-point layout: the 68 points without the inner mouth corners (60, 64)."""
    return points68[[i for i in range(68) if i not in (60, 64)]]


def number_level(number: int) -> int:
    """Grey level of the corner block of image ``number`` (survives JPEG/MJPG to within a few levels)."""
    return 30 + 12 * (number % 18)


def read_image_number(image: np.ndarray) -> int:
    """The number drawn by :func:`draw_face` (mod 18), read back from an RGB or BGR image."""
    level = float(np.asarray(image)[2 : BLOCK - 2, 2 : BLOCK - 2].mean())
    return int(round((level - 30) / 12))


def draw_face(number: int) -> np.ndarray:
    """RGB uint8 HEIGHTxWIDTH image of a simple face matching :func:`face_landmarks68` plus the number block."""
    points = face_landmarks68(number)
    image = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    centre = points[27:31].mean(axis=0)
    cv2.ellipse(image, (int(centre[0]), int(centre[1] + 4)), (17, 21), 0, 0, 360, (205, 170, 150), -1)
    for eye in (points[36:42], points[42:48]):
        cv2.fillPoly(image, [np.round(eye).astype(np.int32)], (40, 30, 30))
    for brow in (points[17:22], points[22:27]):
        cv2.polylines(image, [np.round(brow).astype(np.int32)], False, (70, 50, 40), 1)
    cv2.polylines(image, [np.round(points[27:36]).astype(np.int32)], False, (150, 110, 100), 1)
    cv2.fillPoly(image, [np.round(points[48:60]).astype(np.int32)], (150, 40, 50))
    image[:BLOCK, :BLOCK] = number_level(number)
    return image


def aligned_source_number(aligned, numbers, layout) -> int:
    """Which of the drawn images ``numbers`` a prepared (aligned) face was made from.

    The number block often falls outside the aligned crop, so each candidate ``draw_face(n)`` is aligned with its own
    landmarks (``layout(face_landmarks68(n))``, e.g. :func:`to49`) by the package's alignment, and the candidate the
    prepared face matches best (mean absolute pixel difference) is returned.
    """
    from sevnet_hf.data.align import align_face

    aligned = np.asarray(aligned, dtype=np.float64)

    def distance(number: int) -> float:
        candidate, _ = align_face(draw_face(number), layout(face_landmarks68(number)), aligned.shape[0])
        return float(np.abs(aligned - candidate).mean())

    return min(numbers, key=distance)


def write_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {path}")


def jpeg_bytes(image_rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


# --------------------------------------------------------------------------------------------------------------------
# What a builder wrote.


@dataclass
class ExpectedFrame:
    """One coded frame as the fixture wrote it."""

    subject: str
    sequence: str
    frame: int
    labels: dict[int, int]  # AU -> 1, 0 or UNKNOWN_LABEL, for the dataset's AUs
    image_number: int  # the image (or 0-based video frame) the frame maps to under the default mapping
    has_image: bool
    landmarks: np.ndarray | None  # what the reader should hand over for that image
    intensities: dict[int, float] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.subject, self.sequence, self.frame)


@dataclass
class BenchmarkTree:
    root: Path
    frames: list[ExpectedFrame] = field(default_factory=list)

    def by_key(self) -> dict[tuple[str, str, int], ExpectedFrame]:
        return {f.key: f for f in self.frames}

    def with_images(self) -> list[ExpectedFrame]:
        return [f for f in self.frames if f.has_image]


def _codes(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """0/1/9 codes; the first row's first column is always 9 so every file has an unknown."""
    codes = rng.choice([0, 1, BP4D_UNKNOWN_CODE], size=(rows, columns), p=[0.5, 0.35, 0.15])
    codes[0, 0] = BP4D_UNKNOWN_CODE
    return codes


def _as_label(code: int) -> int:
    return UNKNOWN_LABEL if code == BP4D_UNKNOWN_CODE else int(code)


# --------------------------------------------------------------------------------------------------------------------
# BP4D.

# subject, task, first and last coded frame, image numbers written, name width, header style, image numbers deleted
BP4D_SEQUENCES = (
    ("F001", "T1", 1, 6, range(0, 8), 4, "numbered", ()),
    ("F001", "T2", 5, 9, range(0, 11), 4, "numbered", (7,)),
    ("M009", "T1", 3, 7, range(0, 9), 3, "numbered", ()),
    ("F003", "T1", 1, 4, range(0, 6), 4, "named", ()),
)


def write_bp4d_landmarks(path: Path, points: list[np.ndarray | None]) -> None:
    """A MATLAB v7.3-style file: ``fit/pred`` = (N, 1) object references to 2x49 arrays (empty for None)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        refs_group = handle.create_group("#refs#")
        refs = np.empty((len(points), 1), dtype=h5py.ref_dtype)
        for i, pts in enumerate(points):
            if pts is None:
                data = refs_group.create_dataset(f"r{i}", data=np.zeros(2, dtype=np.uint64))
                data.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                data = refs_group.create_dataset(f"r{i}", data=np.asarray(pts, dtype=np.float64).T)  # 2 x 49
            data.attrs["MATLAB_class"] = np.bytes_("double")
            refs[i, 0] = data.ref
        handle.create_group("fit").create_dataset("pred", data=refs)


def write_bp4d_csv(path: Path, frames: range, codes: np.ndarray, style: str, aus: tuple[int, ...]) -> None:
    """An AU_OCC file: ``style="numbered"`` header 0..99 (column k = AU k), ``"named"`` the BP4D+ header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [str(i) for i in range(100)] if style == "numbered" else ["1", *map(str, aus)]
    lines = [",".join(header)]
    for frame, row in zip(frames, codes):
        lines.append(",".join([str(frame), *map(str, row)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_bp4d_tree(root: Path, *, seed: int = 0, frames_folder: str = "Sequences(2D+3D)") -> BenchmarkTree:
    """A miniature BP4D: 3 subjects in 3 parts, a start frame above 1, 3-digit names, a BP4D+-style header,
    9-coded unknowns and one deleted image."""
    rng = np.random.default_rng(seed)
    tree = BenchmarkTree(root)
    for subject, task, first, last, numbers, width, style, deleted in BP4D_SEQUENCES:
        frames = range(first, last + 1)
        if style == "numbered":
            columns = tuple(range(1, 100))
            codes = _codes(rng, len(frames), len(columns))
        else:
            columns = BP4DPLUS_HEADER_AUS
            codes = _codes(rng, len(frames), len(columns))
        write_bp4d_csv(root / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv", frames, codes, style, columns)
        intensity = root / "AUCoding" / "AU_INT" / "AU06" / f"{subject}_{task}_AU06.csv"
        intensity.parent.mkdir(parents=True, exist_ok=True)
        intensity.write_text("".join(f"{f},{rng.integers(0, 6)}\n" for f in frames), encoding="utf-8")
        folder = root / frames_folder / subject / task
        points = []
        for number in numbers:
            if number not in deleted:
                write_jpeg(folder / f"{number:0{width}d}.jpg", draw_face(number))
            points.append(to49(face_landmarks68(number)))
        write_bp4d_landmarks(root / "2DFeatures" / f"{subject}_{task}.mat", points)
        for row, frame in enumerate(frames):
            number = frame  # BP4D default: frame f -> f.jpg
            tree.frames.append(
                ExpectedFrame(
                    subject=subject,
                    sequence=task,
                    frame=frame,
                    labels={au: _as_label(codes[row, columns.index(au)]) for au in BP4D_AUS},
                    image_number=number,
                    has_image=number not in deleted,
                    landmarks=to49(face_landmarks68(number)) if number not in deleted else None,
                )
            )
    return tree


# --------------------------------------------------------------------------------------------------------------------
# DISFA.

# subject, video frames, label lines, landmark file name pattern, one extra landmark file at the start
DISFA_SUBJECTS = (
    ("SN001", 6, 6, "{subject}_{i:04d}_lm.mat", False),
    ("SN010", 6, 5, "l0{i:04d}_lm.mat", True),
    ("SN003", 5, 6, "{subject}_{i:04d}_lm.mat", False),
)


def write_video(path: Path, numbers: range) -> None:
    """An MJPG AVI (20 fps) whose frame i is ``draw_face(i)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    for number in numbers:
        writer.write(cv2.cvtColor(draw_face(number), cv2.COLOR_RGB2BGR))
    writer.release()


def make_disfa_tree(root: Path, *, seed: int = 1) -> BenchmarkTree:
    """A miniature DISFA: SN001 (lengths agree), SN010 (labels one line shorter, ``l0NNNN`` landmark names and one
    extra landmark file), SN003 (labels one line longer than the video)."""
    from scipy.io import savemat

    from sevnet_hf.protocols import DISFA_AUS

    rng = np.random.default_rng(seed)
    tree = BenchmarkTree(root)
    for subject, video_frames, label_lines, pattern, extra in DISFA_SUBJECTS:
        write_video(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi", range(video_frames))
        intensities = rng.integers(0, 6, size=(label_lines, len(DISFA_FILE_AUS)))
        label_dir = root / "ActionUnit_Labels" / subject
        label_dir.mkdir(parents=True, exist_ok=True)
        for column, au in enumerate(DISFA_FILE_AUS):
            text = "".join(f"{f},{intensities[f - 1, column]}\n" for f in range(1, label_lines + 1))
            (label_dir / f"{subject}_au{au}.txt").write_text(text, encoding="utf-8")
        lm_dir = root / "Landmark_Points" / subject / "tmp_frame_lm"
        lm_dir.mkdir(parents=True, exist_ok=True)
        files = [to66(face_landmarks68(i)) for i in range(video_frames)]
        if extra:
            files = [to66(face_landmarks68(0)) + 7.0, *files]
        for i, pts in enumerate(files):
            savemat(lm_dir / pattern.format(subject=subject, i=i), {"pts": pts})
        for frame in range(1, label_lines + 1):
            values = {au: float(intensities[frame - 1, DISFA_FILE_AUS.index(au)]) for au in DISFA_AUS}
            tree.frames.append(
                ExpectedFrame(
                    subject=subject,
                    sequence=subject,
                    frame=frame,
                    labels={au: int(v >= DISFA_OCCURRENCE_THRESHOLD) for au, v in values.items()},
                    image_number=frame - 1,
                    has_image=frame <= video_frames,
                    landmarks=to66(face_landmarks68(frame - 1)) if frame <= video_frames else None,
                    intensities=values,
                )
            )
    write_video(root / "Video_RightCamera" / "RightVideoSN001_Comp.avi", range(2))
    return tree


# --------------------------------------------------------------------------------------------------------------------
# BP4D+.

# subject, task, first and last coded frame, image numbers written, name width, image numbers deleted
BP4DPLUS_SEQUENCES = (
    ("F001", "T1", 1, 5, range(0, 6), 4, ()),
    ("F001", "T6", 2, 4, range(0, 5), 4, ()),
    ("M001", "T1", 2, 5, range(0, 7), 3, ()),
    ("M001", "T8", 1, 4, range(0, 5), 3, (2,)),
)
BP4DPLUS_ZIPPED = ("F001",)


def write_bp4dplus_landmarks(path: Path, numbers: range, lost: tuple[int, ...] = ()) -> None:
    """A MATLAB v5 file with struct array ``fit`` (frame = image number + 1, pts_2d 49x2, headPose 3x1)."""
    from scipy.io import savemat

    fit = np.zeros((1, len(numbers)), dtype=[("frame", "O"), ("pts_2d", "O"), ("headPose", "O")])
    for k, number in enumerate(numbers):
        if number in lost:
            fit[0, k] = (np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))
        else:
            fit[0, k] = (np.array([[number + 1.0]]), to49(face_landmarks68(number)), np.zeros((3, 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"fit": fit})


def make_bp4dplus_tree(root: Path, *, seed: int = 2) -> BenchmarkTree:
    """A miniature BP4D+: F001 shipped as ``2D+3D/F001.zip`` (with an uncoded T2 inside), M001 unzipped with 3-digit
    names and one deleted image, named 36-column headers, 9 codes and a lost landmark entry."""
    rng = np.random.default_rng(seed)
    tree = BenchmarkTree(root)
    archives: dict[str, zipfile.ZipFile] = {}
    for subject in BP4DPLUS_ZIPPED:
        (root / "2D+3D").mkdir(parents=True, exist_ok=True)
        archives[subject] = zipfile.ZipFile(root / "2D+3D" / f"{subject}.zip", "w")
        for number in range(3):
            archives[subject].writestr(f"{subject}/T2/{number:04d}.jpg", jpeg_bytes(draw_face(number)))
    for subject, task, first, last, numbers, width, deleted in BP4DPLUS_SEQUENCES:
        frames = range(first, last + 1)
        codes = _codes(rng, len(frames), len(BP4DPLUS_HEADER_AUS))
        path = root / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv"
        write_bp4d_csv(path, frames, codes, "named", BP4DPLUS_HEADER_AUS)
        for number in numbers:
            if number in deleted:
                continue
            name = f"{number:0{width}d}.jpg"
            if subject in archives:
                archives[subject].writestr(f"{subject}/{task}/{name}", jpeg_bytes(draw_face(number)))
            else:
                write_jpeg(root / "2D+3D" / subject / task / name, draw_face(number))
        lost = (0,) if (subject, task) == ("F001", "T6") else ()  # image 0 is not coded in F001/T6
        write_bp4dplus_landmarks(root / "2DFeatures" / f"{subject}_{task}.mat", numbers, lost)
        for row, frame in enumerate(frames):
            number = frame - 1  # BP4D+ default: frame f -> (f-1).jpg
            tree.frames.append(
                ExpectedFrame(
                    subject=subject,
                    sequence=task,
                    frame=frame,
                    labels={au: _as_label(codes[row, BP4DPLUS_HEADER_AUS.index(au)]) for au in BP4D_AUS},
                    image_number=number,
                    has_image=number not in deleted,
                    landmarks=to49(face_landmarks68(number)) if number not in deleted else None,
                )
            )
    for archive in archives.values():
        archive.close()
    return tree
