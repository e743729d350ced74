"""Synthetic AU-coded faces (``sevnet-hf prepare synthetic``): the embedded default data set for the demo and tests.

Each identity ("S001", ...) is a drawn person (face shape, skin tone, features, hair, glasses, beard...) recorded in
the eight tasks of BP4D ("T1".."T8"): a sequence of frames in time order, one frame every :data:`FRAME_STEP_S`
seconds. Labels come from a latent expression model: every task has its own mix of expression episodes (joy in the
interview, pain in the cold-pressor task, disgust at the smell...), each episode rises, holds and falls, and each
expression moves a fixed set of AUs. Summing the episodes, a per-person resting tone and slow noise gives a drive per
AU; a monotone map calibrated once on a large fixed draw turns the drive into an intensity 0-5 such that the share of
frames with intensity >= 2 (the occurrence threshold) matches :data:`TARGET_BASE_RATES`. Co-occurrence (AU6 with
AU12, AU1 with AU2, rarely AU12 with AU15) follows from which AUs an expression moves.

Frames are drawn by :mod:`.synthetic_render` at a raw size (320 x 320 by default) with head pose, lighting,
background, blur, noise and JPEG varying, and are handed to :func:`sevnet_hf.data.schema.prepare_dataset` with five
landmarks in raw pixels, exactly like a real benchmark. Every row also records ``au_regions``: for each AU (in the
dataset's AU order) the ``[x0, y0, x1, y1]`` box of the aligned image that the AU changes, so attention maps can be
scored against it. Subjects are split into parts 1/2/3 round-robin, so the protocol folds work unchanged.

Everything is a function of ``--seed``: each identity, and each task of it, draws from its own random streams. Identity
*i* is therefore the same person in every preset, and with the same frames per task a set with more identities starts
with exactly the frames of a smaller one.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..protocols import BP4D_BASE_RATES, DISFA_OCCURRENCE_THRESHOLD, au_label
from .synthetic_render import (
    SYNTHETIC_AUS,
    RenderedFrame,
    render_frame,
    sample_frame_nuisances,
    sample_identity,
    sample_scene,
    warm_render_caches,
)

# Base rates for the AUs BP4D does not code, in line with spontaneous sets where they are coded (DISFA/BP4D+):
# nose wrinkles are rare, parted lips common (talking, smiling), jaw drops occasional.
EXTRA_BASE_RATES: dict[int, float] = {9: 0.06, 25: 0.35, 26: 0.15}
TARGET_BASE_RATES: dict[int, float] = {**BP4D_BASE_RATES, **EXTRA_BASE_RATES}
OCCURRENCE_THRESHOLD = float(DISFA_OCCURRENCE_THRESHOLD)
TASKS: tuple[str, ...] = ("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8")
FRAME_STEP_S = 0.4  # seconds between kept frames (every 10th frame of a 25 fps video)
VIDEO_FPS = 25
GENERATOR_VERSION = 1

# Expressions and the AUs they move (relative strength at the apex). Prototypes after the FACS/EMFACS literature.
EXPRESSIONS: dict[str, dict[int, float]] = {
    "joy": {6: 0.9, 12: 1.0, 7: 0.35, 10: 0.5, 25: 0.55, 26: 0.25, 14: 0.15},
    "polite": {12: 0.7, 14: 0.9, 24: 0.35, 17: 0.3, 7: 0.2, 10: 0.2},
    "surprise": {1: 1.0, 2: 1.0, 25: 0.7, 26: 0.6},
    "sadness": {1: 0.8, 4: 0.6, 15: 1.0, 17: 0.8, 7: 0.2, 24: 0.2},
    "fear": {1: 0.9, 2: 0.65, 4: 0.6, 25: 0.6, 26: 0.25, 7: 0.3, 10: 0.2},
    "pain": {4: 0.8, 6: 0.75, 7: 1.0, 9: 0.45, 10: 0.85, 25: 0.4, 26: 0.15, 23: 0.2},
    "disgust": {9: 1.0, 10: 1.0, 4: 0.4, 15: 0.45, 17: 0.5, 7: 0.3, 25: 0.3},
    "anger": {4: 1.0, 7: 0.8, 23: 1.0, 24: 0.8, 17: 0.5, 10: 0.3},
    "thinking": {4: 0.45, 7: 0.6, 14: 0.5, 24: 0.55, 17: 0.45, 23: 0.35},
    "speech": {25: 0.9, 26: 0.45, 10: 0.25, 17: 0.2, 14: 0.1},
}
_EXPRESSION_NAMES = tuple(EXPRESSIONS)
# Episodes per second of each expression in each task, after BP4D's tasks: T1 interview and joke, T2 sad film,
# T3 startle, T4 improvised singing (embarrassment), T5 threat, T6 cold pressor (pain), T7 insult, T8 smell.
TASK_EPISODE_RATES: dict[str, dict[str, float]] = {
    "T1": {"joy": 0.16, "polite": 0.08, "speech": 0.1, "surprise": 0.01},
    "T2": {"sadness": 0.1, "thinking": 0.04, "polite": 0.05, "joy": 0.04},
    "T3": {"surprise": 0.12, "fear": 0.05, "joy": 0.1, "polite": 0.04, "speech": 0.02},
    "T4": {"polite": 0.12, "joy": 0.12, "speech": 0.08, "thinking": 0.02},
    "T5": {"fear": 0.1, "thinking": 0.05, "polite": 0.06, "joy": 0.04, "surprise": 0.02},
    "T6": {"pain": 0.12, "thinking": 0.04, "polite": 0.06, "joy": 0.05},
    "T7": {"anger": 0.1, "thinking": 0.05, "polite": 0.05, "speech": 0.05, "disgust": 0.02, "joy": 0.03},
    "T8": {"disgust": 0.12, "joy": 0.08, "polite": 0.05, "surprise": 0.02},
}
_BACKGROUND_RATE = 0.005
# Expressions that cannot be shown together: while one is on, the others are suppressed (a smile does not survive
# sadness, disgust or anger), which is what keeps AU12 and AU15 apart.
_SUPPRESSES: dict[str, tuple[str, ...]] = {
    "sadness": ("joy", "polite"),
    "disgust": ("joy", "polite"),
    "anger": ("joy", "polite", "speech"),
    "pain": ("polite",),
}
# Resting tone: patterns some people hold slightly all the time (share of people, AUs it moves).
RESTING_PATTERNS: dict[str, tuple[float, dict[int, float]]] = {
    "resting smile": (0.45, {12: 1.0, 6: 0.7, 14: 0.4, 10: 0.3}),
    "tense": (0.3, {7: 1.0, 4: 0.35, 17: 0.4, 24: 0.3, 23: 0.3}),
    "raised upper lip": (0.35, {10: 1.0, 25: 0.5, 7: 0.3}),
    "dimpler": (0.3, {14: 1.0, 17: 0.4, 24: 0.3}),
    "parted lips": (0.25, {25: 1.0, 26: 0.35}),
    "raised brows": (0.15, {1: 0.4, 2: 0.4}),
    "frown": (0.15, {4: 0.6, 7: 0.3}),
}
_STREAM_IDENTITY, _STREAM_TRAITS, _STREAM_EPISODES, _STREAM_SCENE, _STREAM_NUISANCE, _STREAM_UNKNOWN = range(1, 7)
_CALIBRATION_SEED = 918_273


@dataclass(frozen=True)
class Preset:
    """A size of the synthetic set."""

    identities: int
    frames_per_task: int
    description: str


PRESETS: dict[str, Preset] = {
    "quick": Preset(12, 4, "tests and CI: 12 identities x 8 tasks x 4 frames = 384 images, a few seconds"),
    "demo": Preset(48, 12, "the demo: 48 identities x 8 tasks x 12 frames = 4,608 images, about a minute"),
    "full": Preset(120, 24, "a larger benchmark: 120 identities x 8 tasks x 24 frames = 23,040 images"),
}


def subject_name(index: int) -> str:
    """Subject id of identity ``index`` (0-based): ``S001``, ``S002``..."""
    return f"S{index + 1:03d}"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *keys]))


# ---------------------------------------------------------------------------------------------------------------
# Labels


@dataclass
class SequenceLabels:
    """The frames of one task of one subject: times (s), frame numbers, intensities (n, n_aus) and labels."""

    times: np.ndarray
    frames: np.ndarray
    intensities: np.ndarray
    labels: np.ndarray


def _au_table(rows: Sequence[dict[int, float]]) -> np.ndarray:
    table = np.zeros((len(rows), len(SYNTHETIC_AUS)))
    for r, weights in enumerate(rows):
        for au, weight in weights.items():
            table[r, SYNTHETIC_AUS.index(au)] = weight
    return table


_LOADINGS = _au_table([EXPRESSIONS[name] for name in _EXPRESSION_NAMES])
_RESTING = _au_table([weights for _, weights in RESTING_PATTERNS.values()])
_RESTING_SHARE = np.array([share for share, _ in RESTING_PATTERNS.values()])
_EXPR = {name: c for c, name in enumerate(_EXPRESSION_NAMES)}
_AU = {au: i for i, au in enumerate(SYNTHETIC_AUS)}


def _subject_traits(seed: int, subject: int) -> dict[str, np.ndarray]:
    rng = _rng(seed, subject, _STREAM_TRAITS)
    held = rng.beta(3.0 * _RESTING_SHARE, 3.0 * (1.0 - _RESTING_SHARE)) * 1.3
    return {
        "rate": np.exp(rng.normal(0.0, 0.3, len(_EXPRESSION_NAMES))),  # how often this person shows each expression
        "amplitude": rng.uniform(0.7, 1.15, len(_EXPRESSION_NAMES)),
        "tonic": held @ _RESTING,
    }


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _slow_noise(rng: np.random.Generator, times: np.ndarray, count: int, amplitude: float) -> np.ndarray:
    """(len(times), count) smooth noise: three random sinusoids of 2-20 s periods per column."""
    freq = rng.uniform(0.05, 0.5, (3, count))
    phase = rng.uniform(0, 2 * math.pi, (3, count))
    weight = rng.normal(0, amplitude / math.sqrt(3), (3, count))
    waves = np.sin(2 * math.pi * freq[None] * times[:, None, None] + phase[None])
    return (waves * weight[None]).sum(axis=1)


def _task_rates(task: int) -> np.ndarray:
    rates = TASK_EPISODE_RATES[TASKS[task]]
    return np.array([rates.get(name, _BACKGROUND_RATE) for name in _EXPRESSION_NAMES])


def _sequence_drive(seed: int, subject: int, task: int, times: np.ndarray, traits: dict) -> np.ndarray:
    """(len(times), n_aus) non-negative AU drive of one task: expression episodes + resting tone + slow noise."""
    rng = _rng(seed, subject, task, _STREAM_EPISODES)
    lead = 15.0  # episodes may start before the first frame
    span = float(times[-1] - times[0]) + lead
    counts = rng.poisson(_task_rates(task) * traits["rate"] * span)
    which = np.repeat(np.arange(len(counts)), counts)
    total = len(which)
    start = times[0] - lead + rng.uniform(0, span, total)
    onset, apex, offset = rng.uniform(0.8, 2.2, total), rng.uniform(1.5, 6.0, total), rng.uniform(0.8, 3.0, total)
    level = rng.uniform(0.35, 1.0, total) * traits["amplitude"][which]
    since = times[:, None] - start[None, :]
    envelope = level * _smoothstep(since / onset) * (1.0 - _smoothstep((since - onset - apex) / offset))
    activity = np.zeros((len(times), len(counts)))
    for c in np.flatnonzero(counts):
        activity[:, c] = envelope[:, which == c].max(axis=1)
    damped = activity.copy()
    for name, victims in _SUPPRESSES.items():
        hold = np.clip(1.25 * activity[:, _EXPR[name]], 0.0, 1.0)
        for victim in victims:
            damped[:, _EXPR[victim]] *= 1.0 - hold
    drive = (damped @ _LOADINGS) * (1.0 + _slow_noise(rng, times, len(SYNTHETIC_AUS), 0.15))
    # the resting tone gives way to antagonists: no resting smile in sadness, no resting frown in joy
    tone = traits["tonic"] * (1.0 + _slow_noise(rng, times, len(SYNTHETIC_AUS), 0.3))
    smile = np.clip(1.25 * (damped[:, _EXPR["joy"]] + damped[:, _EXPR["polite"]]), 0, 1)
    sad = np.clip(
        1.25 * (activity[:, _EXPR["sadness"]] + activity[:, _EXPR["disgust"]] + activity[:, _EXPR["anger"]]), 0, 1
    )
    for au in (12, 6, 14):
        tone[:, _AU[au]] *= 1.0 - sad
    for au in (15, 4):
        tone[:, _AU[au]] *= 1.0 - smile
    return np.maximum(drive + tone, 0.0)


def _frame_times(n_frames: int) -> np.ndarray:
    return np.arange(n_frames, dtype=np.float64) * FRAME_STEP_S


def compute_calibration(
    num_subjects: int = 2000, frames_per_task: int = 6, seed: int = _CALIBRATION_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Per-AU drive levels that map to intensity 2 (the occurrence threshold) and 5, measured on a label draw.

    The level for 2 is the drive quantile that leaves ``TARGET_BASE_RATES[au]`` of the frames above it; the level for
    5 leaves a tenth of that. The shipped table (:func:`calibration`) is this function's output at its defaults.
    """
    drives = []
    times = _frame_times(frames_per_task)
    for subject in range(num_subjects):
        traits = _subject_traits(seed, subject)
        for task in range(len(TASKS)):
            drives.append(_sequence_drive(seed, subject, task, times, traits))
    drive = np.concatenate(drives)
    rates = np.array([TARGET_BASE_RATES[au] for au in SYNTHETIC_AUS])
    at_two = np.array([np.quantile(drive[:, i], 1.0 - rates[i]) for i in range(len(rates))])
    at_five = np.array([np.quantile(drive[:, i], 1.0 - 0.1 * rates[i]) for i in range(len(rates))])
    if np.any(at_two <= 1e-6):
        bad = [au_label(au) for au, q in zip(SYNTHETIC_AUS, at_two) if q <= 1e-6]
        raise RuntimeError(f"the expression model cannot reach the target base rates of {bad}; raise their drive")
    return at_two, np.maximum(at_five, at_two * 1.2)


