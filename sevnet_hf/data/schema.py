"""The prepared-dataset schema shared by every AU dataset (BP4D, DISFA, BP4D+, folders, synthetic).

A reader turns its source layout into *units* (one video, task or subject each): ``(unit_id, thunk)`` pairs where
``thunk()`` yields :class:`FrameRecord`, or ``(unit_id, thunk, inputs)`` triples where ``inputs`` (a string, or a
callable returning one, e.g. :func:`input_signature`) describes everything the unit reads: its label rows, the files
it opens, reader settings that change its records. :func:`prepare_dataset` aligns every frame, writes one shard per
unit and then assembles the Hugging Face dataset. On disk, under ``out_dir``:

- ``shards/<unit_id>.arrow``: one Arrow stream per finished unit, written to a temporary name and renamed, so a
  shard that exists is complete. Its schema metadata holds the unit's counts, faces not found and errors, and a
  fingerprint of the settings and of the unit's ``inputs``; a rerun skips every unit whose shard exists with the same
  fingerprint and prepares again a unit whose labels or files changed. A unit given without ``inputs`` is reused
  whatever changed in its source (only the settings are compared).
- ``dataset/``: the assembled dataset (``Dataset.save_to_disk``), rebuilt from the shards on every run.
- ``metadata.json`` (also in ``dataset.info.description``) and ``report.json``.

Columns: ``image`` (aligned RGB face, JPEG bytes, ``datasets.Image``), ``subject``, ``sequence``, ``frame`` (int32),
``source``, ``part`` (int8, from the partition), one int8 column per AU (``AU1``...: 1 present, 0 absent,
-1 unknown), ``landmarks`` (5 x 2 float32 in aligned pixels, template order), ``AU{n}_intensity`` (float32, NaN
where unknown) when any record has intensities, and any ``extra`` keys.

Frames are never dropped silently: a frame without a detectable face is listed under ``no_face``; an unreadable
image, a landmark array of the wrong shape or a label for an AU outside ``aus`` is skipped and listed under
``errors`` with its source and the problem. A subject missing from the partition stops the run (a setup error).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sevnet_hf.atomic_io import write_json_atomic
from sevnet_hf.data.align import (
    CANONICAL_TEMPLATE_5PT,
    TEMPLATE_SIZE,
    FaceFinder,
    align_face,
    align_image_file,
    read_image,
    to_five_points,
    to_rgb_uint8,
    transform_boxes,
    transform_points,
)
from sevnet_hf.protocols import UNKNOWN_LABEL, au_label, parse_au

SCHEMA_VERSION = 1
SHARD_DIR = "shards"
DATASET_DIR = "dataset"
METADATA_FILE = "metadata.json"
REPORT_FILE = "report.json"
_UNIT_KEY = b"sevnet_unit"
_CORE_COLUMNS = ("image", "subject", "sequence", "frame", "source", "part", "landmarks")


@dataclass
class FrameRecord:
    """One source frame, as a reader hands it to :func:`prepare_dataset`.

    ``labels`` maps AU number -> 1, 0 or ``UNKNOWN_LABEL`` (-1); 9 and negative values also mean unknown, and an AU
    missing from the dict is unknown. ``image`` (RGB, gray or RGBA, uint8/uint16, source resolution) or
    ``image_path`` (read lazily) must be given. ``landmarks`` are source-image (x, y) points in a layout
    :func:`sevnet_hf.data.align.to_five_points` accepts (5, 49, 66 or 68 points); None means "detect with dlib".
    ``landmark_layout="dlib5"`` marks dlib's own 5-point order. ``extra`` holds JSON-able row fields.
    """

    subject: str
    sequence: str
    frame: int
    labels: dict[int, int]
    image: np.ndarray | None = None
    image_path: str | None = None
    landmarks: np.ndarray | None = None
    source: str = ""
    intensities: dict[int, float] | None = None
    extra: dict | None = None
    landmark_layout: str | None = None


def au_column(au: int | str) -> str:
    """Column name of an AU's occurrence labels (``AU1``)."""
    return au_label(parse_au(au))


def intensity_column(au: int | str) -> str:
    """Column name of an AU's intensity values (``AU6_intensity``)."""
    return f"{au_column(au)}_intensity"


