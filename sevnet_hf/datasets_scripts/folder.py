"""``sevnet-hf prepare folder``: a folder of face images plus a CSV of AU labels -> a prepared dataset.

The labels CSV has one row per image and a header. Cells are separated by commas, semicolons, tabs or ``|`` (found
from the header; with semicolons or tabs a decimal comma is read too). Each image is listed once; a path listed twice
(or one frame number given to two images of a sequence) is an error naming both lines. Columns (names are
case-insensitive):

- ``path`` (required): image path, relative to ``--images`` or absolute.
- ``subject`` (required): person id; folds are subject-exclusive.
- ``sequence`` (optional): video / task id; default: the image's folder relative to ``--images``.
- ``frame`` (optional, integer): default: the row's position within its subject and sequence.
- AU columns in any common spelling (``AU1``, ``AU01``, ``au_1``, ``1``): 1 present, 0 absent; 9, a negative value,
  ``nan``/``na`` or an empty cell mean unknown.
- ``AU6_intensity`` (also ``AU06_r``, ``au6_int``): optional float intensities.
- landmarks (optional): ``x0, y0, x1, y1, ...`` (also ``x_0``, ``lm_x0``) for 5 (template order), 49, 66 or 68
  points in source pixels. Without landmarks the face is found with dlib (the ``faces`` extra).

Without ``--parts`` the subjects are split into 3 parts round-robin in sorted order (subject i -> part i % 3 + 1),
which is deterministic and balanced in subjects, not in frames.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sevnet_hf.datasets_scripts.common import (
    PrepareError,
    parse_args,
    read_partition_file,
    round_robin_partition,
    run_cli,
)
from sevnet_hf.protocols import UNKNOWN_LABEL, parse_au

_LANDMARK_COLUMN = re.compile(r"^(?:lm_|landmark_)?([xy])_?(\d+)$", re.IGNORECASE)
_INTENSITY_COLUMN = re.compile(r"^(.+?)_(?:intensity|int|r)$", re.IGNORECASE)
_UNKNOWN_TEXT = {"", "nan", "na", "n/a"}
_DELIMITERS = (",", ";", "\t", "|")
_LISTED = 5  # duplicates named in the error message


@dataclass
class FolderArguments:
    """Arguments of ``sevnet-hf prepare folder``."""

    images: str = field(metadata={"help": "Folder that the image paths in the labels CSV are relative to."})
    labels: str = field(
        metadata={"help": "Labels CSV: path, subject, optional sequence/frame, AU columns (AU1, AU01, au_1, ...)."}
    )
    output: str = field(
        metadata={"help": "Output folder for the prepared dataset (rerun the same command to resume)."}
    )
    landmarks: str | None = field(
        default=None,
        metadata={
            "help": "Optional landmark file: CSV with the path column and x0,y0,x1,y1,... columns, or JSON "
            '{"<path as in the labels CSV>": [[x, y], ...]}. Images without landmarks are aligned by dlib detection.'
        },
    )
    parts: str | None = field(
        default=None,
        metadata={
            "help": "Optional subject -> part file: CSV with columns subject,part or JSON. "
            "Default: 3 parts round-robin over the sorted subjects."
        },
    )
    name: str = field(default="folder", metadata={"help": "Dataset name recorded as its source."})
    aus: str | None = field(
        default=None, metadata={"help": "Comma-separated AUs to keep (e.g. '1,2,4'); default: every AU column."}
    )
    path_column: str = field(default="path", metadata={"help": "Name of the image path column."})
    subject_column: str = field(default="subject", metadata={"help": "Name of the subject column."})
    sequence_column: str = field(default="sequence", metadata={"help": "Name of the optional sequence column."})
    frame_column: str = field(default="frame", metadata={"help": "Name of the optional frame column."})
    ignore_columns: str | None = field(
        default=None, metadata={"help": "Comma-separated extra CSV columns to ignore (others are an error)."}
    )
    detector: str = field(default="hog", metadata={"help": "dlib detector when landmarks are missing: hog or cnn."})
    upsample: int = field(default=0, metadata={"help": "dlib upsampling steps (finds smaller faces, slower)."})
    detect_max_side: int = field(
        default=800,
        metadata={
            "help": "Shrink larger images to this longer side before detection (faster; faces must stay >= ~80 px "
            "wide after shrinking). 0 = detect at full size. Landmarks are fitted at full size either way."
        },
    )
    image_size: int = field(default=256, metadata={"help": "Aligned image width and height."})
    num_workers: int = field(default=0, metadata={"help": "Worker processes (one unit = one subject/sequence)."})
    quiet: bool = field(default=False, metadata={"help": "Print only errors."})


@dataclass
class LabelTable:
    """The parsed labels CSV."""

    aus: list[int]
    rows: list[dict]  # path, abs_path, subject, sequence, frame, labels, intensities, landmarks, line
    landmark_points: int | None
    delimiter: str = ","


def sniff_delimiter(file: Path) -> str:
    """The cell separator of a CSV file: the one of ``, ; tab |`` that splits its header into the most cells."""
    with open(file, newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
    cells = {d: len(next(csv.reader([first], delimiter=d), [])) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: cells[d])  # a tie keeps the comma
    return best if cells[best] > 1 else ","


def _column_map(header: list[str], file: Path, args: FolderArguments) -> dict:
    """Classify the header's columns; raise PrepareError naming the file, column and fix."""
    lowered = [name.strip().lower() for name in header]
    roles = {
        "path": args.path_column.lower(),
        "subject": args.subject_column.lower(),
        "sequence": args.sequence_column.lower(),
        "frame": args.frame_column.lower(),
    }
    ignored = {c.strip().lower() for c in (args.ignore_columns or "").split(",") if c.strip()}
    found: dict = {"au": {}, "intensity": {}, "lm": {}}
    for role, name in roles.items():
        if lowered.count(name) > 1:
            raise PrepareError(f"{file}, line 1: the column {name!r} appears twice")
        if name in lowered:
            found[role] = lowered.index(name)
    for role in ("path", "subject"):
        if role not in found and len(header) == 1:
            raise PrepareError(
                f"{file}, line 1: the header {header[0]!r} is a single cell; separate the cells with ',', ';', a tab "
                "or '|'"
            )
        if role not in found:
            raise PrepareError(
                f"{file}, line 1: no {roles[role]!r} column in the header {header}; add it or name the column "
                f"with --{role}_column"
            )
    for index, (raw, name) in enumerate(zip(header, lowered)):
        column = f"column {index + 1} ({raw.strip()!r})"
        if index in {found.get(role) for role in roles} or name in ignored:
            continue
        if match := _LANDMARK_COLUMN.match(name):
            found["lm"][(match.group(1).lower(), int(match.group(2)))] = index
            continue
        if (match := _INTENSITY_COLUMN.match(name)) and _is_au(match.group(1)):
            au = parse_au(match.group(1))
            if au in found["intensity"]:
                raise PrepareError(f"{file}, line 1, {column}: a second intensity column for AU{au}")
            found["intensity"][au] = index
            continue
        if _is_au(name):
            au = parse_au(name)
            if au in found["au"]:
                raise PrepareError(f"{file}, line 1, {column}: a second label column for AU{au}; keep one")
            found["au"][au] = index
            continue
        if name.startswith("au"):
            raise PrepareError(
                f"{file}, line 1, {column}: unknown AU name; spell AU columns like AU1, AU01, au_1 (labels) or "
                "AU1_intensity, or list the column in --ignore_columns"
            )
        raise PrepareError(
            f"{file}, line 1, {column}: not a known column (path, subject, sequence, frame, AU columns, "
            "AU intensity columns, x0/y0... landmarks); remove it or list it in --ignore_columns"
        )
    return found


