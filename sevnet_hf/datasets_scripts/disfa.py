"""DISFA -> prepared AU dataset (``sevnet-hf prepare disfa``), left camera only.

Expected layout under ``--root`` (each folder can live elsewhere; its option overrides the default)::

    ROOT/
      ActionUnit_Labels/SN001/SN001_au1.txt          --labels-dir     one file per subject and AU, lines
                                                                      "frame,intensity" (1-based frame, 0-5), no header
      Videos_LeftCamera/LeftVideoSN001_comp.avi      --video-dir      the left-camera video of each subject
      Landmark_Points/SN001/tmp_frame_lm/SN001_0000_lm.mat
                                                     --landmarks-dir  optional: one MATLAB file per video frame
                                                                      (0-based, 4 digits), variable 'pts' = 66x2

Labels. We read the 8 AUs of ``protocols.DISFA_AUS``. Occurrence is ``intensity >=
protocols.DISFA_OCCURRENCE_THRESHOLD`` (2); the intensities are kept too (``AU1_intensity``... columns). A missing AU
file, a line that is not ``frame,intensity`` or an intensity outside 0-5 is an error naming the file and line.

Frames. The video is decoded one frame at a time (OpenCV) and never held in memory. Label frame *f* is decoded video
frame *f - 1* (0-based), i.e. the first line of a label file describes the first frame of the video. The public
readers we read agree (in their code and lists; we have not checked it on the data):

- ME-GraphAU, ``CVI-SZU/ME-GraphAU`` ``tool/DISFA_image_label_process.py``: line *t* (0-based) of ``SN001_au1.txt``
  goes with ``SN001/{t}.png``; its frame extraction is not published, its names start at ``SN001/0.png``.
- PyTorch-JAANet, ``ZhiwenShao/PyTorch-JAANet`` ``data/list/DISFA_part{1,2,3}_path.txt``: 0-based ``SN002/0.jpg``...;
  the frames it leaves out (SN001 397-419 and 3189-3242, SN002 799-825, SN004 4540-4554, ...) are, one lower, the
  1-based label frames a third script lists as bad landmark frames (398-420, 3190-3243, 800-826, 4541-4555), so its
  image *n* is label frame *n + 1* and landmark file *n*.
- That script (a DISFA preprocessing module we could read only through the code search index; its repository is not
  resolved): ffmpeg names ``_%05d.jpg`` from 1, the *i*-th image paired with the *i*-th label line
  (``anno[int(frame) - 1]``).
- LibreFace, ``ihp-lab/LibreFace`` ``extract_frames_DISFA.py``: ffmpeg ``_%04d.png``, 1-based names, so image *f* is
  video frame *f - 1* (how it pairs them with labels is in CSV files it does not publish).
- AU_R-CNN, ``machanic/AU_R-CNN`` ``dataset_toolkit/scripts/data_index_file_gen_new.py``: label frame *f* ->
  ``{S}/{f}.jpg``; its frame extractor does not number frames, so its offset cannot be read from the code.

Only frames that every AU file labels become examples. When the label files and the video disagree in length, video
frames without labels are skipped, label frames past the end of the video are listed under ``errors`` in
report.json, and a line in the metadata's ``reader_notes`` gives both counts. (SN010's label files have 4844 lines,
the others' 4845, in both ME-GraphAU's and PyTorch-JAANet's lists; its video's length we have not seen.) The metadata
records ``frame_offset`` (-1: label frame *f* -> 0-based video frame *f - 1*), ``frame_mapping`` and
``frame_offset_readers``.

Landmarks. File number *n* (``SN001_0000_lm.mat``, or the alternative ``l00000_lm.mat``) belongs to video frame *n*,
as PyTorch-JAANet's gaps above imply. Where a subject has one file more than its video has frames, the first file is
dropped (file *n* -> frame *n - 1*), as the unresolved script does (it drops the first ``.mat`` when there are more
files than images), and a line in ``reader_notes`` says so. Frames without a file, or with an empty 'pts', are left
to face detection; pass ``--no-use-landmarks`` to detect faces everywhere.

Parts. Subjects are split as in ``protocols.DISFA_PARTS`` (ME-GraphAU / JAA-Net). A subject that is not in any part is
an error.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.schema import FrameRecord
from ..protocols import DISFA_AUS, DISFA_OCCURRENCE_THRESHOLD, DISFA_PARTS
from .bp4d import (
    ReaderNotes,
    Unit,
    frame_mapping_note,
    parse_arguments,
    required_dir,
    resolve_dir,
    run_preparation,
    split_names,
    subject_parts,
)
from .common import PrepareError, run_cli

logger = logging.getLogger(__name__)

MAX_INTENSITY = 5
# Label frame f (1-based) is decoded video frame f + FRAME_OFFSET (0-based); no public reader pairs them otherwise.
FRAME_OFFSET = -1
FRAME_OFFSET_READERS: dict[int, str] = {FRAME_OFFSET: "ME-GraphAU and PyTorch-JAANet"}
FRAME_MAPPING_NOTE = frame_mapping_note(FRAME_OFFSET, FRAME_OFFSET_READERS, "label frame", "0-based left-camera frame")
_LANDMARK_FILE = re.compile(r"(\d+)_lm\.mat$", re.IGNORECASE)


@dataclass
class DisfaLabels:
    """The intensities of one subject: one row per frame that every AU file labels."""

    subject: str
    aus: tuple[int, ...]
    frames: np.ndarray  # (N,) int64, ascending, 1-based
    intensities: np.ndarray  # (N, len(aus)) float32
    notes: list[str]

    def __post_init__(self) -> None:
        self.row_of = {frame: row for row, frame in enumerate(self.frames.tolist())}

    def labels(self, row: int) -> dict[int, int]:
        return {au: int(value >= DISFA_OCCURRENCE_THRESHOLD) for au, value in zip(self.aus, self.intensities[row])}

    def intensity(self, row: int) -> dict[int, float]:
        return {au: float(value) for au, value in zip(self.aus, self.intensities[row])}


def read_intensity_file(path: str | Path) -> dict[int, float]:
    """Read one DISFA ``{S}_au{n}.txt``: ``{frame: intensity}``.

    Raises ``PrepareError`` (a ``ValueError``) naming the file and line for a malformed line, a repeated frame or an intensity outside 0-5.
    """
    path = Path(path)
    values: dict[int, float] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            cells = [cell.strip() for cell in text.split(",")]
            try:
                if len(cells) != 2:
                    raise ValueError
                frame_value, intensity = float(cells[0]), float(cells[1])
            except ValueError:
                raise PrepareError(
                    f"{path}, line {line_no}: {text!r} is not 'frame,intensity' (two numbers separated by a comma)"
                ) from None
            if frame_value != int(frame_value) or frame_value < 1:
                raise PrepareError(f"{path}, line {line_no}: frame {cells[0]!r} is not a positive whole number")
            if not 0 <= intensity <= MAX_INTENSITY:
                raise PrepareError(f"{path}, line {line_no}: intensity {cells[1]!r} is outside 0-{MAX_INTENSITY}")
            frame = int(frame_value)
            if frame in values:
                raise PrepareError(f"{path}, line {line_no}: frame {frame} is labelled twice")
            values[frame] = intensity
    return values


def _ranges(frames: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (first few runs only)."""
    runs: list[str] = []
    frames = sorted(frames)
    start = previous = None
    for frame in [*frames, None]:
        if frame is not None and previous is not None and frame == previous + 1:
            previous = frame
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = frame
    return ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")


