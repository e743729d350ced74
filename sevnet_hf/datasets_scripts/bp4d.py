"""BP4D-Spontaneous -> prepared AU dataset (``sevnet-hf prepare bp4d``).

Expected layout under ``--root`` (each folder can live elsewhere; its option overrides the default)::

    ROOT/
      AUCoding/AU_OCC/F001_T1.csv        --labels-dir      one CSV per subject/task: header row, one row per coded frame
      Sequences(2D+3D)/F001/T1/0000.jpg  --frames-dir      (``Sequences_2D+3D/`` is found too); names are zero-padded
                                                           to 3 or 4 digits, detected per folder
      2DFeatures/F001_T1.mat             --landmarks-dir   optional: MATLAB v7.3 (HDF5), ``fit/pred`` holds one
                                                           reference per video frame to a 2x49 array of points

Labels. Column 0 of each CSV is the frame number. The usual header is ``0,1,...,99`` and the column headed *k* holds
AU *k*; some re-released files use the BP4D+ header instead, which names the AUs (``1,2,4,...,99``). Both are read
the same way: every header cell after the first is parsed as an AU name (``sevnet_hf.protocols.parse_au``). Codes are
0 (absent), 1 (present) and 9 (not coded), and 9 or any negative value becomes ``protocols.UNKNOWN_LABEL``. We keep
the 12 AUs of ``protocols.BP4D_AUS``.

Frames. Every coded row becomes one example, so a prepared set follows whatever frames the CSVs code: with the full
release that is ME-GraphAU's list (146,847 frames; JAA-Net's list has 146,576). CSV frame *f* is read from the image
numbered ``f + frame_offset``, matched by number whatever the zero padding. The default 0 maps *f* to ``f.jpg``, and
every public BP4D reader we read does the same (read in their code and lists, not checked on the data by us):

- AU_R-CNN, ``machanic/AU_R-CNN`` ``dataset_toolkit/scripts/data_index_file_gen.py`` (also ``BP4DDataReader`` in
  ``dataset_toolkit/data_reader.py``): the CSV frame zero-filled to the width of a name in the folder, + ``.jpg``.
- py-feat, ``cosanlab/py-feat`` ``scripts/extract_au_training_features.py`` (``load_bp4d_labels`` at commit
  e03e2720; the script was removed later): ``f"{f:0{w}d}.jpg"`` with the width read from the folder.
- ME-GraphAU, ``CVI-SZU/ME-GraphAU`` ``tool/BP4D_image_label_process.py``: ``{S}/{T}/{f}.jpg`` from the CSV's frame
  column, on its own unpadded copy of the images (its lists start ``F007/T1/643.jpg``, F007_T1's first coded frame).
- PyTorch-JAANet, ``ZhiwenShao/PyTorch-JAANet`` ``data/list/BP4D_part{1,2,3}_path.txt``: per sequence its image
  numbers are ME-GraphAU's CSV frame numbers, unshifted (the same set, or a subset where it left 271 frames out).

No reader we found uses another offset; ``--frame-offset`` is there for a copy whose images were renumbered. The
metadata records ``frame_offset``, ``frame_mapping`` (the rule and the readers that follow it) and
``frame_offset_readers``. A coded frame that has no image is listed under ``errors`` in report.json (with the file
name it should have) and skipped; the run goes on. Setup observations (a task folder or landmark file that is
missing) go into the metadata's ``reader_notes``. ``--tasks`` and ``--subjects`` restrict the run; every other input
problem stops it with a message naming the file, line or column.

Landmarks. ``fit/pred`` has one entry per video frame; entry *i* (0-based) goes with image number ``first + i``,
where ``first`` is the lowest image number in the sequence folder (0 for ``0000.jpg``), so images missing in the
middle do not shift the rest. An empty entry (a frame the tracker lost), an image past the last entry or a sequence
with no ``.mat`` file is left to face detection. Pass ``--no-use-landmarks`` to detect faces everywhere. This pairing
of entries with image numbers is our reading: no public reader we found pairs ``fit/pred`` entries with image names,
so it is unverified.

Parts. Subjects are split as in ``protocols.BP4D_PARTS`` (ME-GraphAU / JAA-Net). A subject that is not in any part is
an error.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.schema import FrameRecord, prepare_dataset
from ..protocols import BP4D_AUS, BP4D_PARTS, BP4D_UNKNOWN_CODE, UNKNOWN_LABEL, au_label, parse_au
from .common import PrepareError, parse_args, run_cli, units_with_inputs

logger = logging.getLogger(__name__)

Unit = tuple[str, Callable[[], Iterator[FrameRecord]]]

FRAME_FOLDER_NAMES = ("Sequences(2D+3D)", "Sequences_2D+3D")
FRAME_LIST_NOTE = (
    "every frame coded in AUCoding/AU_OCC (the full release gives ME-GraphAU's list, 146,847 frames; "
    "JAA-Net's list has 146,576)"
)
DEFAULT_FRAME_OFFSET = 0
# --frame-offset value -> the public readers that pair CSV frame f with image number f + value (module docstring).
FRAME_OFFSET_READERS: dict[int, str] = {0: "AU_R-CNN, py-feat, ME-GraphAU and PyTorch-JAANet"}
_LABEL_FILE = re.compile(r"^(?P<subject>[^_]+)_(?P<task>[^_.]+)\.csv$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------------
# Shared by the BP4D, BP4D+ and DISFA readers.


class ReaderNotes:
    """Setup observations of a reader (missing landmark files, length differences), logged and kept for metadata.

    Per-frame problems do not go here: a frame whose image is missing is still yielded, with the path it should have,
    and ``prepare_dataset`` lists it under ``errors`` in report.json and skips it.
    """

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)
        logger.warning(message)


@dataclass
class OccurrenceTable:
    """The occurrence codes of one AU_OCC file, kept compact (one int8 row per coded frame)."""

    path: Path
    aus: tuple[int, ...]
    frames: np.ndarray  # (N,) int64, in file order
    codes: np.ndarray  # (N, len(aus)) int8: 1, 0 or UNKNOWN_LABEL

    def labels(self, row: int) -> dict[int, int]:
        return {au: int(code) for au, code in zip(self.aus, self.codes[row])}

    def __len__(self) -> int:
        return len(self.frames)


def _parse_number(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def read_occurrence_csv(path: str | Path, aus: Sequence[int]) -> OccurrenceTable:
    """Read a BP4D / BP4D+ ``AU_OCC`` CSV (numbered or named header) and keep the columns of ``aus``.

    Raises ``PrepareError`` (a ``ValueError``) naming the file, line and column for an unknown AU name, a missing AU column, a duplicate
    frame or a code other than 0, 1, 9 or a negative number.
    """
    path = Path(path)
    aus = tuple(int(au) for au in aus)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"label file {path} does not exist") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise PrepareError(f"{path}: empty file; expected a header row naming the AU columns")
        column_of: dict[int, int] = {}
        for column, cell in enumerate(header[1:], start=1):
            try:
                au = parse_au(cell)
            except ValueError:
                raise PrepareError(
                    f"{path}, line 1, column {column + 1}: header cell {cell.strip()!r} is not an AU name; expected "
                    "'0,1,...,99' (column k = AU k) or AU names such as '1,2,4,...' after the frame column"
                ) from None
            if au in column_of:
                raise PrepareError(
                    f"{path}, line 1: {au_label(au)} appears in columns {column_of[au] + 1} and {column + 1}"
                )
            column_of[au] = column
        missing = [au_label(au) for au in aus if au not in column_of]
        if missing:
            raise PrepareError(
                f"{path}: no column for {', '.join(missing)} (the header names {len(column_of)} AUs: "
                f"{', '.join(header[1:6])}...); expected the BP4D header '0,1,...,99' or a header naming these AUs"
            )
        wanted = [column_of[au] for au in aus]
        frames: list[int] = []
        rows: list[list[int]] = []
        seen: dict[int, int] = {}
        for line_no, cells in enumerate(reader, start=2):
            if not cells or not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise PrepareError(
                    f"{path}, line {line_no}: {len(cells)} cells but the header has {len(header)}; the file is damaged"
                )
            try:
                frame_value = _parse_number(cells[0])
            except ValueError:
                raise PrepareError(f"{path}, line {line_no}: frame number {cells[0]!r} is not a number") from None
            if frame_value != int(frame_value):
                raise PrepareError(f"{path}, line {line_no}: frame number {cells[0]!r} is not a whole number")
            frame = int(frame_value)
            if frame in seen:
                raise PrepareError(f"{path}, line {line_no}: frame {frame} already appears on line {seen[frame]}")
            seen[frame] = line_no
            row = []
            for au, column in zip(aus, wanted):
                cell = cells[column].strip()
                try:
                    value = _parse_number(cell)
                except ValueError:
                    value = None
                if value is None or value != int(value) or not (value in (0, 1, BP4D_UNKNOWN_CODE) or value < 0):
                    raise PrepareError(
                        f"{path}, line {line_no}, column {column + 1} ({au_label(au)}): code {cell!r}; expected 0 "
                        f"(absent), 1 (present) or {BP4D_UNKNOWN_CODE} (not coded)"
                    )
                row.append(int(value) if value in (0, 1) else UNKNOWN_LABEL)
            frames.append(frame)
            rows.append(row)
    codes = np.asarray(rows, dtype=np.int8).reshape(len(rows), len(aus))
    return OccurrenceTable(path=path, aus=aus, frames=np.asarray(frames, dtype=np.int64), codes=codes)


def index_numbered_images(folder: str | Path, suffixes: Iterable[str] = (".jpg", ".jpeg")) -> dict[int, Path]:
    """Map image number -> path for files named by a zero-padded number (``012.jpg``, ``0012.jpg``) in ``folder``.

    Reading the number instead of assuming a width copes with the 3- and 4-digit folders BP4D mixes.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    images: dict[int, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in suffixes and path.stem.isdigit():
            images.setdefault(int(path.stem), path)
    return images


def padding_width(names: Iterable[str], default: int = 4) -> int:
    """The zero-padded width most numbered names in a folder use (``["000", "001"]`` -> 3); ``default`` if none."""
    counts: dict[int, int] = {}
    for name in names:
        counts[len(name)] = counts.get(len(name), 0) + 1
    return max(counts, key=lambda width: (counts[width], width)) if counts else default


def split_names(values: Iterable[str] | None) -> list[str] | None:
    """Flatten ``["F001,F002", "M001"]`` into ``["F001", "F002", "M001"]`` (None stays None)."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in str(value).split(",")]
    return [name for name in names if name]


def frame_mapping_note(
    offset: int, readers: Mapping[int, str], label: str = "CSV frame", target: str = "image number"
) -> str:
    """``"CSV frame f -> image number f-1 (as KISMED ... read it)"``: the rule an offset gives and who reads it so."""
    number = "f" if offset == 0 else f"f{offset:+d}"
    who = readers.get(offset)
    said = f"as {who} read it" if who else "no public reader we checked reads it this way"
    return f"{label} f -> {target} {number} ({said})"


def subject_parts(parts: Mapping[int, Sequence[str]]) -> dict[str, int]:
    """Invert ``{part: subjects}`` into ``{subject: part}``; a subject listed twice is an error."""
    part_of: dict[str, int] = {}
    for part, subjects in parts.items():
        for subject in subjects:
            if subject in part_of:
                raise PrepareError(f"subject {subject} is listed in part {part_of[subject]} and part {part}")
            part_of[subject] = int(part)
    return part_of


def find_label_files(labels_dir: Path, what: str) -> dict[tuple[str, str], Path]:
    """``{(subject, task): csv path}`` for every ``{S}_{T}.csv`` in ``labels_dir``."""
    if not labels_dir.is_dir():
        raise FileNotFoundError(
            f"{what} label folder {labels_dir} does not exist; point --root at the dataset or pass --labels-dir"
        )
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(labels_dir.iterdir()):
        match = _LABEL_FILE.match(path.name)
        if match and path.is_file():
            found[(match["subject"], match["task"])] = path
    if not found:
        raise FileNotFoundError(f"{labels_dir} holds no label files named like F001_T1.csv")
    return found


def select_sequences(
    label_files: Mapping[tuple[str, str], Path],
    part_of: Mapping[str, int],
    *,
    subjects: Sequence[str] | None,
    tasks: Sequence[str] | None,
    labels_dir: Path,
    parts_source: str,
) -> list[tuple[str, str, Path]]:
    """Apply ``--subjects`` / ``--tasks`` and check every chosen subject belongs to a part."""
    present = sorted({subject for subject, _ in label_files})
    if subjects is not None:
        unknown = [s for s in subjects if s not in present]
        if unknown:
            raise PrepareError(f"--subjects names {', '.join(unknown)}, which have no label files in {labels_dir}")
    if tasks is not None:
        present_tasks = {task for _, task in label_files}
        unknown = [t for t in tasks if t not in present_tasks]
        if unknown:
            raise PrepareError(f"--tasks names {', '.join(unknown)}, which have no label files in {labels_dir}")
    chosen = [
        (subject, task, path)
        for (subject, task), path in sorted(label_files.items(), key=lambda item: (item[0][0], _task_key(item[0][1])))
        if (subjects is None or subject in subjects) and (tasks is None or task in tasks)
    ]
    outside = sorted({subject for subject, _, _ in chosen if subject not in part_of})
    if outside:
        raise PrepareError(
            f"subjects {', '.join(outside)} (label files in {labels_dir}) are in no part of {parts_source}; "
            "rename the files or leave these subjects out with --subjects"
        )
    return chosen


def _task_key(task: str) -> tuple[int, str]:
    digits = "".join(ch for ch in task if ch.isdigit())
    return (int(digits) if digits else 0, task)


# --------------------------------------------------------------------------------------------------------------------
# BP4D landmarks.


def read_bp4d_landmarks(path: str | Path) -> list[np.ndarray | None]:
    """Read a BP4D ``2DFeatures`` v7.3 file: one (49, 2) float array per video frame, None where tracking was lost.

    Raises ``PrepareError`` (a ``ValueError``) naming the file and entry when a point array does not hold 49 points of (x, y).
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise PrepareError(f"{path}: not a MATLAB v7.3 (HDF5) file ({err}); BP4D 2DFeatures files are v7.3") from None
    with handle:
        if "fit" not in handle or "pred" not in handle["fit"]:
            raise PrepareError(f"{path}: no 'fit/pred' dataset; expected BP4D 2DFeatures with fit/pred point arrays")
        refs = np.asarray(handle["fit/pred"][()]).reshape(-1)
        points: list[np.ndarray | None] = []
        for index, ref in enumerate(refs):
            if not ref:
                points.append(None)
                continue
            dataset = handle[ref]
            if dataset.attrs.get("MATLAB_empty", 0):
                points.append(None)
                continue
            array = np.asarray(dataset[()], dtype=np.float64)
            if array.shape == (2, 49):  # MATLAB stores the 49x2 matrix column-major
                array = array.T
            if array.shape != (49, 2):
                raise PrepareError(
                    f"{path}: fit/pred entry {index} (0-based) has shape {array.shape}; expected 49 points of (x, y)"
                )
            points.append(array if np.isfinite(array).all() else None)
    return points


# --------------------------------------------------------------------------------------------------------------------
# Reader.


class BP4DReader(ReaderNotes):
    """Yields one preparation unit per BP4D subject/task (see the module docstring for the layout).

    Construction reads every label file and checks the folders, so setup errors surface before any image work.
    ``notes`` lists what was found missing (sequence folders, landmark files).
    """

    dataset_name = "BP4D"

    def __init__(
        self,
        labels_dir: str | Path,
        frames_dir: str | Path,
        landmarks_dir: str | Path | None = None,
        *,
        subjects: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        frame_offset: int = DEFAULT_FRAME_OFFSET,
        aus: Sequence[int] = BP4D_AUS,
        parts: Mapping[int, Sequence[str]] = BP4D_PARTS,
    ) -> None:
        super().__init__()
        self.labels_dir = Path(labels_dir)
        self.frames_dir = Path(frames_dir)
        self.landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else None
        self.frame_offset = int(frame_offset)
        self.aus = tuple(aus)
        self.parts = {int(k): tuple(v) for k, v in parts.items()}
        self.part_of = subject_parts(self.parts)
        self.sequences = select_sequences(
            find_label_files(self.labels_dir, self.dataset_name),
            self.part_of,
            subjects=subjects,
            tasks=tasks,
            labels_dir=self.labels_dir,
            parts_source="protocols.BP4D_PARTS",
        )
        if not self.frames_dir.is_dir():
            raise FileNotFoundError(f"frame folder {self.frames_dir} does not exist; pass --frames-dir")
        missing = sorted({s for s, _, _ in self.sequences if not (self.frames_dir / s).is_dir()})
        if missing:
            raise FileNotFoundError(
                f"no frame folder for subjects {', '.join(missing)} under {self.frames_dir}; "
                "check --frames-dir or leave them out with --subjects"
            )
        if self.landmarks_dir is not None and not self.landmarks_dir.is_dir():
            raise FileNotFoundError(f"landmark folder {self.landmarks_dir} does not exist; fix --landmarks-dir")
        self.tables = {(s, t): read_occurrence_csv(path, self.aus) for s, t, path in self.sequences}
        for subject, task, path in self.sequences:
            folder = self.frames_dir / subject / task
            if not folder.is_dir():
                self.note(
                    f"{folder}: no such folder; the {len(self.tables[subject, task])} coded frames of {path.name} "
                    "will be listed as errors"
                )
            if self.landmarks_dir is not None and not self.landmark_file(subject, task).is_file():
                self.note(
                    f"{self.landmark_file(subject, task)}: no landmark file; faces in {subject}/{task} are detected"
                )

    @property
    def subjects(self) -> list[str]:
        return sorted({subject for subject, _, _ in self.sequences})

    def units(self) -> list[Unit]:
        """``(unit_id, thunk)`` pairs for ``prepare_dataset``; unit ids look like ``F001_T1``."""
        return [
            (f"{subject}_{task}", lambda subject=subject, task=task: self.records(subject, task))
            for subject, task, _ in self.sequences
        ]

    def landmark_file(self, subject: str, task: str) -> Path:
        return self.landmarks_dir / f"{subject}_{task}.mat"

    def unit_inputs(self, unit_id: str) -> str:
        """What a unit reads (its AU_OCC file, images and landmark file by size and time; the frame offset), so a
        rerun prepares again a unit whose inputs changed."""
        from ..data.schema import input_signature

        subject, task, path = next(entry for entry in self.sequences if f"{entry[0]}_{entry[1]}" == unit_id)
        folder = self.frames_dir / subject / task
        files = [path, *(index_numbered_images(folder).values() if folder.is_dir() else ())]
        if self.landmarks_dir is not None:
            files.append(self.landmark_file(subject, task))
        return input_signature(data={"frame_offset": self.frame_offset, "aus": list(self.aus)}, files=files)

    def records(self, subject: str, task: str) -> Iterator[FrameRecord]:
        """FrameRecords of one subject/task, in CSV order.

        A coded frame without an image is yielded with the path it should have (width detected from the folder),
        so that ``prepare_dataset`` reports it and goes on.
        """
        table = self.tables[(subject, task)]
        folder = self.frames_dir / subject / task
        images = index_numbered_images(folder) if folder.is_dir() else {}
        width = padding_width(path.stem for path in images.values())
        landmarks = None
        first = min(images, default=0)
        if self.landmarks_dir is not None and self.landmark_file(subject, task).is_file():
            landmarks = read_bp4d_landmarks(self.landmark_file(subject, task))
            span = max(images) - first + 1 if images else 0
            if len(landmarks) != span:
                logger.warning(
                    "%s: %d landmark entries for images %d..%d in %s; entry i goes with image %d + i, images "
                    "without an entry are detected",
                    self.landmark_file(subject, task),
                    len(landmarks),
                    first,
                    first + span - 1,
                    folder,
                    first,
                )
        for row, frame in enumerate(table.frames.tolist()):
            number = frame + self.frame_offset
            path = images.get(number)
            points = None
            if path is None:
                path = folder / f"{number:0{width}d}.jpg"
            elif landmarks is not None and 0 <= number - first < len(landmarks):
                points = landmarks[number - first]
            yield FrameRecord(
                subject=subject,
                sequence=task,
                frame=frame,
                labels=table.labels(row),
                image_path=str(path),
                landmarks=points,
                source=f"{subject}/{task}/{path.name} (frame {frame})",
            )


# --------------------------------------------------------------------------------------------------------------------
# Command line (the helpers below are shared with the DISFA and BP4D+ commands).


@dataclass
class PrepareBP4DArguments:
    """Options of ``sevnet-hf prepare bp4d``."""

    root: str | None = field(
        default=None, metadata={"help": "BP4D root holding AUCoding/, Sequences(2D+3D)/ and 2DFeatures/."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Folder for the prepared dataset (required; created; reruns resume)."}
    )
    labels_dir: str | None = field(
        default=None, metadata={"help": "Folder of {S}_{T}.csv occurrence files. Default: ROOT/AUCoding/AU_OCC."}
    )
    frames_dir: str | None = field(
        default=None,
        metadata={"help": "Folder holding {S}/{T}/<n>.jpg. Default: ROOT/Sequences(2D+3D) or ROOT/Sequences_2D+3D."},
    )
    landmarks_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of {S}_{T}.mat (2DFeatures, v7.3). Default: ROOT/2DFeatures when it exists."},
    )
    use_landmarks: bool = field(
        default=True, metadata={"help": "Align with the shipped 49 landmarks where present (else detect faces)."}
    )
    subjects: list[str] | None = field(
        default=None, metadata={"help": "Only these subjects (space- or comma-separated, e.g. F001 M009)."}
    )
    tasks: list[str] | None = field(default=None, metadata={"help": "Only these tasks (e.g. T1 T2). Default: all."})
    frame_offset: int = field(
        default=DEFAULT_FRAME_OFFSET,
        metadata={
            "help": "CSV frame f is read from image number f + offset. Default 0: f -> f.jpg, as AU_R-CNN, py-feat, "
            "ME-GraphAU and PyTorch-JAANet read BP4D."
        },
    )
    align_size: int = field(default=256, metadata={"help": "Side of the aligned square face images."})
    detector: str = field(
        default="hog", metadata={"help": "dlib face detector for frames without landmarks: hog or cnn."}
    )
    num_workers: int = field(default=0, metadata={"help": "Processes preparing units in parallel (0: this one)."})
    progress: bool = field(default=True, metadata={"help": "Print a line per unit and the final table."})


def resolve_dir(explicit: str | None, root: str | None, names: Sequence[str], option: str) -> Path | None:
    """The folder given by ``option``, else the first of ``names`` under ``root`` that exists (None when none)."""
    if explicit is not None:
        return Path(explicit)
    if root is None:
        raise PrepareError(f"pass --root, or {option} and the other folder options")
    for name in names:
        candidate = Path(root) / name
        if candidate.is_dir():
            return candidate
    return None


def required_dir(explicit: str | None, root: str | None, names: Sequence[str], option: str) -> Path:
    """Like :func:`resolve_dir`, but a folder that cannot be found is an error naming where we looked."""
    found = resolve_dir(explicit, root, names, option)
    if found is None:
        looked = ", ".join(str(Path(root) / name) for name in names)
        raise FileNotFoundError(f"none of {looked} exists; pass {option}")
    return found


def parse_arguments(argv: Sequence[str] | None, arguments_class: type) -> Any:
    """Parse ``argv`` into ``arguments_class`` (``HfArgumentParser``); ``--output`` and ``--root`` are required."""
    args = parse_args(arguments_class, argv)
    if not args.output:
        raise PrepareError("--output is required: the folder to write the prepared dataset to")
    return args


def run_preparation(reader: Any, args: Any, *, source: str, partition_name: str, extra_metadata: dict) -> int:
    """Hand a reader's units to ``prepare_dataset`` with the reader's notes in the metadata; returns 0."""
    from ..data.align import FaceFinder

    metadata = {**extra_metadata, "reader_notes": list(reader.notes)}
    report = prepare_dataset(
        units_with_inputs(reader),
        args.output,
        aus=list(reader.aus),
        source=source,
        partition=reader.parts,
        partition_name=partition_name,
        face_finder=FaceFinder(detector=args.detector),
        align_size=args.align_size,
        extra_metadata=metadata,
        progress=args.progress,
        num_workers=args.num_workers,
    )
    if not args.progress:
        print(f"{source}: {report.num_frames} frames, {len(report.errors)} errors -> {report.dataset_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``sevnet-hf prepare bp4d --root DIR --output OUT``; returns 0, or 2 after printing an input problem."""
    return run_cli(lambda: prepare_bp4d(parse_arguments(argv, PrepareBP4DArguments)))


def prepare_bp4d(args: PrepareBP4DArguments) -> int:
    """Read the folders named by ``args`` and write the prepared dataset."""
    return prepare_task_sequences(
        args,
        BP4DReader,
        frame_folders=FRAME_FOLDER_NAMES,
        source="BP4D",
        partition_name="BP4D 3 parts (ME-GraphAU / JAA-Net)",
        frame_list=FRAME_LIST_NOTE,
        frame_readers=FRAME_OFFSET_READERS,
    )


def prepare_task_sequences(
    args: Any,
    reader_class: type,
    *,
    frame_folders: Sequence[str],
    source: str,
    partition_name: str,
    frame_list: str,
    frame_readers: Mapping[int, str],
) -> int:
    """The preparation BP4D and BP4D+ share: AU_OCC labels, frames per subject/task, optional 2DFeatures landmarks."""
    labels_dir = required_dir(args.labels_dir, args.root, ("AUCoding/AU_OCC",), "--labels-dir")
    frames_dir = required_dir(args.frames_dir, args.root, frame_folders, "--frames-dir")
    landmarks_dir = None
    if args.use_landmarks:
        landmarks_dir = resolve_dir(args.landmarks_dir, args.root, ("2DFeatures",), "--landmarks-dir")
    if args.frame_offset not in frame_readers:
        logger.warning(
            "--frame-offset %d: no public %s reader we checked pairs frames this way (they use %s)",
            args.frame_offset,
            source,
            ", ".join(f"{offset:+d}: {who}" for offset, who in frame_readers.items()),
        )
    reader = reader_class(
        labels_dir,
        frames_dir,
        landmarks_dir,
        subjects=split_names(args.subjects),
        tasks=split_names(args.tasks),
        frame_offset=args.frame_offset,
    )
    return run_preparation(
        reader,
        args,
        source=source,
        partition_name=partition_name,
        extra_metadata={
            "frame_list": frame_list,
            "frame_offset": args.frame_offset,
            "frame_mapping": frame_mapping_note(args.frame_offset, frame_readers),
            "frame_offset_readers": {str(offset): who for offset, who in frame_readers.items()},
            "landmarks": "2DFeatures 49 points, else dlib detection" if landmarks_dir else "dlib detection",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