# compute_calibration() at its defaults (2,000 identities x 8 tasks x 6 frames), in SYNTHETIC_AUS order. Regenerate
# it whenever the expression model above changes; test_synthetic checks base rates on an independent draw.
_CALIBRATION_TABLE: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.47204, 0.39322, 0.68409, 0.51338, 0.76888, 0.55325, 0.76372, 0.58878, 0.66939, 0.14913, 0.59166, 0.33906,
     0.63335, 0.99136, 0.48599),
    (1.16926, 1.07094, 1.34186, 1.31901, 1.66976, 0.99108, 1.69793, 1.73311, 1.64669, 0.80245, 1.11515, 0.9678,
     1.08105, 1.87537, 0.87301),
)  # fmt: skip


def calibration() -> tuple[np.ndarray, np.ndarray]:
    """The shipped drive levels for intensity 2 and 5 per AU (see :func:`compute_calibration`)."""
    return np.array(_CALIBRATION_TABLE[0]), np.array(_CALIBRATION_TABLE[1])


def drive_to_intensity(drive: np.ndarray) -> np.ndarray:
    """Map AU drive to intensity 0-5: linear from 0 to the calibrated level for 2, then on to 5, then flat."""
    at_two, at_five = calibration()
    low = 2.0 * drive / at_two
    high = 2.0 + 3.0 * (drive - at_two) / (at_five - at_two)
    return np.clip(np.where(drive <= at_two, low, high), 0.0, 5.0)