def read_subject_labels(labels_dir: str | Path, subject: str, aus: Sequence[int] = DISFA_AUS) -> DisfaLabels:
    """Read the AU files of one subject and keep the frames that all of them label (differences become notes)."""
    folder = Path(labels_dir) / subject
    per_au: dict[int, dict[int, float]] = {}
    for au in aus:
        path = folder / f"{subject}_au{au}.txt"
        if not path.is_file():
            present = sorted(p.name for p in folder.glob("*.txt")) if folder.is_dir() else []
            raise FileNotFoundError(
                f"label file {path} does not exist (found: {', '.join(present) or 'nothing'}); every subject needs "
                f"{subject}_au<n>.txt for AUs {', '.join(map(str, aus))}"
            )
        per_au[au] = read_intensity_file(path)
    common = set.intersection(*(set(values) for values in per_au.values()))
    notes = []
    for au, values in per_au.items():
        extra = set(values) - common
        if extra:
            notes.append(
                f"{folder / f'{subject}_au{au}.txt'}: frames {_ranges(sorted(extra))} are not labelled in every AU "
                "file of this subject; skipped"
            )
    frames = np.asarray(sorted(common), dtype=np.int64)
    intensities = np.asarray([[per_au[au][f] for au in aus] for f in frames.tolist()], dtype=np.float32)
    return DisfaLabels(subject, tuple(aus), frames, intensities.reshape(len(frames), len(aus)), notes)


