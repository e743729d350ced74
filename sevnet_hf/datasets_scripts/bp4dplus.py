"""BP4D+ (MMSE) -> prepared AU dataset (``sevnet-hf prepare bp4dplus``).

Expected layout under ``--root`` (each folder can live elsewhere; its option overrides the default)::

    ROOT/
      AUCoding/AU_OCC/F001_T1.csv      --labels-dir     coded tasks only (T1, T6, T7, T8); header = frame column, then
                                                        the AU numbers (1,2,4,5,...,39,99)
      2D+3D/F001.zip                   --frames-dir     as shipped: entries F001/T1/0000.jpg, read without unzipping
      2D+3D/F001/T1/0000.jpg                            or the unzipped folders (used when both exist)
      2DFeatures/F001_T1.mat           --landmarks-dir  optional: MATLAB v5, struct array ``fit`` with fields
                                                        frame (1-based), pts_2d (49x2), headPose

Labels are read by the same code as BP4D (:func:`sevnet_hf.datasets_scripts.bp4d.read_occurrence_csv`): 0/1, and 9
or negative -> ``protocols.UNKNOWN_LABEL``; we keep the 12 AUs of ``protocols.BP4DPLUS_AUS``.

Frames. CSV frame *f* is read from the image numbered ``f + frame_offset``. The public readers disagree, so the offset
is an option (read in their code, not checked on the data by us):

- ``-1`` (default), *f* -> ``(f-1).jpg``. KISMED, ``LeqiaoP1/MA-project-KISMED`` ``code/data/au_dataset.py``: "AU
  frame f (1-based) <-> RGB image index/jpg number f - 1", marked verified there, on images copied with their shipped
  names; its ``code/data/rgb_features.py`` (``jpg_index_of``) reports 2DFeatures frames 1..1612 beside
  ``2D+3D/F001/T1/0000.jpg``..``1611.jpg``. rPPG-Toolbox, ``ubicomplab/rPPG-Toolbox``
  ``dataset/data_loader/BP4DPlusBigSmallLoader.py``: a task's jpgs in zip order, the AU codes padded with
  ``start_frame - 1`` entries in front, i.e. frame *f* is the jpg at 0-based position *f - 1* (the same file when the
  names start at 0000 with no gaps).
- ``0``, *f* -> ``f.jpg``. py-feat, ``cosanlab/py-feat`` ``scripts/extract_au_training_features.py``
  (``load_bp4dplus_labels`` at commit e03e2720, zero-padded to the folder's width; the script was removed later).

The default follows the two readers whose authors compared frame numbers with the images. The metadata records
``frame_offset``, ``frame_mapping`` (the rule and the readers that follow it) and ``frame_offset_readers`` (both
readings). A coded frame that has no image (F041_T7's video and labels differ in length) or whose zip entry cannot
be decoded is listed under ``errors`` in report.json and skipped; the run goes on.

Landmarks. The ``fit(k).frame`` field numbers video frames from 1 and image *n* (0-based name) is video frame *n + 1*
(KISMED's ``jpg_index_of`` above), so each image takes the points whose ``frame`` is its number + 1, whatever
``--frame-offset`` says. Entries with empty fields (lost tracking) are left to face detection.

Parts. BP4D+ has no public fold list, and the SEV-Net paper does not give the split behind its BP4D+ numbers. We ship
our own fixed 3-way subject split in ``sevnet_hf/data_files/bp4dplus_parts.json`` (``protocols.BP4DPLUS_SPLIT_NAME``),
produced by :func:`make_bp4dplus_parts` (write it again with
``python -m sevnet_hf.datasets_scripts.bp4dplus --write-parts PATH``): the 82 women F001-F082 in order, then the
58 men M001-M058 in order, dealt round-robin into parts 1, 2, 3. Each part gets every third subject of each sex, so
parts differ by at most one subject of either sex (47/47/46 subjects; 28/27/27 women, 19/20/19 men). BP4D+ results
on it are not comparable with the paper's Table 3; the prepared metadata's ``partition_name`` says whose split it is.
"""

from __future__ import annotations