def sample_sequence_labels(
    seed: int, subject: int, task: int, n_frames: int, unknown_rate: float = 0.0, traits: dict | None = None
) -> SequenceLabels:
    """Labels of task ``task`` (0-based, of :data:`TASKS`) of identity ``subject`` (0-based), without rendering.

    ``labels`` is int8: 1 when intensity >= 2, else 0, and -1 ("not coded") for a random ``unknown_rate`` share.
    ``traits`` may pass the subject's traits when drawing many tasks of one subject.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    times = _frame_times(n_frames)
    traits = _subject_traits(seed, subject) if traits is None else traits
    drive = _sequence_drive(seed, subject, task, times, traits)
    intensities = drive_to_intensity(drive).astype(np.float32)
    labels = (intensities >= OCCURRENCE_THRESHOLD).astype(np.int8)
    if unknown_rate > 0:
        labels[_rng(seed, subject, task, _STREAM_UNKNOWN).uniform(size=labels.shape) < unknown_rate] = -1
    start = int(_rng(seed, subject, task, _STREAM_EPISODES + 100).integers(1, 400))
    frames = start + np.round(times * VIDEO_FPS).astype(np.int64)
    return SequenceLabels(times=times, frames=frames, intensities=intensities, labels=labels)


def sample_label_table(num_identities: int, frames_per_task: int, seed: int = 0, unknown_rate: float = 0.0) -> dict:
    """Labels of a whole set without rendering: ``subject``, ``task``, ``time`` (n,), ``intensities``, ``labels``."""
    parts: dict[str, list] = {"subject": [], "task": [], "time": [], "intensities": [], "labels": []}
    for subject in range(num_identities):
        traits = _subject_traits(seed, subject)
        for task in range(len(TASKS)):
            seq = sample_sequence_labels(seed, subject, task, frames_per_task, unknown_rate, traits)
            parts["subject"].append(np.full(len(seq.times), subject))
            parts["task"].append(np.full(len(seq.times), task))
            parts["time"].append(seq.times)
            parts["intensities"].append(seq.intensities)
            parts["labels"].append(seq.labels)
    return {key: np.concatenate(value) for key, value in parts.items()}


# ---------------------------------------------------------------------------------------------------------------
# Frames


def aligned_regions(frame: RenderedFrame, align_size: int = 256) -> list[list[float]]:
    """Each AU's region as ``[x0, y0, x1, y1]`` in the aligned face, clipped to the image.

    The region points (canonical boxes carried through the head pose into raw pixels) go through the same similarity
    that ``prepare_dataset`` aligns the frame with, computed from the emitted landmarks.
    """
    from ..data.align import alignment_matrix, transform_points

    matrix = alignment_matrix(frame.landmarks, align_size)
    points = transform_points(frame.region_points.reshape(-1, 2), matrix).reshape(frame.region_points.shape)
    boxes = np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)
    return np.round(np.clip(boxes, 0, align_size), 1).tolist()


def subject_records(
    subject: int,
    frames_per_task: int,
    seed: int = 0,
    raw_size: int = 320,
    align_size: int = 256,
    unknown_rate: float = 0.0,
) -> Iterator[Any]:
    """Render identity ``subject`` (0-based) in all tasks: :class:`~sevnet_hf.data.schema.FrameRecord` in time order."""
    from ..data.schema import FrameRecord

    name = subject_name(subject)
    identity = sample_identity(_rng(seed, subject, _STREAM_IDENTITY))
    traits = _subject_traits(seed, subject)
    for task, task_name in enumerate(TASKS):
        seq = sample_sequence_labels(seed, subject, task, frames_per_task, unknown_rate, traits)
        scene = sample_scene(_rng(seed, subject, task, _STREAM_SCENE), identity, raw_size)
        nuisances = sample_frame_nuisances(_rng(seed, subject, task, _STREAM_NUISANCE), scene, seq.times)
        for j, nuisance in enumerate(nuisances):
            frame = render_frame(identity, scene, nuisance, seq.intensities[j])
            labels = {au: int(seq.labels[j, k]) for k, au in enumerate(SYNTHETIC_AUS)}
            yield FrameRecord(
                subject=name,
                sequence=task_name,
                frame=int(seq.frames[j]),
                labels=labels,
                image=frame.image,
                landmarks=frame.landmarks,
                source=f"synthetic/{name}/{task_name}/{int(seq.frames[j]):05d}",
                intensities={
                    au: float(seq.intensities[j, k]) for k, au in enumerate(SYNTHETIC_AUS) if labels[au] >= 0
                },
                extra={"au_regions": aligned_regions(frame, align_size)},
            )


def synthetic_units(
    num_identities: int,
    frames_per_task: int,
    seed: int = 0,
    raw_size: int = 320,
    align_size: int = 256,
    unknown_rate: float = 0.0,
) -> list[tuple[str, Any]]:
    """``(unit_id, thunk, inputs)`` for :func:`sevnet_hf.data.schema.prepare_dataset`, one unit per identity; the
    inputs (generator version, seed, frames, sizes, unknown rate) make a rerun with other options redo the units."""
    from ..data.schema import input_signature

    inputs = input_signature(data=[GENERATOR_VERSION, frames_per_task, seed, raw_size, align_size, unknown_rate])
    return [
        (
            subject_name(i),
            functools.partial(subject_records, i, frames_per_task, seed, raw_size, align_size, unknown_rate),
            inputs,
        )
        for i in range(num_identities)
    ]


def synthetic_partition(num_identities: int) -> dict[str, int]:
    """Subject -> part: identity *i* goes to part ``i % 3 + 1`` (balanced, and stable when identities are added)."""
    from .common import round_robin_partition

    return round_robin_partition(subject_name(i) for i in range(num_identities))


# ---------------------------------------------------------------------------------------------------------------
# Statistics and the example grid

#: AU pairs whose co-occurrence the statistics report: (a, b) -> P(a | b) and P(b | a).
COOCCURRENCE_PAIRS: tuple[tuple[int, int], ...] = ((6, 12), (1, 2), (12, 15), (24, 25))


def label_statistics(
    labels: np.ndarray,
    aus: Sequence[int],
    intensities: np.ndarray | None = None,
    sequence_ids: np.ndarray | None = None,
) -> dict:
    """Base rates, co-occurrence and temporal smoothness of an (n_frames, n_aus) label matrix (-1 = unknown).

    ``intensities`` (same shape, NaN unknown) and ``sequence_ids`` (rows in time order within each id) add the
    borderline share and the lag-1 autocorrelation of intensities within sequences.
    """
    labels = np.asarray(labels)
    aus = [int(au) for au in aus]
    known = labels >= 0
    on = labels == 1
    stats: dict[str, Any] = {"frames": int(len(labels)), "base_rates": {}, "pairs": {}}
    for k, au in enumerate(aus):
        stats["base_rates"][au] = float(on[:, k].sum() / max(known[:, k].sum(), 1))
    for a, b in COOCCURRENCE_PAIRS:
        if a not in aus or b not in aus:
            continue
        ia, ib = aus.index(a), aus.index(b)
        both_known = known[:, ia] & known[:, ib]
        pa, pb = on[both_known, ia], on[both_known, ib]
        joint = float((pa & pb).mean()) if both_known.any() else float("nan")
        stats["pairs"][(a, b)] = {
            "p_a_given_b": float((pa & pb).sum() / max(pb.sum(), 1)),
            "p_b_given_a": float((pa & pb).sum() / max(pa.sum(), 1)),
            "joint": joint,
            "independent": float(pa.mean() * pb.mean()) if both_known.any() else float("nan"),
        }
    if intensities is not None:
        values = np.asarray(intensities, np.float64)
        stats["borderline"] = {
            au: float(np.nanmean((values[:, k] > 1.5) & (values[:, k] < 2.5))) for k, au in enumerate(aus)
        }
        if sequence_ids is not None:
            ids = np.asarray(sequence_ids)
            same = ids[1:] == ids[:-1]
            centred = values.copy()
            for sid in np.unique(ids):
                rows = ids == sid
                centred[rows] -= np.nanmean(values[rows], axis=0)
            step = np.abs(values[1:] - values[:-1])[same]
            stats["lag1_autocorrelation"] = float(
                np.nansum(centred[1:][same] * centred[:-1][same]) / max(np.nansum(centred**2), 1e-9)
            )
            stats["step_p99"] = float(np.nanquantile(step, 0.99)) if step.size else float("nan")
    return stats


def _dataset_arrays(dataset_dir: str | os.PathLike) -> tuple[Any, dict, dict[str, np.ndarray]]:
    from ..data.schema import load_prepared, read_metadata

    dataset = load_prepared(dataset_dir)
    metadata = read_metadata(dataset_dir)
    wanted = ["subject", "sequence", "frame", *metadata["au_columns"]]
    wanted += [c for c in dataset.column_names if c.endswith("_intensity")]
    arrays = dataset.select_columns(wanted).with_format("numpy")[:]
    return dataset, metadata, arrays


def statistics_markdown(dataset_dir: str | os.PathLike) -> str:
    """Markdown tables of the measured label statistics of a prepared synthetic set (used for docs/synthetic.md)."""
    _, metadata, arrays = _dataset_arrays(dataset_dir)
    aus = [int(au) for au in metadata["aus"]]
    order = np.lexsort((arrays["frame"], arrays["sequence"], arrays["subject"]))
    labels = np.stack([arrays[c] for c in metadata["au_columns"]], axis=1)[order]
    columns = [f"{c}_intensity" for c in metadata["au_columns"]]
    intensities = np.stack([arrays[c] for c in columns], axis=1)[order] if all(c in arrays for c in columns) else None
    ids = np.char.add(np.char.add(arrays["subject"].astype(str), "/"), arrays["sequence"].astype(str))[order]
    stats = label_statistics(labels, aus, intensities, ids)
    info = metadata.get("synthetic", {})
    lines = [
        f"Measured on `{info.get('preset', '?')}` (seed {info.get('seed', '?')}): {stats['frames']} frames, "
        f"{len(np.unique(arrays['subject']))} identities, {len(np.unique(ids))} sequences.",
        "",
        "| AU | target base rate | measured | borderline frames (intensity 1.5-2.5) |",
        "|---|---:|---:|---:|",
    ]
    for au in aus:
        target = TARGET_BASE_RATES.get(au)
        border = stats.get("borderline", {}).get(au)
        lines.append(
            f"| {au_label(au)} | {target:.2f} | {stats['base_rates'][au]:.3f} | "
            f"{'' if border is None else f'{border:.3f}'} |"
        )
    lines += ["", "| pair (a, b) | P(a \\| b) | P(b \\| a) | P(a and b) | P(a) P(b) |", "|---|---:|---:|---:|---:|"]
    for (a, b), pair in stats["pairs"].items():
        lines.append(
            f"| {au_label(a)}, {au_label(b)} | {pair['p_a_given_b']:.2f} | {pair['p_b_given_a']:.2f} | "
            f"{pair['joint']:.3f} | {pair['independent']:.3f} |"
        )
    if "lag1_autocorrelation" in stats:
        lines += [
            "",
            f"Intensities within a sequence ({FRAME_STEP_S} s apart): lag-1 autocorrelation "
            f"{stats['lag1_autocorrelation']:.2f}; 99th percentile of the change between consecutive frames "
            f"{stats['step_p99']:.2f} intensity units.",
        ]
    return "\n".join(lines) + "\n"


def _pick_examples(labels: np.ndarray, subjects: np.ndarray, n: int, seed: int) -> list[int]:
    """Rows with different subjects that together show as many different active AUs as possible."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen: list[int] = []
    shown = np.zeros(labels.shape[1], bool)
    used: set = set()
    for _ in range(min(n, len(labels))):
        best, best_score = None, -1.0
        for row in order[: min(len(order), 400)]:
            if row in chosen:
                continue
            active = labels[row] == 1
            score = (active & ~shown).sum() + 0.1 * active.sum() + rng.uniform(0, 0.05) - 5.0 * (subjects[row] in used)
            if score > best_score:
                best, best_score = int(row), score
        if best is None:
            break
        chosen.append(best)
        shown |= labels[best] == 1
        used.add(subjects[best])
        order = order[order != best]
        if shown.all():
            shown[:] = False
    return chosen


