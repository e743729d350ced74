"""The options of ``sevnet-hf detect`` (:class:`DetectArguments`) and their parser, in a module that imports neither
torch nor transformers' pipelines, so ``sevnet-hf detect --help`` starts fast."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ..data.align import MIN_FACE_SCORE

FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def detect_parser():
    """The ``HfArgumentParser`` of ``sevnet-hf detect`` (usage line, description, the shared conventions)."""
    from ..cli_args import build_parser

    return build_parser(
        DetectArguments,
        prog="sevnet-hf detect",
        usage="sevnet-hf detect INPUT [INPUT ...] --model PATH_OR_HUB_ID [options]  (or: sevnet-hf detect ARGS.json)",
        description="Detect facial action units in photos, folders and videos; one output row per face per frame.",
    )


@dataclass
class DetectArguments:
    """Options of ``sevnet-hf detect INPUT... --model PATH_OR_HUB_ID``."""

    model: str = field(metadata={"help": "Saved model folder or Hub id (SEV-Net or a baseline)."})
    inputs: list[str] = field(
        default_factory=list, metadata={"help": "Images, folders (searched recursively) and videos; also positional."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Output file (default: au_detections.<format> in the current folder)."}
    )
    format: str | None = field(
        default=None, metadata={"help": "csv | parquet | jsonl (default: from the output's extension, else csv)."}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Faces per model call (default: 8 on CPU, 32 on GPU)."}
    )
    upsample: int = field(default=0, metadata={"help": "Times dlib doubles the image before detecting (small faces)."})
    detector: str = field(default="hog", metadata={"help": "dlib detector: hog (fast) | cnn (slow on CPU)."})
    landmark_model: str = field(default="5", metadata={"help": "dlib shape predictor: 5 | 68 points."})
    detection_threshold: float = field(
        default=MIN_FACE_SCORE,
        metadata={
            "help": f"Minimum detector score for a face (default {MIN_FACE_SCORE}: weak hits on textures score "
            "0.03-0.21, real faces 0.4 and more; 0: dlib's own default, as in dataset preparation)."
        },
    )
    max_detect_side: int = field(
        default=1600, metadata={"help": "Longer side above which images are shrunk for face detection only."}
    )
    every: int = field(default=1, metadata={"help": "Process every N-th video frame."})
    verify_every: int = field(
        default=10, metadata={"help": "Video tracking: re-detect on a crop around each face every N frames."}
    )
    redetect_every: int = field(
        default=0, metadata={"help": "Video tracking: full-frame detection every N frames (0: only when lost)."}
    )
    save_attention: str | None = field(
        default=None, metadata={"help": "Folder for per-face grids of AU attention heat maps (PNG)."}
    )
    annotate_video: str | None = field(
        default=None, metadata={"help": "Video file (one video input) or folder for videos with boxes and AUs drawn."}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    prefetch: bool = field(
        default=True, metadata={"help": "Decode and find faces in a background thread while the model runs."}
    )
    channels_last: bool = field(default=True, metadata={"help": "Run the model in channels-last memory format."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted run from OUTPUT.partial."})
    overwrite: bool = field(
        default=False, metadata={"help": "Discard the rows of an interrupted run in OUTPUT.partial and start again."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar with frames per second."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models that ship their own code."})
    add_aus: str | None = field(
        default=None,
        metadata={
            "help": "JSON file {\"AU5\": \"description\", ...}: score these AUs too, from their descriptions alone "
            "(zero-shot; SEV-Net with a shared classifier; needs the model's text encoder)."
        },
    )
    text_encoder: str | None = field(
        default=None,
        metadata={"help": "Text encoder for --add_aus (default: the one named in the model's config)."},
    )
    stats_json: str | None = field(
        default=None, metadata={"help": "Write timing statistics (seconds per stage, frames/s) to this JSON file."}
    )

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.every < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("--every and --batch_size must be positive integers")

    def resolved_output(self) -> tuple[str, str]:
        """(output path, format)."""
        fmt = self.format
        if fmt is None and self.output:
            extension = os.path.splitext(self.output)[1].lower()
            fmt = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}.get(extension, "csv")
        fmt = fmt or "csv"
        return self.output or f"au_detections{FORMATS[fmt]}", fmt


def parse_detect_args(argv: list[str] | None = None) -> DetectArguments:
    """Parse ``detect`` arguments: flags (inputs may also be positional), or a JSON/YAML file then overriding flags."""
    from ..cli_args import arguments_file_flags

    parser = detect_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")) and os.path.isfile(argv[0]):
        argv = arguments_file_flags(argv[0], parser) + argv[1:]  # an unknown key: one line, exit status 2
    args, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    unknown = [item for item in remaining if item.startswith("-")]
    if unknown:
        parser.error(f"unrecognised option(s): {' '.join(unknown)}")
    args.inputs = [*remaining, *args.inputs]
    return args