import json
import logging
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..data.schema import FrameRecord
from ..protocols import BP4DPLUS_AUS, BP4DPLUS_SPLIT_NAME
from .bp4d import (
    ReaderNotes,
    Unit,
    find_label_files,
    index_numbered_images,
    padding_width,
    parse_arguments,
    prepare_task_sequences,
    read_occurrence_csv,
    select_sequences,
    subject_parts,
)
from .common import PrepareError, run_cli

logger = logging.getLogger(__name__)

PARTS_FILE = Path(__file__).resolve().parent.parent / "data_files" / "bp4dplus_parts.json"
BP4DPLUS_WOMEN = tuple(f"F{i:03d}" for i in range(1, 83))
BP4DPLUS_MEN = tuple(f"M{i:03d}" for i in range(1, 59))
DEFAULT_FRAME_OFFSET = -1
# --frame-offset value -> the public readers that pair CSV frame f with image number f + value (module docstring).
FRAME_OFFSET_READERS: dict[int, str] = {-1: "KISMED and rPPG-Toolbox (BigSmall loader)", 0: "py-feat"}
PARTITION_NAME = f"BP4D+ 3 parts: {BP4DPLUS_SPLIT_NAME}"


# --------------------------------------------------------------------------------------------------------------------
# Subject parts.


def make_bp4dplus_parts() -> dict[int, tuple[str, ...]]:
    """The shipped split: women then men, each in ID order, dealt round-robin into parts 1, 2, 3."""
    ordered = sorted(BP4DPLUS_WOMEN) + sorted(BP4DPLUS_MEN)
    return {part: tuple(ordered[part - 1 :: 3]) for part in (1, 2, 3)}


PARTS_ABOUT = (
    "sevnet-hf's own subject-exclusive 3-way split of BP4D+ (140 subjects: F001-F082, M001-M058), not the SEV-Net "
    "paper's: no public fold list exists and the paper does not give its split, so results on it are not comparable "
    "with the paper's BP4D+ table. "
    "Made by sevnet_hf.datasets_scripts.bp4dplus.make_bp4dplus_parts: list the women F001..F082 in ID order, then the "
    "men M001..M058 in ID order, and put the subject at position i (0-based) in part i mod 3 + 1. Each part gets every "
    "third subject of each sex: parts 1/2/3 hold 47/47/46 subjects (women 28/27/27, men 19/20/19). Folds follow "
    "sevnet_hf.protocols.FOLD_TEST_PART (fold k tests on one part, trains on the other two)."
)


def write_bp4dplus_parts(path: str | Path = PARTS_FILE) -> Path:
    """Write the split as JSON (``{"_about": ..., "parts": {"1": [...], ...}}``), atomically."""
    import os

    path = Path(path)
    payload = {
        "_about": PARTS_ABOUT,
        "parts": {str(part): list(subjects) for part, subjects in make_bp4dplus_parts().items()},
    }
    lines = [f' "_about": {json.dumps(payload["_about"])},', ' "parts": {']
    rows = [f'  "{part}": {json.dumps(subjects)}' for part, subjects in payload["parts"].items()]
    lines += [",\n".join(rows), " }"]
    text = "{\n" + "\n".join(lines) + "\n}\n"  # one line per part, so diffs show moved subjects
    if json.loads(text) != payload:  # the hand-made layout must still be the same JSON
        raise RuntimeError("bp4dplus parts JSON layout is broken")
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def load_bp4dplus_parts(path: str | Path = PARTS_FILE) -> dict[int, tuple[str, ...]]:
    """Read the shipped split as ``{part: subjects}`` (the same shape as ``protocols.BP4D_PARTS``)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        parts = {int(part): tuple(subjects) for part, subjects in payload["parts"].items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"BP4D+ parts file {path} does not exist (it ships with sevnet-hf)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise PrepareError(
            f"{path}: not a parts file of the form {{'parts': {{'1': [subjects...], ...}}}} ({err})"
        ) from None
    subject_parts(parts)  # a subject in two parts is an error
    return parts


# --------------------------------------------------------------------------------------------------------------------
# Images and landmarks.


def zip_entries(path: str | Path, subject: str) -> dict[str, dict[int, str]]:
    """``{task: {image number: entry name}}`` for the ``{S}/{T}/<n>.jpg`` entries of a subject's zip archive."""
    entries: dict[str, dict[int, str]] = {}
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise PrepareError(f"{path}: not a readable zip archive ({err})") from None
    with archive:
        for name in archive.namelist():
            entry = PurePosixPath(name)
            parts = entry.parts
            if len(parts) < 2 or entry.suffix.lower() not in (".jpg", ".jpeg") or not entry.stem.isdigit():
                continue
            if len(parts) >= 3 and parts[-3] != subject:
                continue
            entries.setdefault(parts[-2], {}).setdefault(int(entry.stem), name)
    return entries


def decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """Decode image bytes to uint8 RGB; ``PrepareError`` naming ``where`` when they are not an image."""
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise PrepareError(f"{where}: not a readable image")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def read_bp4dplus_landmarks(path: str | Path) -> dict[int, np.ndarray]:
    """Read a BP4D+ ``2DFeatures`` v5 file: ``{video frame (1-based): (49, 2) points}``; lost frames are absent.

    Raises ``PrepareError`` (a ``ValueError``) naming the file and entry for a missing ``fit`` struct or points of the wrong shape.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        content = loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:
        raise PrepareError(f"{path}: a MATLAB v7.3 file; BP4D+ 2DFeatures files are v5 (scipy.io.loadmat)") from None
    except Exception as err:  # scipy raises several types for damaged files
        raise PrepareError(f"{path}: not a readable MATLAB file ({err})") from None
    fit = content.get("fit")
    if fit is None or fit.dtype.names is None or not {"frame", "pts_2d"} <= set(fit.dtype.names):
        raise PrepareError(f"{path}: no struct 'fit' with fields 'frame' and 'pts_2d'; expected BP4D+ 2DFeatures")
    points: dict[int, np.ndarray] = {}
    for index, entry in enumerate(fit.reshape(-1)):
        frame = np.asarray(entry["frame"]).reshape(-1)
        pts = np.asarray(entry["pts_2d"])
        if frame.size == 0 or pts.size == 0:
            continue
        if pts.shape != (49, 2):
            raise PrepareError(f"{path}: fit({index + 1}).pts_2d has shape {pts.shape}; expected 49 points of (x, y)")
        pts = pts.astype(np.float64)
        if np.isfinite(pts).all():
            points[int(frame[0])] = pts
    return points


# --------------------------------------------------------------------------------------------------------------------
# Reader.


class BP4DPlusReader(ReaderNotes):
    """Yields one preparation unit per BP4D+ subject/task (see the module docstring for the layout).

    Construction reads every label file and checks the image sources, so setup errors surface before any image
    work. ``notes`` lists what was found missing (task folders, landmark files).
    """

    dataset_name = "BP4D+"

    def __init__(
        self,
        labels_dir: str | Path,
        frames_dir: str | Path,
        landmarks_dir: str | Path | None = None,
        *,
        subjects: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        frame_offset: int = DEFAULT_FRAME_OFFSET,
        aus: Sequence[int] = BP4DPLUS_AUS,
        parts: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.labels_dir = Path(labels_dir)
        self.frames_dir = Path(frames_dir)
        self.landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else None
        self.frame_offset = int(frame_offset)
        self.aus = tuple(aus)
        self.parts = {int(k): tuple(v) for k, v in (parts or load_bp4dplus_parts()).items()}
        self.part_of = subject_parts(self.parts)
        self.sequences = select_sequences(
            find_label_files(self.labels_dir, self.dataset_name),
            self.part_of,
            subjects=subjects,
            tasks=tasks,
            labels_dir=self.labels_dir,
            parts_source=f"the BP4D+ parts file {PARTS_FILE.name}",
        )
        if not self.frames_dir.is_dir():
            raise FileNotFoundError(f"frame folder {self.frames_dir} does not exist; pass --frames-dir")
        if self.landmarks_dir is not None and not self.landmarks_dir.is_dir():
            raise FileNotFoundError(f"landmark folder {self.landmarks_dir} does not exist; fix --landmarks-dir")
        missing = sorted({s for s, _, _ in self.sequences if self.image_source(s) is None})
        if missing:
            raise FileNotFoundError(
                f"no image folder or zip for subjects {', '.join(missing)} under {self.frames_dir} (looked for "
                f"{missing[0]}/ and {missing[0]}.zip); check --frames-dir or leave them out with --subjects"
            )
        self.tables = {(s, t): read_occurrence_csv(path, self.aus) for s, t, path in self.sequences}
        self.zip_entries: dict[str, dict[str, dict[int, str]]] = {}
        for subject, task, path in self.sequences:
            if not self._images(subject, task):
                self.note(
                    f"{self._where(subject, task)}: no images; the {len(self.tables[subject, task])} coded frames of "
                    f"{path.name} will be listed as errors"
                )
            if self.landmarks_dir is not None and not self.landmark_file(subject, task).is_file():
                self.note(
                    f"{self.landmark_file(subject, task)}: no landmark file; faces in {subject}/{task} are detected"
                )

    @property
    def subjects(self) -> list[str]:
        return sorted({subject for subject, _, _ in self.sequences})

    def image_source(self, subject: str) -> Path | None:
        """The unzipped ``{S}/`` folder if present, else ``{S}.zip``, else None."""
        folder = self.frames_dir / subject
        if folder.is_dir():
            return folder
        archive = self.frames_dir / f"{subject}.zip"
        return archive if archive.is_file() else None

    def landmark_file(self, subject: str, task: str) -> Path:
        return self.landmarks_dir / f"{subject}_{task}.mat"

    def unit_inputs(self, unit_id: str) -> str:
        """What a unit reads (its AU_OCC file, images or zip archive and landmark file by size and time; the frame
        offset), so a rerun prepares again a unit whose inputs changed."""
        from ..data.schema import input_signature

        subject, task, path = next(entry for entry in self.sequences if f"{entry[0]}_{entry[1]}" == unit_id)
        source = self.image_source(subject)
        files = [path] + ([source] if source is not None and self._zipped(subject) else [])
        if source is not None and not self._zipped(subject):
            files += index_numbered_images(source / task).values() if (source / task).is_dir() else []
        if self.landmarks_dir is not None:
            files.append(self.landmark_file(subject, task))
        return input_signature(data={"frame_offset": self.frame_offset, "aus": list(self.aus)}, files=files)

    def _where(self, subject: str, task: str) -> Path:
        """Where a task's images are: ``.../F001/T1``, or for a zip the path inside it (``.../F001.zip/F001/T1``)."""
        source = self.image_source(subject)
        return source / subject / task if self._zipped(subject) else source / task

    def _zipped(self, subject: str) -> bool:
        return self.image_source(subject).suffix.lower() == ".zip"

    def _images(self, subject: str, task: str) -> Mapping[int, Any]:
        """Image number -> path (folder) or entry name (zip) for one task."""
        source = self.image_source(subject)
        if self._zipped(subject):
            if subject not in self.zip_entries:
                self.zip_entries[subject] = zip_entries(source, subject)
            return self.zip_entries[subject].get(task, {})
        folder = source / task
        return index_numbered_images(folder) if folder.is_dir() else {}

    def units(self) -> list[Unit]:
        """``(unit_id, thunk)`` pairs for ``prepare_dataset``; unit ids look like ``F001_T1``."""
        return [
            (f"{subject}_{task}", lambda subject=subject, task=task: self.records(subject, task))
            for subject, task, _ in self.sequences
        ]

    def records(self, subject: str, task: str) -> Iterator[FrameRecord]:
        """FrameRecords of one subject/task, in CSV order.

        A coded frame without an image is yielded with the path it should have (for a zip: ``F001.zip/F001/T1/
        0012.jpg``), so that ``prepare_dataset`` reports it and goes on.
        """
        table = self.tables[(subject, task)]
        images = self._images(subject, task)
        where = self._where(subject, task)
        width = padding_width(PurePosixPath(str(item)).stem for item in images.values())
        landmarks = None
        if self.landmarks_dir is not None and self.landmark_file(subject, task).is_file():
            landmarks = read_bp4dplus_landmarks(self.landmark_file(subject, task))
        archive = zipfile.ZipFile(self.image_source(subject)) if self._zipped(subject) and images else None
        lost = 0
        try:
            for row, frame in enumerate(table.frames.tolist()):
                number = frame + self.frame_offset
                item = images.get(number)
                image, points = None, None
                if item is None:
                    image_path = str(where / f"{number:0{width}d}.jpg")
                elif archive is not None:
                    image_path = None
                    try:
                        image = decode_jpeg(archive.read(item), f"{self.image_source(subject)}:{item}")
                    except (ValueError, zipfile.BadZipFile, OSError) as err:  # listed as an error, the run goes on
                        source = f"{subject}/{task}/{PurePosixPath(item).name} (frame {frame}): {err}"
                        yield FrameRecord(
                            subject=subject, sequence=task, frame=frame, labels=table.labels(row), source=source
                        )
                        continue
                else:
                    image_path = str(item)
                if item is not None and landmarks is not None:
                    points = landmarks.get(number + 1)
                    lost += points is None
                yield FrameRecord(
                    subject=subject,
                    sequence=task,
                    frame=frame,
                    labels=table.labels(row),
                    image=image,
                    image_path=image_path,
                    landmarks=points,
                    source=f"{subject}/{task}/{PurePosixPath(str(item or image_path)).name} (frame {frame})",
                )
        finally:
            if archive is not None:
                archive.close()
        if lost:
            logger.warning(
                "%s: no points for %d coded frames; their faces were detected", self.landmark_file(subject, task), lost
            )