def _is_au(name: str) -> bool:
    try:
        parse_au(name)
    except ValueError:
        return False
    return True


def _landmark_indices(lm_columns: dict, file: Path) -> list[tuple[int, int]] | None:
    """Column indices (x, y) for points 0..N-1, or None when the CSV has no landmark columns."""
    if not lm_columns:
        return None
    numbers = sorted({number for _, number in lm_columns})
    count = len(numbers)
    complete = numbers == list(range(count)) and all(
        ("x", n) in lm_columns and ("y", n) in lm_columns for n in numbers
    )
    if not complete or count not in (5, 49, 66, 68):
        raise PrepareError(
            f"{file}, line 1: landmark columns must be x0,y0 ... x(N-1),y(N-1) for N = 5, 49, 66 or 68 points; "
            f"found {len(lm_columns)} columns for point numbers {numbers[:3]}...{numbers[-1:]}"
        )
    return [(lm_columns[("x", n)], lm_columns[("y", n)]) for n in numbers]


def _label_value(text: str, file: Path, line: int, column: str) -> int:
    value = text.strip().lower()
    if value in _UNKNOWN_TEXT:
        return UNKNOWN_LABEL
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0):
        return int(number)
    if number == 9 or number < 0:
        return UNKNOWN_LABEL
    raise PrepareError(
        f"{file}, line {line}, column {column!r}: label {text!r} is not 0, 1, 9, negative or empty (unknown)"
    )