def normalize_partition(partition: Mapping) -> dict[str, int]:
    """Return ``subject -> part`` from either that mapping or ``part -> subjects`` (as in ``protocols.BP4D_PARTS``)."""
    if not partition:
        raise ValueError("the partition is empty; give a mapping subject -> part (or part -> list of subjects)")
    values = list(partition.values())
    if all(isinstance(v, Iterable) and not isinstance(v, (str, bytes)) for v in values):
        result: dict[str, int] = {}
        for part, subjects in partition.items():
            for subject in subjects:
                if str(subject) in result and result[str(subject)] != int(part):
                    raise ValueError(f"subject {subject!r} is in part {result[str(subject)]} and in part {part}")
                result[str(subject)] = int(part)
        return result
    return {str(subject): int(part) for subject, part in partition.items()}


@dataclass
class PreparationReport:
    """What :func:`prepare_dataset` did: counts, AU base rates, faces not found and errors (saved as report.json)."""

    out_dir: str
    dataset_path: str
    source: str
    aus: list[int]
    num_frames: int = 0
    frames_per_subject: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    au_positive: dict[str, int] = field(default_factory=dict)
    au_known: dict[str, int] = field(default_factory=dict)
    no_face: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    aligned_from: dict[str, int] = field(default_factory=dict)
    units_total: int = 0
    units_prepared: int = 0
    units_reused: int = 0
    seconds: float = 0.0

    @property
    def au_base_rates(self) -> dict[str, float | None]:
        """Share of known labels that are 1, per AU column (None where no label is known)."""
        return {
            col: (self.au_positive.get(col, 0) / known if (known := self.au_known.get(col, 0)) else None)
            for col in self.au_known
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["au_base_rates"] = self.au_base_rates
        return data

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

    def format_table(self, max_listed: int = 10) -> str:
        """A plain-text summary: frames per subject, AU base rates, faces not found, errors."""
        rate = self.num_frames / self.seconds * 60 if self.seconds > 0 and self.units_prepared else None
        lines = [
            f"Prepared {self.source}: {self.num_frames} frames, {len(self.frames_per_subject)} subjects, "
            f"{self.units_total} units ({self.units_prepared} prepared now, {self.units_reused} reused) "
            f"in {self.seconds:.1f} s" + (f" ({rate:.0f} frames/min overall)" if rate else ""),
            f"  dataset: {self.dataset_path}",
            "",
            f"  {'subject':<16}{'part':>6}{'frames':>10}",
        ]
        for subject, count in sorted(self.frames_per_subject.items()):
            lines.append(f"  {subject:<16}{self.parts.get(subject, '?'):>6}{count:>10}")
        lines += ["", f"  {'AU':<16}{'base rate':>10}{'known':>10}"]
        for col, base in self.au_base_rates.items():
            shown = "n/a" if base is None else f"{base:.3f}"
            lines.append(f"  {col:<16}{shown:>10}{self.au_known.get(col, 0):>10}")
        lines += ["", f"  faces not found: {len(self.no_face)}"]
        lines += [f"    {entry['source']}" for entry in self.no_face[:max_listed]]
        if len(self.no_face) > max_listed:
            lines.append(f"    ... {len(self.no_face) - max_listed} more in report.json")
        lines.append(f"  errors (frames skipped): {len(self.errors)}")
        lines += [f"    {entry['source']}: {entry['problem']}" for entry in self.errors[:max_listed]]
        if len(self.errors) > max_listed:
            lines.append(f"    ... {len(self.errors) - max_listed} more in report.json")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Small file helpers.


def _shard_name(unit_id: str) -> str:
    """A file-system-safe shard name; ids that had to be changed get a short hash so two ids never collide."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", unit_id).strip("._") or "unit"
    if safe != unit_id or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha1(unit_id.encode('utf-8')).hexdigest()[:8]}"
    return safe


# ---------------------------------------------------------------------------------------------------------------
# One unit.


@dataclass
class _Settings:
    aus: list[int]
    partition: dict[str, int]
    partition_name: str
    align_size: int
    jpeg_quality: int
    border: str
    box_keys: tuple[str, ...]
    face_finder: FaceFinder
    shard_dir: Path
    fingerprint: str


class _SkipFrame(Exception):
    """A per-frame data problem: the frame is skipped and the message goes into the report."""


def _label_row(labels: Mapping, au_index: Mapping[int, int]) -> np.ndarray:
    row = np.full(len(au_index), UNKNOWN_LABEL, dtype=np.int8)
    for key, value in (labels or {}).items():
        try:
            au = parse_au(key)
        except ValueError as error:
            raise _SkipFrame(f"label key {key!r} is not an AU name") from error
        if au not in au_index:
            raise _SkipFrame(f"label for AU{au}, which is not one of this dataset's AUs {sorted(au_index)}")
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise _SkipFrame(f"label {value!r} for AU{au} is not a number") from error
        if math.isnan(number):
            continue
        if number in (0.0, 1.0):
            row[au_index[au]] = int(number)
        elif number < 0 or number == 9:
            continue
        else:
            raise _SkipFrame(f"label {value!r} for AU{au} is not 0, 1, 9 or negative (unknown)")
    return row


def _aligned_frame(record: FrameRecord, settings: _Settings) -> tuple[np.ndarray, np.ndarray, str, np.ndarray] | None:
    """Return (aligned RGB, aligned 5 points, how, source-to-aligned matrix) or None when no face was found.

    Raises _SkipFrame on bad data. A file with landmarks goes through :func:`align_image_file`, which decodes a
    large JPEG face at a reduced size (most of what a frame costs). Setup problems (dlib or its model files
    missing) are not frame problems and propagate.
    """
    import cv2

    five = None
    if record.landmarks is not None:
        try:
            five = to_five_points(record.landmarks, layout=record.landmark_layout)
        except (ValueError, TypeError) as error:
            raise _SkipFrame(str(error)) from error
    size, border = settings.align_size, settings.border
    if record.image is None and not record.image_path:
        raise _SkipFrame("the record has neither image nor image_path")
    if record.image is None and not os.path.isfile(record.image_path):
        raise _SkipFrame(f"image file {record.image_path} does not exist")
    try:
        if record.image is None and five is not None:
            aligned, matrix = align_image_file(record.image_path, five, size, border=border)
            return aligned, transform_points(five, matrix).astype(np.float32), "landmarks", matrix
        image = to_rgb_uint8(record.image if record.image is not None else read_image(record.image_path))
    except (ValueError, OSError, cv2.error) as error:
        raise _SkipFrame(f"cannot read or align the image: {error}") from error
    how = "landmarks"
    if five is None:
        face = settings.face_finder.largest(image)
        if face is None:
            return None
        five, how = face.landmarks5.astype(np.float64), "detected"
    try:
        aligned, matrix = align_face(image, five, size, border=border)
    except (ValueError, cv2.error) as error:
        raise _SkipFrame(f"alignment failed: {error}") from error
    return aligned, transform_points(five, matrix).astype(np.float32), how, matrix


def _extra_fields(extra: Mapping | None, matrix: np.ndarray, box_keys: tuple[str, ...]) -> dict:
    """Row fields from ``record.extra``; boxes under ``box_keys`` are mapped into aligned pixels."""
    fields = {}
    for key, value in (extra or {}).items():
        if key in box_keys and value is not None:
            try:
                value = transform_boxes(np.asarray(value, dtype=np.float64), matrix).astype(np.float32)
            except (ValueError, TypeError) as error:
                raise _SkipFrame(f"extra field {key!r} is not a list of [x0, y0, x1, y1] boxes ({error})") from error
        fields[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return fields


def _intensity_values(intensities: Mapping | None) -> dict[int, float]:
    values = {}
    for key, value in (intensities or {}).items():
        if value is None:
            continue
        try:
            values[parse_au(key)] = float(value)
        except (TypeError, ValueError) as error:
            raise _SkipFrame(f"intensity {key!r}: {value!r} is not an AU name and a number") from error
    return values


def _prepare_unit(
    unit_id: str, thunk: Callable[[], Iterable[FrameRecord]], settings: _Settings, fingerprint: str
) -> dict:
    """Align every frame of one unit and write its shard atomically; return the unit summary (``fingerprint``: of
    the settings and the unit's inputs, stored so a rerun can tell whether the shard is current)."""
    import cv2
    import pyarrow as pa

    started = time.time()
    au_index = {au: i for i, au in enumerate(settings.aus)}
    columns: dict[str, list] = {name: [] for name in ("image", "subject", "sequence", "frame", "source", "landmarks")}
    label_rows: list[np.ndarray] = []
    intensity_rows: list[dict[int, float] | None] = []
    extra_rows: list[dict] = []
    no_face: list[str] = []
    errors: list[list[str]] = []
    aligned_from = {"landmarks": 0, "detected": 0}
    checked_subjects: set[str] = set()
    encode_args = [int(cv2.IMWRITE_JPEG_QUALITY), settings.jpeg_quality]

    for record in thunk():
        subject = str(record.subject)
        if subject not in checked_subjects:
            if subject not in settings.partition:
                known = sorted(settings.partition)
                raise ValueError(
                    f"unit {unit_id!r}: subject {subject!r} is not in the partition {settings.partition_name!r} "
                    f"({len(known)} subjects: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}); "
                    "add it to the partition or leave it out of the source"
                )
            checked_subjects.add(subject)
        source = record.source or record.image_path or f"{subject}/{record.sequence}/{record.frame}"
        try:
            labels = _label_row(record.labels, au_index)
            result = _aligned_frame(record, settings)
            if result is None:
                no_face.append(source)
                continue
            aligned, points, how, matrix = result
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(aligned, cv2.COLOR_RGB2BGR), encode_args)
            if not ok:
                raise _SkipFrame("JPEG encoding failed")
            extra = _extra_fields(record.extra, matrix, settings.box_keys)
            intensities = _intensity_values(record.intensities)
        except _SkipFrame as problem:
            errors.append([source, str(problem)])
            continue
        clash = set(extra) & set(_CORE_COLUMNS + tuple(au_column(a) for a in settings.aus))
        if clash:
            raise ValueError(f"unit {unit_id!r}: extra keys {sorted(clash)} clash with dataset columns; rename them")
        columns["image"].append({"bytes": jpeg.tobytes(), "path": None})
        columns["subject"].append(subject)
        columns["sequence"].append(str(record.sequence))
        columns["frame"].append(int(record.frame))
        columns["source"].append(source)
        columns["landmarks"].append(points.tolist())
        label_rows.append(labels)
        intensity_rows.append(intensities or None)
        extra_rows.append(extra)
        aligned_from[how] += 1

    count = len(label_rows)
    labels = np.stack(label_rows) if count else np.zeros((0, len(settings.aus)), dtype=np.int8)
    table_columns: dict[str, Any] = {
        "image": pa.array(columns["image"], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "subject": pa.array(columns["subject"], type=pa.string()),
        "sequence": pa.array(columns["sequence"], type=pa.string()),
        "frame": pa.array(np.asarray(columns["frame"], dtype=np.int32)),
        "source": pa.array(columns["source"], type=pa.string()),
    }
    for i, au in enumerate(settings.aus):
        table_columns[au_column(au)] = pa.array(labels[:, i])
    points_type = pa.list_(pa.list_(pa.float32(), 2), 5)
    table_columns["landmarks"] = pa.array(columns["landmarks"], type=points_type)
    intensity_aus = sorted({au for row in intensity_rows if row for au in row})
    for au in intensity_aus:
        values = [row.get(au, math.nan) if row else math.nan for row in intensity_rows]
        table_columns[intensity_column(au)] = pa.array(np.asarray(values, dtype=np.float32))
    extra_keys = list(dict.fromkeys(key for row in extra_rows for key in row))
    for key in extra_keys:
        try:
            table_columns[key] = pa.array([row.get(key) for row in extra_rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"unit {unit_id!r}: extra field {key!r} has values of mixed types ({error})") from error

    summary = {
        "unit_id": unit_id,
        "frames": count,
        "subjects": dict(Counter(columns["subject"])),
        "au_positive": [int(n) for n in (labels == 1).sum(axis=0)],
        "au_known": [int(n) for n in (labels >= 0).sum(axis=0)],
        "no_face": no_face,
        "errors": errors,
        "aligned_from": aligned_from,
        "seconds": round(time.time() - started, 3),
        "fingerprint": fingerprint,
    }
    table = pa.table(table_columns)
    table = table.cast(_features_for(table.schema).arrow_schema)
    metadata = dict(table.schema.metadata or {})
    metadata[_UNIT_KEY] = json.dumps(summary).encode("utf-8")
    table = table.replace_schema_metadata(metadata)

    path = settings.shard_dir / f"{_shard_name(unit_id)}.arrow"
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1000)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return summary


def _features_for(schema: Any) -> Any:
    """datasets Features for a shard schema: the image column as ``datasets.Image``, the rest inferred."""
    from datasets import Features, Image

    features = Features.from_arrow_schema(schema.remove_metadata())
    features["image"] = Image()
    return features


def _read_unit_summary(path: Path) -> dict | None:
    """The summary stored in a finished shard, or None when the file is unreadable (then the unit is redone)."""
    import pyarrow as pa

    try:
        with pa.OSFile(str(path), "rb") as source:
            schema = pa.ipc.open_stream(source).schema
        return json.loads(schema.metadata[_UNIT_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowInvalid, TypeError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Multiprocessing over units (fork: thunks are closures and need not pickle).

_FORK_STATE: dict[str, Any] = {}


def _run_forked_unit(index: int) -> dict:
    unit_id, thunk, fingerprint = _FORK_STATE["units"][index]
    return _prepare_unit(unit_id, thunk, _FORK_STATE["settings"], fingerprint)


# ---------------------------------------------------------------------------------------------------------------
# The whole dataset.


def _settings_fingerprint(aus: Sequence[int], align_size: int, jpeg_quality: int, border: str, box_keys) -> str:
    payload = {
        "schema": SCHEMA_VERSION,
        "aus": list(aus),
        "align_size": align_size,
        "jpeg_quality": jpeg_quality,
        "border": border,
        "box_keys": list(box_keys),
        "template": CANONICAL_TEMPLATE_5PT.tolist(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def input_signature(data: Any = None, files: Iterable[str | os.PathLike] = ()) -> str:
    """A short hash of what one unit reads, for the third item of a unit (see the module docstring).

    ``data``: JSON-able values the unit's records come from (its label rows, a frame offset; numpy arrays become
    lists). ``files``: files it opens, each by path, size and modification time (a missing file counts as missing),
    so an edited label file or a replaced image changes the signature without its bytes being read.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(f"input_signature: {type(value).__name__} is not JSON-able; pass plain values")

    digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=plain).encode("utf-8"))
    for file in files:
        try:
            stat = os.stat(file)
            entry = f"{os.fspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        except OSError:
            entry = f"{os.fspath(file)}\0missing\n"
        digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _unit_fingerprint(settings_fingerprint: str, inputs: str | Callable[[], str] | None) -> str:
    """The settings' fingerprint alone for a unit without ``inputs``, else a hash of both."""
    if inputs is None:
        return settings_fingerprint
    signature = inputs() if callable(inputs) else inputs
    return hashlib.sha1(f"{settings_fingerprint}\0{signature}".encode()).hexdigest()[:16]


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(message, flush=True)


Unit = tuple[str, Callable[[], Iterable[FrameRecord]]] | tuple[str, Callable[[], Iterable[FrameRecord]], Any]


def prepare_dataset(
    units: Iterable[Unit],
    out_dir: str | os.PathLike,
    *,
    aus: Sequence[int],
    source: str,
    partition: Mapping,
    partition_name: str,
    face_finder: FaceFinder | None = None,
    align_size: int = TEMPLATE_SIZE,
    extra_metadata: Mapping | None = None,
    progress: bool = True,
    num_workers: int = 0,
    jpeg_quality: int = 95,
    border: str = "constant",
    box_keys: Sequence[str] = (),
) -> PreparationReport:
    """Align, label and save a dataset; resumable unit by unit.

    Args:
        units: ``(unit_id, thunk)`` pairs or ``(unit_id, thunk, inputs)`` triples; ``thunk()`` yields
            :class:`FrameRecord`; ``inputs`` is a string or a callable returning one (see :func:`input_signature`)
            that changes whenever what the unit reads changes. Unit ids must be unique. A unit whose shard already
            exists with the same settings and inputs is not run again.
        out_dir: output folder (see the module docstring for its layout).
        aus: the dataset's AU numbers, in column order.
        source: dataset name (``"BP4D"``, ``"folder:/data/x"``).
        partition: subject -> part, or part -> subjects; every subject must be in it.
        partition_name: where the partition comes from (``"ME-GraphAU/JAA-Net BP4D parts"``).
        face_finder: detector for records without landmarks (default: ``FaceFinder()``, created on first need).
        align_size: aligned image width and height.
        extra_metadata: more JSON-able top-level keys for metadata.json (may not replace the standard ones).
        progress: print a line per unit and the final table.
        num_workers: processes over units (0/1: in this process). Needs the ``fork`` start method.
        jpeg_quality: JPEG quality of the stored aligned images.
        border: ``"constant"`` (black) or ``"replicate"`` outside the source image.
        box_keys: ``extra`` keys holding ``[x0, y0, x1, y1]`` boxes in source-image pixels, mapped to aligned pixels
            (the enclosing box of the mapped corners). Other extra keys are stored as given.

    Returns:
        The :class:`PreparationReport` (also saved as ``report.json``).
    """
    started = time.time()
    aus = [parse_au(au) for au in aus]
    if len(set(aus)) != len(aus) or not aus:
        raise ValueError(f"aus must be a non-empty list without repeats, got {aus}")
    if border not in ("constant", "replicate"):
        raise ValueError(f"border must be 'constant' or 'replicate', got {border!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be within 1..100, got {jpeg_quality}")
    subject_parts = normalize_partition(partition)
    reserved = {"aus", "au_columns", "source", "partition", "partition_name", "alignment", "image_size"}
    reserved |= {"unknown_label", "counts", "columns", "schema_version"}
    clash = reserved & set(extra_metadata or {})
    if clash:
        raise ValueError(f"extra_metadata may not set the standard keys {sorted(clash)}; use other names")
    out = Path(out_dir)
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob("*.tmp-*"):
        stale.unlink(missing_ok=True)  # half-written shards of an interrupted run
    settings = _Settings(
        aus=aus,
        partition=subject_parts,
        partition_name=partition_name,
        align_size=int(align_size),
        jpeg_quality=int(jpeg_quality),
        border=border,
        box_keys=tuple(box_keys),
        face_finder=face_finder if face_finder is not None else FaceFinder(),  # models load on first use
        shard_dir=shard_dir,
        fingerprint=_settings_fingerprint(aus, int(align_size), int(jpeg_quality), border, tuple(box_keys)),
    )

    summaries: dict[str, dict] = {}
    order: list[str] = []
    pending: list[tuple[str, Callable, str]] = []
    reused = 0

    def scheduled() -> Iterator[tuple[str, Callable, str]]:
        nonlocal reused
        names: dict[str, str] = {}
        for unit in units:
            if len(unit) not in (2, 3):
                raise ValueError(f"a unit must be (unit_id, thunk) or (unit_id, thunk, inputs), got {len(unit)} items")
            unit_id, thunk, inputs = str(unit[0]), unit[1], unit[2] if len(unit) == 3 else None
            name = _shard_name(unit_id)
            if name in names:
                raise ValueError(
                    f"unit id {unit_id!r} is used twice (or collides with {names[name]!r}); make ids unique"
                )
            names[name] = unit_id
            order.append(unit_id)
            fingerprint = _unit_fingerprint(settings.fingerprint, inputs)
            summary = None
            shard = shard_dir / f"{name}.arrow"
            if shard.exists():
                summary = _read_unit_summary(shard)
                if summary is None or summary.get("fingerprint") != fingerprint:
                    _log(
                        f"  {unit_id}: inputs or settings changed, or the shard is unreadable; preparing again",
                        progress,
                    )
                    summary = None
            if summary is not None:
                summaries[unit_id] = summary
                reused += 1
                continue
            yield unit_id, thunk, fingerprint

    def report_unit(done: int, summary: dict) -> None:
        summaries[summary["unit_id"]] = summary
        _log(
            f"  [{done}] {summary['unit_id']}: {summary['frames']} frames, {len(summary['no_face'])} without a face, "
            f"{len(summary['errors'])} errors ({summary['seconds']:.1f} s)",
            progress,
        )

    _log(f"Preparing {source} into {out} ...", progress)
    use_fork = num_workers > 1 and "fork" in multiprocessing.get_all_start_methods()
    if num_workers > 1 and not use_fork:
        _log("  the 'fork' start method is not available here; preparing units in this process", progress)
    if use_fork:
        import cv2

        pending = list(scheduled())
        _FORK_STATE.update(units=pending, settings=settings)
        # OpenCV's thread pool does not survive fork (a child that touches it can hang), so the parent drops it
        # before forking; each child then runs OpenCV single-threaded, which is what one process per core wants.
        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            context = multiprocessing.get_context("fork")
            with context.Pool(min(num_workers, max(1, len(pending)))) as pool:
                for done, summary in enumerate(pool.imap_unordered(_run_forked_unit, range(len(pending))), 1):
                    report_unit(done, summary)
        finally:
            _FORK_STATE.clear()
            cv2.setNumThreads(cv2_threads)
    else:
        for done, (unit_id, thunk, fingerprint) in enumerate(scheduled(), 1):
            report_unit(done, _prepare_unit(unit_id, thunk, settings, fingerprint))
    if reused:
        _log(f"  reused {reused} finished units from an earlier run", progress)

    ordered = [summaries[unit_id] for unit_id in order]
    report = _build_report(ordered, out, source, aus, subject_parts, len(order) - reused, reused)
    metadata = _build_metadata(ordered, report, source, aus, subject_parts, partition_name, settings, extra_metadata)
    _assemble(order, shard_dir, out / DATASET_DIR, metadata, subject_parts, progress)
    report.seconds = round(time.time() - started, 2)
    write_json_atomic(out / METADATA_FILE, metadata)
    report.save(out / REPORT_FILE)
    if progress:
        print(report.format_table(), flush=True)
    return report


def _build_report(summaries, out: Path, source: str, aus, parts, prepared: int, reused: int) -> PreparationReport:
    report = PreparationReport(out_dir=str(out), dataset_path=str(out / DATASET_DIR), source=source, aus=list(aus))
    positive = np.zeros(len(aus), dtype=np.int64)
    known = np.zeros(len(aus), dtype=np.int64)
    aligned_from = {"landmarks": 0, "detected": 0}
    for summary in summaries:
        report.num_frames += summary["frames"]
        for subject, count in summary["subjects"].items():
            report.frames_per_subject[subject] = report.frames_per_subject.get(subject, 0) + count
        positive += summary["au_positive"]
        known += summary["au_known"]
        report.no_face += [{"unit": summary["unit_id"], "source": src} for src in summary["no_face"]]
        report.errors += [{"unit": summary["unit_id"], "source": s, "problem": p} for s, p in summary["errors"]]
        for key, value in summary["aligned_from"].items():
            aligned_from[key] = aligned_from.get(key, 0) + value
    report.parts = {subject: parts[subject] for subject in report.frames_per_subject if subject in parts}
    report.au_positive = {au_column(au): int(n) for au, n in zip(aus, positive)}
    report.au_known = {au_column(au): int(n) for au, n in zip(aus, known)}
    report.aligned_from = aligned_from
    report.units_total, report.units_prepared, report.units_reused = len(summaries), prepared, reused
    return report


def _build_metadata(summaries, report, source, aus, parts, partition_name, settings, extra_metadata) -> dict:
    landmarks, detected = report.aligned_from.get("landmarks", 0), report.aligned_from.get("detected", 0)
    method = "landmarks+dlib" if landmarks and detected else ("dlib" if detected else "landmarks")
    alignment = {
        "method": method,
        "transform": "5-point least-squares similarity (Umeyama) onto a canonical template",
        "template_5pt": (CANONICAL_TEMPLATE_5PT * (settings.align_size / TEMPLATE_SIZE)).round(3).tolist(),
        "template_order": ["left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth"],
        "image_size": settings.align_size,
        "border": settings.border,
        "jpeg_quality": settings.jpeg_quality,
        "frames_from_landmarks": landmarks,
        "frames_from_detection": detected,
        "detector": settings.face_finder.describe() if detected else None,
    }
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "aus": list(aus),
        "au_columns": [au_column(au) for au in aus],
        "unknown_label": UNKNOWN_LABEL,
        "partition_name": partition_name,
        "partition": dict(sorted(parts.items())),
        "image_size": settings.align_size,
        "alignment": alignment,
        "box_keys": list(settings.box_keys),
        "counts": {
            "frames": report.num_frames,
            "subjects": len(report.frames_per_subject),
            "units": len(summaries),
            "no_face": len(report.no_face),
            "errors": len(report.errors),
            "frames_per_subject": dict(sorted(report.frames_per_subject.items())),
        },
    }
    metadata.update(dict(extra_metadata or {}))
    return metadata


def _assemble(
    order: list[str], shard_dir: Path, target: Path, metadata: dict, parts: dict[str, int], progress: bool
) -> None:
    """Concatenate the shards of ``order`` (memory-mapped), add ``part``, and save atomically to ``target``."""
    import datasets
    import pyarrow as pa
    from datasets import Dataset, Features, Value
    from datasets.table import MemoryMappedTable, concat_tables

    if not order:
        raise ValueError("no units were given, so there is nothing to save; check the source")
    tables = [MemoryMappedTable.from_file(str(shard_dir / f"{_shard_name(unit_id)}.arrow")) for unit_id in order]
    merged: dict[str, Any] = {}
    for table in tables:
        for name, feature in _features_for(table.schema).items():
            if name not in merged or _is_null_feature(merged[name]):
                merged[name] = feature
    au_columns = metadata["au_columns"]
    core = ["image", "subject", "sequence", "frame", "source"]
    intensities = sorted((n for n in merged if _is_intensity(n)), key=lambda n: parse_au(n[: -len("_intensity")]))
    extras = [n for n in merged if n not in core + au_columns + ["landmarks"] + intensities]
    columns = core + ["part"] + au_columns + ["landmarks"] + intensities + extras
    features = Features({name: Value("int8") if name == "part" else merged[name] for name in columns})
    schema = features.arrow_schema
    ready = []
    for table in tables:
        subjects = table.column("subject").to_pylist()
        missing = sorted(set(subjects) - set(parts))
        if missing:
            raise ValueError(f"subjects {missing} of an earlier run are not in the partition; fix the partition")
        table = table.append_column("part", pa.array(np.asarray([parts[s] for s in subjects], dtype=np.int8)))
        for name in columns:
            if name not in table.column_names:
                if name in intensities:
                    table = table.append_column(name, pa.array(np.full(len(subjects), np.nan, dtype=np.float32)))
                else:
                    table = table.append_column(name, pa.nulls(len(subjects), type=schema.field(name).type))
        table = table.select(columns)
        if not table.schema.equals(schema, check_metadata=False):
            table = table.cast(schema)
        ready.append(table)
    info = datasets.DatasetInfo(description=json.dumps(metadata), features=features)
    dataset = Dataset(concat_tables(ready), info=info)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    bars_were_disabled = datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(tmp))
    finally:
        if not progress and not bars_were_disabled:
            datasets.enable_progress_bars()
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def _is_intensity(name: str) -> bool:
    if not name.endswith("_intensity"):
        return False
    try:
        parse_au(name[: -len("_intensity")])
    except ValueError:
        return False
    return True


def _is_null_feature(feature: Any) -> bool:
    return getattr(feature, "dtype", None) == "null"


def load_prepared(path: str | os.PathLike) -> Any:
    """Load a prepared dataset (``datasets.Dataset``) from its output folder or its ``dataset`` subfolder."""
    import datasets

    folder = Path(path)
    if (folder / DATASET_DIR).is_dir():
        folder = folder / DATASET_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: no prepared dataset here; run `sevnet-hf prepare ...` first")
    return datasets.load_from_disk(str(folder))


def read_metadata(path: str | os.PathLike | Any) -> dict:
    """The metadata of a prepared dataset: from ``metadata.json`` next to it, or from ``dataset.info.description``.

    ``path`` may be the output folder, its ``dataset`` subfolder, or a loaded ``datasets.Dataset``.
    """
    info = getattr(path, "info", None)
    if info is not None:
        return _metadata_from_description(info.description, "the dataset's info.description")
    folder = Path(path)
    for candidate in (folder / METADATA_FILE, folder.parent / METADATA_FILE):
        if folder.is_dir() and candidate.is_file() and (candidate.parent == folder or folder.name == DATASET_DIR):
            return json.loads(candidate.read_text(encoding="utf-8"))
    info_file = (folder / DATASET_DIR if (folder / DATASET_DIR).is_dir() else folder) / "dataset_info.json"
    if info_file.is_file():
        description = json.loads(info_file.read_text(encoding="utf-8")).get("description", "")
        return _metadata_from_description(description, str(info_file))
    raise FileNotFoundError(f"{path}: no {METADATA_FILE} and no dataset_info.json; is this a prepared dataset?")


def _metadata_from_description(description: str, where: str) -> dict:
    try:
        metadata = json.loads(description or "")
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not the JSON metadata of a prepared dataset ({error})") from error
    if not isinstance(metadata, dict) or "aus" not in metadata:
        raise ValueError(f"{where} holds no 'aus' key; it was not written by prepare_dataset")
    return metadata