# --------------------------------------------------------------------------------------------------------------------
# Command line.


@dataclass
class PrepareBP4DPlusArguments:
    """Options of ``sevnet-hf prepare bp4dplus``."""

    root: str | None = field(default=None, metadata={"help": "BP4D+ root holding AUCoding/, 2D+3D/ and 2DFeatures/."})
    output: str | None = field(
        default=None, metadata={"help": "Folder for the prepared dataset (required; created; reruns resume)."}
    )
    labels_dir: str | None = field(
        default=None, metadata={"help": "Folder of {S}_{T}.csv occurrence files. Default: ROOT/AUCoding/AU_OCC."}
    )
    frames_dir: str | None = field(
        default=None, metadata={"help": "Folder holding {S}.zip or unzipped {S}/{T}/<n>.jpg. Default: ROOT/2D+3D."}
    )
    landmarks_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of {S}_{T}.mat (2DFeatures, v5). Default: ROOT/2DFeatures when it exists."},
    )
    use_landmarks: bool = field(
        default=True, metadata={"help": "Align with the shipped 49 landmarks where present (else detect faces)."}
    )
    subjects: list[str] | None = field(
        default=None, metadata={"help": "Only these subjects (space- or comma-separated, e.g. F001 M001)."}
    )
    tasks: list[str] | None = field(default=None, metadata={"help": "Only these tasks (e.g. T1 T8). Default: all."})
    frame_offset: int = field(
        default=DEFAULT_FRAME_OFFSET,
        metadata={
            "help": "CSV frame f is read from image number f + offset. Default -1: f -> (f-1).jpg, as KISMED and "
            "rPPG-Toolbox read BP4D+; 0: f -> f.jpg, as py-feat does."
        },
    )
    align_size: int = field(default=256, metadata={"help": "Side of the aligned square face images."})
    detector: str = field(
        default="hog", metadata={"help": "dlib face detector for frames without landmarks: hog or cnn."}
    )
    num_workers: int = field(default=0, metadata={"help": "Processes preparing units in parallel (0: this one)."})
    progress: bool = field(default=True, metadata={"help": "Print a line per unit and the final table."})


def main(argv: Sequence[str] | None = None) -> int:
    """``sevnet-hf prepare bp4dplus --root DIR --output OUT``; returns 0, or 2 after printing an input problem."""
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["--write-parts"]:
        print(write_bp4dplus_parts(*argv[1:2]))
        return 0
    return run_cli(lambda: prepare_bp4dplus(parse_arguments(argv, PrepareBP4DPlusArguments)))


def prepare_bp4dplus(args: PrepareBP4DPlusArguments) -> int:
    """Read the folders named by ``args`` and write the prepared dataset."""
    return prepare_task_sequences(
        args,
        BP4DPlusReader,
        frame_folders=("2D+3D",),
        source="BP4D+",
        partition_name=PARTITION_NAME,
        frame_list="every frame coded in AUCoding/AU_OCC (tasks T1, T6, T7, T8)",
        frame_readers=FRAME_OFFSET_READERS,
    )


if __name__ == "__main__":
    sys.exit(main())