def _float(text: str, file: Path, line: int, column: str, decimal_comma: bool = False) -> float | None:
    value = text.strip()
    if value.lower() in _UNKNOWN_TEXT:
        return None
    if decimal_comma and "," in value and "." not in value:
        value = value.replace(",", ".")
    try:
        return float(value)
    except ValueError as error:
        raise PrepareError(f"{file}, line {line}, column {column!r}: {text!r} is not a number") from error


def _duplicates_error(file: Path, duplicates: list[tuple[int, str, int]]) -> PrepareError:
    listed = "; ".join(f"line {line}: {path} (first on line {first})" for line, path, first in duplicates[:_LISTED])
    more = f"; ... {len(duplicates) - _LISTED} more" if len(duplicates) > _LISTED else ""
    return PrepareError(
        f"{file}: {len(duplicates)} image{'s are' if len(duplicates) > 1 else ' is'} listed twice ({listed}{more}); "
        "keep one row for each image"
    )


def read_label_csv(args: FolderArguments) -> LabelTable:
    """Parse the labels CSV of ``args`` (and the landmark file, if any); errors name the file, line and column."""
    file = Path(args.labels)
    images = Path(args.images)
    if not file.is_file():
        raise FileNotFoundError(f"labels file {file} does not exist")
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    delimiter = sniff_delimiter(file)
    decimal_comma = delimiter != ","
    if delimiter != "," and not args.quiet:
        print(f"{file}: cells separated by {delimiter!r} (found from the header)", flush=True)
    with open(file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise PrepareError(f"{file}: the file is empty; the first line must be a header (path,subject,AU1,...)")
        found = _column_map(header, file, args)
        if not found["au"]:
            raise PrepareError(f"{file}, line 1: no AU label columns (AU1, AU01, au_1, ...) in the header {header}")
        keep = sorted(found["au"])
        if args.aus:
            try:
                keep = [parse_au(a) for a in args.aus.split(",") if a.strip()]
            except ValueError as error:
                raise PrepareError(f"--aus {args.aus!r}: {error}") from error
            absent = [au for au in keep if au not in found["au"]]
            if absent:
                raise PrepareError(f"--aus asks for AU {absent}, which have no column in {file}")
        lm_indices = _landmark_indices(found["lm"], file)
        rows = []
        counters: dict[tuple[str, str], int] = {}
        path_lines: dict[str, int] = {}
        frame_lines: dict[tuple[str, str, int], int] = {}
        duplicates: list[tuple[int, str, int]] = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise PrepareError(f"{file}, line {line}: {len(row)} cells but the header has {len(header)} columns")
            path_text = row[found["path"]].strip()
            subject = row[found["subject"]].strip()
            if not path_text or not subject:
                raise PrepareError(f"{file}, line {line}: the path and subject cells must not be empty")
            abs_path = Path(path_text) if Path(path_text).is_absolute() else images / path_text
            normalized = os.path.normpath(abs_path)
            if normalized in path_lines:
                duplicates.append((line, path_text, path_lines[normalized]))
                continue
            path_lines[normalized] = line
            if "sequence" in found:
                sequence = row[found["sequence"]].strip()
            else:
                parent = Path(path_text).parent
                sequence = "" if Path(path_text).is_absolute() or str(parent) == "." else parent.as_posix()
            key = (subject, sequence)
            if "frame" in found:
                try:
                    frame = int(row[found["frame"]].strip())
                except ValueError as error:
                    raise PrepareError(
                        f"{file}, line {line}, column {header[found['frame']]!r}: frame must be an integer"
                    ) from error
                if (subject, sequence, frame) in frame_lines:
                    where = f"subject {subject}" + (f", sequence {sequence}" if sequence else "")
                    raise PrepareError(
                        f"{file}, line {line}: frame {frame} of {where} is also on line "
                        f"{frame_lines[subject, sequence, frame]}; give each image of a sequence its own frame number"
                    )
                frame_lines[subject, sequence, frame] = line
            else:
                frame = counters.get(key, 0)
            counters[key] = counters.get(key, 0) + 1
            labels = {au: _label_value(row[found["au"][au]], file, line, header[found["au"][au]]) for au in keep}
            intensities = {}
            for au, index in found["intensity"].items():
                value = _float(row[index], file, line, header[index], decimal_comma)
                if value is not None:
                    intensities[au] = value
            landmarks = None
            if lm_indices is not None:
                values = [
                    (
                        _float(row[x], file, line, header[x], decimal_comma),
                        _float(row[y], file, line, header[y], decimal_comma),
                    )
                    for x, y in lm_indices
                ]
                filled = sum(v is not None for pair in values for v in pair)
                if filled == 2 * len(values):
                    landmarks = np.asarray(values, dtype=np.float64)
                elif filled:
                    raise PrepareError(f"{file}, line {line}: some landmark cells are empty; fill all or none")
            rows.append(
                {
                    "path": path_text,
                    "abs_path": str(abs_path),
                    "subject": subject,
                    "sequence": sequence,
                    "frame": frame,
                    "labels": labels,
                    "intensities": intensities or None,
                    "landmarks": landmarks,
                    "line": line,
                }
            )
    if duplicates:
        raise _duplicates_error(file, duplicates)
    if not rows:
        raise PrepareError(f"{file}: the header is there but no image rows follow")
    points = len(lm_indices) if lm_indices else None
    if args.landmarks:
        points = _attach_landmark_file(rows, Path(args.landmarks), args)
    return LabelTable(aus=keep, rows=rows, landmark_points=points, delimiter=delimiter)


def _attach_landmark_file(rows: list[dict], file: Path, args: FolderArguments) -> int | None:
    """Fill rows' landmarks from a CSV/JSON landmark file keyed by the path as written in the labels CSV."""
    if not file.is_file():
        raise FileNotFoundError(f"landmark file {file} does not exist")
    table: dict[str, np.ndarray] = {}
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PrepareError(f"{file}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise PrepareError(f'{file}: expected an object {{"<image path>": [[x, y], ...]}}')
        for key, points in data.items():
            array = np.asarray(points, dtype=np.float64)
            if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] not in (5, 49, 66, 68):
                raise PrepareError(f"{file}, entry {key!r}: landmarks must be 5, 49, 66 or 68 [x, y] pairs")
            table[key] = array
    else:
        delimiter = sniff_delimiter(file)
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None) or []
            lowered = [h.strip().lower() for h in header]
            if args.path_column.lower() not in lowered:
                raise PrepareError(f"{file}, line 1: no {args.path_column!r} column to match the labels CSV rows")
            path_at = lowered.index(args.path_column.lower())
            lm = {}
            for index, name in enumerate(lowered):
                if match := _LANDMARK_COLUMN.match(name):
                    lm[(match.group(1).lower(), int(match.group(2)))] = index
            indices = _landmark_indices(lm, file)
            if indices is None:
                raise PrepareError(f"{file}, line 1: no landmark columns x0,y0,x1,y1,...")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) != len(header):
                    raise PrepareError(f"{file}, line {line}: {len(row)} cells but the header has {len(header)}")
                values = [
                    [
                        _float(row[x], file, line, header[x], delimiter != ","),
                        _float(row[y], file, line, header[y], delimiter != ","),
                    ]
                    for x, y in indices
                ]
                if any(v is None for pair in values for v in pair):
                    continue  # no landmarks for this image: detect
                table[row[path_at].strip()] = np.asarray(values, dtype=np.float64)
    sizes = {len(points) for points in table.values()}
    for row in rows:
        if row["path"] in table:
            row["landmarks"] = table[row["path"]]
    return sizes.pop() if len(sizes) == 1 else None