def save_example_grid(
    dataset_dir: str | os.PathLike,
    path: str | os.PathLike,
    n: int = 16,
    columns: int = 8,
    tile: int = 160,
    show_regions: bool = False,
    seed: int = 0,
) -> Path:
    """Save a PNG grid of ``n`` aligned faces from a prepared dataset, each captioned with its active AUs.

    Faces are picked to show many different AUs on different identities; each is shown ``tile`` pixels wide.
    ``show_regions`` also outlines each active AU's ``au_regions`` box. Returns the path written (atomically).
    """
    import cv2

    dataset, metadata, arrays = _dataset_arrays(dataset_dir)
    aus = [int(au) for au in metadata["aus"]]
    labels = np.stack([arrays[c] for c in metadata["au_columns"]], axis=1)
    rows = _pick_examples(labels, arrays["subject"], n, seed)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.36 * tile / 160
    line_height = int(round(14 * tile / 160))
    caption = 4 * line_height
    cols = max(1, min(columns, len(rows)))
    grid_rows = max(1, math.ceil(len(rows) / cols))
    canvas = np.full((grid_rows * (tile + caption), cols * tile, 3), 255, np.uint8)
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
    for slot, row in enumerate(rows):
        record = dataset[int(row)]
        face = np.array(record["image"].convert("RGB"))
        size = face.shape[0]
        face = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_AREA) if size != tile else face
        active = [k for k in range(len(aus)) if labels[row, k] == 1]
        if show_regions and "au_regions" in record:
            for i, k in enumerate(active):
                x0, y0, x1, y1 = (int(round(v * tile / size)) for v in record["au_regions"][k])
                cv2.rectangle(face, (x0, y0), (x1, y1), colours[i % len(colours)], 1)
        top, left = (slot // cols) * (tile + caption), (slot % cols) * tile
        canvas[top : top + tile, left : left + tile] = face
        text_lines = [f"{record['subject']} {record['sequence']} #{record['frame']}", ""]
        for word in [au_label(aus[k]) for k in active] or ["no AU"]:
            candidate = (text_lines[-1] + " " + word).strip()
            if cv2.getTextSize(candidate, font, scale, 1)[0][0] > tile - 6 and text_lines[-1]:
                text_lines.append(word)
            else:
                text_lines[-1] = candidate
        for i, text in enumerate(text_lines[:4]):
            colour = (100, 100, 100) if i == 0 else (0, 0, 0)
            position = (left + 3, top + tile + line_height * (i + 1) - 3)
            cv2.putText(canvas, text, position, font, scale, colour, 1, cv2.LINE_AA)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"could not encode the grid for {out}")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, out)
    return out


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class PrepareSyntheticArguments:
    """Options of ``sevnet-hf prepare synthetic``."""

    output: str | None = field(
        default=None, metadata={"help": "Folder for the prepared dataset (required; created; reruns resume)."}
    )
    preset: str = field(
        default="demo",
        metadata={"help": "Size: quick (tests/CI, 384 images), demo (4,608 images) or full (23,040 images)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed; the whole set (labels and pixels) is a function of it."})
    num_identities: int | None = field(
        default=None, metadata={"help": "Number of identities (subjects), overriding the preset; at least 3."}
    )
    frames_per_task: int | None = field(
        default=None, metadata={"help": f"Frames per task (8 tasks per identity, {FRAME_STEP_S} s apart)."}
    )
    raw_size: int = field(default=320, metadata={"help": "Side of the rendered raw frames, before alignment."})
    align_size: int = field(default=256, metadata={"help": "Side of the aligned square face images."})
    unknown_rate: float = field(
        default=0.01,
        metadata={"help": "Share of AU labels marked unknown (-1), like uncoded frames of real sets (0 for none)."},
    )
    num_workers: int = field(
        default=-1,
        metadata={"help": "Processes rendering identities in parallel (-1: one per CPU core, 0: this one)."},
    )
    grid: str | None = field(
        default=None, metadata={"help": "Also save a PNG grid of example aligned faces with their active AUs here."}
    )
    stats: str | None = field(
        default=None, metadata={"help": "Also write the measured label statistics as a Markdown table here."}
    )
    progress: bool = field(default=True, metadata={"help": "Print a line per identity and the final table."})