def find_video(video_dir: str | Path, subject: str) -> Path:
    """``LeftVideo{S}_comp.avi`` in ``video_dir`` (any letter case, e.g. ``_Comp``)."""
    video_dir = Path(video_dir)
    expected = video_dir / f"LeftVideo{subject}_comp.avi"
    if expected.is_file():
        return expected
    wanted = expected.name.lower()
    if video_dir.is_dir():
        for path in sorted(video_dir.iterdir()):
            if path.name.lower() == wanted:
                return path
    raise FileNotFoundError(
        f"video {expected} does not exist; pass --video-dir or leave {subject} out with --subjects"
    )


def index_landmark_files(folder: str | Path) -> dict[int, Path]:
    """Map file number -> path for ``{S}_NNNN_lm.mat`` and ``l0NNNN_lm.mat`` files in ``folder``."""
    files: dict[int, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        match = _LANDMARK_FILE.search(path.name)
        if match:
            files.setdefault(int(match.group(1)), path)
    return files


def read_landmark_file(path: str | Path) -> np.ndarray | None:
    """The (66, 2) points of one DISFA landmark file, or None when 'pts' is empty (a lost frame)."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        content = loadmat(path)
    except Exception as err:  # scipy raises several types for damaged files
        raise PrepareError(f"{path}: not a readable MATLAB file ({err})") from None
    if "pts" not in content:
        names = sorted(key for key in content if not key.startswith("__"))
        raise PrepareError(f"{path}: no variable 'pts' (found {names}); DISFA landmark files hold pts = 66x2")
    points = np.asarray(content["pts"], dtype=np.float64)
    if points.size == 0:
        return None
    if points.shape != (66, 2):
        raise PrepareError(f"{path}: 'pts' has shape {points.shape}; expected 66 points of (x, y), i.e. 66x2")
    return points if np.isfinite(points).all() else None


def video_frame_count(path: str | Path) -> int:
    """The frame count a video's header declares (OpenCV); decoding is what finally counts."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise PrepareError(f"{path}: OpenCV cannot open this video (damaged file or missing codec)")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()


class DisfaReader(ReaderNotes):
    """Yields one preparation unit per DISFA subject (see the module docstring for the layout).

    Construction reads every label file, opens every video header and lists the landmark files, so setup errors
    surface before any decoding. ``notes`` records length differences and landmark quirks.
    """

    dataset_name = "DISFA"

    def __init__(
        self,
        labels_dir: str | Path,
        video_dir: str | Path,
        landmarks_dir: str | Path | None = None,
        *,
        subjects: Sequence[str] | None = None,
        aus: Sequence[int] = DISFA_AUS,
        parts: Mapping[int, Sequence[str]] = DISFA_PARTS,
    ) -> None:
        super().__init__()
        self.labels_dir = Path(labels_dir)
        self.video_dir = Path(video_dir)
        self.landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else None
        self.aus = tuple(aus)
        self.parts = {int(k): tuple(v) for k, v in parts.items()}
        self.part_of = subject_parts(self.parts)
        if not self.labels_dir.is_dir():
            raise FileNotFoundError(
                f"DISFA label folder {self.labels_dir} does not exist; point --root at DISFA or pass --labels-dir"
            )
        if self.landmarks_dir is not None and not self.landmarks_dir.is_dir():
            raise FileNotFoundError(f"landmark folder {self.landmarks_dir} does not exist; fix --landmarks-dir")
        present = sorted(p.name for p in self.labels_dir.iterdir() if p.is_dir())
        if not present:
            raise FileNotFoundError(f"{self.labels_dir} holds no subject folders (SN001/, ...)")
        if subjects is not None:
            unknown = [s for s in subjects if s not in present]
            if unknown:
                raise PrepareError(f"--subjects names {', '.join(unknown)}, which have no folder in {self.labels_dir}")
            present = [s for s in present if s in subjects]
        outside = [s for s in present if s not in self.part_of]
        if outside:
            raise PrepareError(
                f"subjects {', '.join(outside)} (folders in {self.labels_dir}) are in no part of protocols.DISFA_PARTS; "
                "remove the folders or leave these subjects out with --subjects"
            )
        self.subjects = present
        self.labels = {s: read_subject_labels(self.labels_dir, s, self.aus) for s in self.subjects}
        self.videos = {s: find_video(self.video_dir, s) for s in self.subjects}
        self.frame_counts = {s: video_frame_count(self.videos[s]) for s in self.subjects}
        self.landmark_files: dict[str, dict[int, Path]] = {}
        self.landmark_shift: dict[str, int] = {}
        for subject in self.subjects:
            for note in self.labels[subject].notes:
                self.note(note)
            self._check_lengths(subject)
            self._find_landmarks(subject)

    def _check_lengths(self, subject: str) -> None:
        frames, count = self.labels[subject].frames.tolist(), self.frame_counts[subject]
        in_video = {index - FRAME_OFFSET for index in range(count)}  # the label frame of each video frame
        labelled = sum(1 for f in frames if f in in_video)
        if labelled < count:
            self.note(
                f"{self.videos[subject]}: {count} video frames, {labelled} labelled; video frames "
                f"{_ranges(sorted(in_video - set(frames)))} (label numbering) have no labels and are skipped"
            )
        if labelled < len(frames):
            self.note(
                f"{self.videos[subject]}: {count} video frames but labels up to frame {frames[-1]}; label frames "
                f"{_ranges([f for f in frames if f not in in_video])} have no video frame and are listed as errors"
            )

    def _find_landmarks(self, subject: str) -> None:
        self.landmark_files[subject], self.landmark_shift[subject] = {}, 0
        if self.landmarks_dir is None:
            return
        folder = self.landmarks_dir / subject / "tmp_frame_lm"
        if not folder.is_dir():
            self.note(f"{folder}: no such folder; faces of {subject} are detected")
            return
        files = index_landmark_files(folder)
        count = self.frame_counts[subject]
        if count > 0 and len(files) == count + 1 and sorted(files) == list(range(len(files))):
            self.note(
                f"{folder}: {len(files)} landmark files for {count} video frames; the first is dropped "
                "(file n is used for video frame n-1)"
            )
            self.landmark_shift[subject] = 1
        elif len(files) < count:
            self.note(f"{folder}: {len(files)} landmark files for {count} video frames; the rest are detected")
        self.landmark_files[subject] = files

    def unit_inputs(self, subject: str) -> str:
        """What a unit reads (its AU files, video and landmark files by size and time), so a rerun prepares again a
        unit whose inputs changed."""
        from ..data.schema import input_signature

        labels = [self.labels_dir / subject / f"{subject}_au{au}.txt" for au in self.aus]
        files = [*labels, self.videos[subject], *self.landmark_files[subject].values()]
        return input_signature(data={"aus": list(self.aus), "shift": self.landmark_shift[subject]}, files=files)

    def units(self) -> list[Unit]:
        """``(unit_id, thunk)`` pairs for ``prepare_dataset``; one unit per subject, id = subject."""
        return [(subject, lambda subject=subject: self.records(subject)) for subject in self.subjects]

    def records(self, subject: str) -> Iterator[FrameRecord]:
        """FrameRecords of one subject in video order.

        Label frames past the video's end are yielded without an image, so ``prepare_dataset`` lists them as errors.
        """
        import cv2

        labels = self.labels[subject]
        video = self.videos[subject]
        files, shift = self.landmark_files[subject], self.landmark_shift[subject]
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise PrepareError(f"{video}: OpenCV cannot open this video (damaged file or missing codec)")
        decoded = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                index, decoded = decoded, decoded + 1
                frame = index - FRAME_OFFSET
                row = labels.row_of.get(frame)
                if row is None:
                    continue
                path = files.get(index + shift)
                yield FrameRecord(
                    subject=subject,
                    sequence=subject,
                    frame=frame,
                    labels=labels.labels(row),
                    image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                    landmarks=read_landmark_file(path) if path is not None else None,
                    source=f"{video.name}#{index} (frame {frame})",
                    intensities=labels.intensity(row),
                )
        finally:
            capture.release()
        if decoded != self.frame_counts[subject]:
            logger.warning("%s: the header declares %d frames, %d decoded", video, self.frame_counts[subject], decoded)
        for frame in labels.frames.tolist():
            if frame + FRAME_OFFSET >= decoded:
                yield FrameRecord(
                    subject=subject,
                    sequence=subject,
                    frame=frame,
                    labels=labels.labels(labels.row_of[frame]),
                    source=f"{video.name}#{frame + FRAME_OFFSET} (frame {frame}): the video ends after {decoded} frames",
                    intensities=labels.intensity(labels.row_of[frame]),
                )


@dataclass
class PrepareDisfaArguments:
    """Options of ``sevnet-hf prepare disfa``."""

    root: str | None = field(
        default=None, metadata={"help": "DISFA root holding ActionUnit_Labels/, Videos_LeftCamera/, Landmark_Points/."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Folder for the prepared dataset (required; created; reruns resume)."}
    )
    labels_dir: str | None = field(
        default=None, metadata={"help": "Folder of {S}/{S}_au{n}.txt label files. Default: ROOT/ActionUnit_Labels."}
    )
    video_dir: str | None = field(
        default=None, metadata={"help": "Folder of LeftVideo{S}_comp.avi. Default: ROOT/Videos_LeftCamera."}
    )
    landmarks_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of {S}/tmp_frame_lm/*_lm.mat. Default: ROOT/Landmark_Points when it exists."},
    )
    use_landmarks: bool = field(
        default=True, metadata={"help": "Align with the shipped 66 landmarks where present (else detect faces)."}
    )
    subjects: list[str] | None = field(
        default=None, metadata={"help": "Only these subjects (space- or comma-separated, e.g. SN001 SN010)."}
    )
    align_size: int = field(default=256, metadata={"help": "Side of the aligned square face images."})
    detector: str = field(
        default="hog", metadata={"help": "dlib face detector for frames without landmarks: hog or cnn."}
    )
    num_workers: int = field(default=0, metadata={"help": "Processes preparing subjects in parallel (0: this one)."})
    progress: bool = field(default=True, metadata={"help": "Print a line per unit and the final table."})


def main(argv: Sequence[str] | None = None) -> int:
    """``sevnet-hf prepare disfa --root DIR --output OUT``; returns 0, or 2 after printing an input problem."""
    return run_cli(lambda: prepare_disfa(parse_arguments(argv, PrepareDisfaArguments)))


def prepare_disfa(args: PrepareDisfaArguments) -> int:
    """Read the folders named by ``args`` and write the prepared dataset."""
    labels_dir = required_dir(args.labels_dir, args.root, ("ActionUnit_Labels",), "--labels-dir")
    video_dir = required_dir(args.video_dir, args.root, ("Videos_LeftCamera",), "--video-dir")
    landmarks_dir = None
    if args.use_landmarks:
        landmarks_dir = resolve_dir(args.landmarks_dir, args.root, ("Landmark_Points",), "--landmarks-dir")
    reader = DisfaReader(labels_dir, video_dir, landmarks_dir, subjects=split_names(args.subjects))
    return run_preparation(
        reader,
        args,
        source="DISFA",
        partition_name="DISFA 3 parts (ME-GraphAU / JAA-Net)",
        extra_metadata={
            "camera": "left",
            "frame_offset": FRAME_OFFSET,
            "frame_mapping": FRAME_MAPPING_NOTE,
            "frame_offset_readers": {str(offset): who for offset, who in FRAME_OFFSET_READERS.items()},
            "occurrence_threshold": DISFA_OCCURRENCE_THRESHOLD,
            "landmarks": "Landmark_Points 66 points, else dlib detection" if landmarks_dir else "dlib detection",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