def folder_units(table: LabelTable) -> list[tuple[str, object, object]]:
    """One unit per (subject, sequence), in the order they first appear in the CSV.

    Each unit carries a signature of its rows (labels, frames, landmarks, paths) and of its image files (size and
    modification time), so a rerun after the CSV or an image was edited prepares exactly the units that changed.
    """
    from sevnet_hf.data.schema import FrameRecord, input_signature

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in table.rows:
        groups.setdefault((row["subject"], row["sequence"]), []).append(row)

    def make_thunk(members: list[dict]):
        def thunk():
            for row in members:
                yield FrameRecord(
                    subject=row["subject"],
                    sequence=row["sequence"],
                    frame=row["frame"],
                    labels=row["labels"],
                    image_path=row["abs_path"],
                    landmarks=row["landmarks"],
                    source=row["path"],
                    intensities=row["intensities"],
                )

        return thunk

    def make_signature(members: list[dict]):
        rows = [{key: value for key, value in row.items() if key != "line"} for row in members]
        return lambda: input_signature(data=rows, files=[row["abs_path"] for row in members])

    return [
        (f"{subject}/{sequence}" if sequence else subject, make_thunk(m), make_signature(m))
        for (subject, sequence), m in groups.items()
    ]


def prepare_folder(args: FolderArguments):
    """Read the CSV and files of ``args`` and prepare the dataset; returns the PreparationReport."""
    from sevnet_hf.data.align import FaceFinder
    from sevnet_hf.data.schema import prepare_dataset

    table = read_label_csv(args)
    subjects = sorted({row["subject"] for row in table.rows})
    if args.parts:
        partition = read_partition_file(args.parts)
        missing = [s for s in subjects if s not in partition]
        if missing:
            raise PrepareError(f"{args.parts}: no part for subjects {missing}; add a line 'subject,part' for each")
        partition_name = f"file {args.parts}"
    else:
        partition = round_robin_partition(subjects)
        partition_name = "round-robin over sorted subjects (subject i -> part i % 3 + 1)"
    needs_detection = any(row["landmarks"] is None for row in table.rows)
    finder = None
    if needs_detection:
        finder = FaceFinder(upsample=args.upsample, detector=args.detector, max_side=args.detect_max_side or None)
    return prepare_dataset(
        folder_units(table),
        args.output,
        aus=table.aus,
        source=args.name,
        partition=partition,
        partition_name=partition_name,
        face_finder=finder,
        align_size=args.image_size,
        extra_metadata={
            "labels_file": str(Path(args.labels).resolve()),
            "labels_delimiter": table.delimiter,
            "images_dir": str(Path(args.images).resolve()),
            "landmarks_file": str(Path(args.landmarks).resolve()) if args.landmarks else None,
            "landmark_points": table.landmark_points,
        },
        progress=not args.quiet,
        num_workers=args.num_workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sevnet-hf prepare folder``; returns the exit status."""
    args = parse_args(FolderArguments, argv)
    return run_cli(lambda: prepare_folder(args))


if __name__ == "__main__":
    sys.exit(main())