def resolve_size(args: PrepareSyntheticArguments) -> tuple[int, int]:
    """(identities, frames per task) from the preset and the overrides; raises PrepareError on bad values."""
    from .common import PrepareError

    if args.preset not in PRESETS:
        raise PrepareError(f"--preset {args.preset!r} is not one of {', '.join(PRESETS)}")
    preset = PRESETS[args.preset]
    identities = preset.identities if args.num_identities is None else int(args.num_identities)
    frames = preset.frames_per_task if args.frames_per_task is None else int(args.frames_per_task)
    if identities < 3:
        raise PrepareError(f"--num_identities must be at least 3 (one per part), got {identities}")
    if frames < 1:
        raise PrepareError(f"--frames_per_task must be at least 1, got {frames}")
    if not 0.0 <= args.unknown_rate < 1.0:
        raise PrepareError(f"--unknown_rate must be within [0, 1), got {args.unknown_rate}")
    if args.raw_size < 96:
        raise PrepareError(f"--raw_size must be at least 96 pixels, got {args.raw_size}")
    return identities, frames


def prepare_synthetic(args: PrepareSyntheticArguments) -> Any:
    """Render, align and save the synthetic set; returns the :class:`~sevnet_hf.data.schema.PreparationReport`."""
    from ..data.schema import prepare_dataset

    identities, frames = resolve_size(args)
    workers = (os.cpu_count() or 1) if args.num_workers < 0 else args.num_workers
    warm_render_caches(args.raw_size)  # built once here, shared by forked workers
    metadata = {
        "synthetic": {
            "generator": "sevnet_hf.datasets_scripts.synthetic",
            "generator_version": GENERATOR_VERSION,
            "preset": args.preset,
            "seed": args.seed,
            "identities": identities,
            "tasks": list(TASKS),
            "frames_per_task": frames,
            "frame_step_seconds": FRAME_STEP_S,
            "raw_size": args.raw_size,
            "unknown_rate": args.unknown_rate,
            "occurrence_threshold": OCCURRENCE_THRESHOLD,
            "target_base_rates": {au_label(au): TARGET_BASE_RATES[au] for au in SYNTHETIC_AUS},
            "au_regions": "per row, one [x0, y0, x1, y1] box per AU in `aus` order, in aligned pixels",
        }
    }
    report = prepare_dataset(
        synthetic_units(identities, frames, args.seed, args.raw_size, args.align_size, args.unknown_rate),
        args.output,
        aus=list(SYNTHETIC_AUS),
        source="synthetic",
        partition=synthetic_partition(identities),
        partition_name="synthetic: identity i -> part i % 3 + 1",
        align_size=args.align_size,
        extra_metadata=metadata,
        progress=args.progress,
        num_workers=workers,
    )
    if args.grid:
        save_example_grid(args.output, args.grid)
    if args.stats:
        _write_text_atomic(Path(args.stats), statistics_markdown(args.output))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``sevnet-hf prepare synthetic --output DIR [--preset quick|demo|full] [--seed N]``."""
    from .common import PrepareError, parse_args, run_cli

    args = parse_args(PrepareSyntheticArguments, argv)

    def body() -> None:
        if not args.output:
            raise PrepareError("--output is required (the folder to write the dataset to)")
        prepare_synthetic(args)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
