"""Arguments of ``sevnet-hf train`` as a dataclass (the paper's recipe as defaults); also read from JSON/YAML."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocols import DEFAULT_TEXT_ENCODER


@dataclass
class TrainArguments:
    dataset: str = field(metadata={"help": "Prepared dataset folder (`sevnet-hf prepare ...`)."})
    output_dir: str = field(default="outputs/sevnet", metadata={"help": "Where checkpoints, logs and the model go."})
    fold: int = field(default=1, metadata={"help": "Fold 1, 2 or 3 (ME-GraphAU numbering: fold 1 tests on part3)."})
    model_type: str = field(default="sevnet", metadata={"help": "sevnet | resnet | mlgcn | mscam."})
    exclude_aus: str | None = field(
        default=None,
        metadata={
            "help": "AUs of the dataset to leave out (comma-separated): not trained on, not tested (zero-shot holdout)."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model to fine-tune (its AU set is adapted to the dataset's)."}
    )
    backbone: str = field(default="resnet18", metadata={"help": "timm backbone name for a new model."})
    backbone_weights: str = field(
        default="timm", metadata={"help": "'timm' (download pretrained), a local weights file, or 'none' (scratch)."}
    )
    text_encoder: str = field(
        default=DEFAULT_TEXT_ENCODER, metadata={"help": "Frozen Intra-AU encoder: Hub id or local folder."}
    )
    descriptions: str | None = field(
        default=None, metadata={"help": "JSON file of AU descriptions (default: shipped)."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of model config fields, e.g. '{\"inter_au_hidden_size\": 384}'."}
    )
    image_size: int = field(default=224, metadata={"help": "Crop size fed to the model (faces are resized first)."})
    resize_size: int | None = field(
        default=None,
        metadata={"help": "Side the aligned faces are resized to before cropping (default 256/224 x crop)."},
    )
    random_crop: bool = field(
        default=True,
        metadata={
            "help": "Random crop in training (paper: 224 of 256); false trains on the test's center crop (flips kept)."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (paper: 1e-3)."})
    lr_decay: float = field(default=0.85, metadata={"help": "Learning-rate factor applied after every epoch (paper)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    batch_size: int = field(default=100, metadata={"help": "Images per step on each process (paper: 100)."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Evaluation batch (default: batch_size)."})
    epochs: int = field(default=50, metadata={"help": "Maximum epochs (paper: 50, with early stopping)."})
    patience: int = field(
        default=5, metadata={"help": "Stop after this many epochs without a better validation mean F1 (0: never)."}
    )
    val_fraction: float = field(
        default=0.15, metadata={"help": "Share of training subjects held out for validation / early stopping."}
    )
    max_steps_per_epoch: int | None = field(default=None, metadata={"help": "Cap on steps per epoch (quick runs)."})
    mixed_precision: str = field(
        default="auto", metadata={"help": "no | fp16 | bf16 | auto (bf16 on a GPU that has it, else fp16 / none)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps to accumulate before an update."})
    num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader worker processes (default: 2 on a CPU; on a GPU the CPU cores per process minus one, "
            "at most 16)."
        },
    )
    decoded_cache: str = field(
        default="auto",
        metadata={
            "help": "Read faces from a decoded uint8 cache instead of decoding JPEGs each epoch: auto (on a GPU), "
            "always, never. Costs 3 x S x S bytes a face on disk (196 KiB at 256 px)."
        },
    )
    decoded_cache_dir: str | None = field(
        default=None, metadata={"help": "Where the decoded cache lives (default: <dataset>/decoded)."}
    )
    channels_last: bool = field(default=True, metadata={"help": "channels_last memory format (faster on GPU and CPU)."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, shuffling and augmentation."})
    resume: bool = field(default=False, metadata={"help": "Continue from the newest complete epoch checkpoint."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Epoch checkpoints to keep (newest)."})
    log_every: int = field(default=10, metadata={"help": "Steps between progress-bar loss updates."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (main process)."})
    report_to: str = field(
        default="auto",
        metadata={
            "help": "Experiment trackers for per-epoch metrics, besides metrics.jsonl: 'auto' (TensorBoard when "
            "installed), 'none', or Accelerate tracker names separated by commas (tensorboard, wandb, mlflow, ...)."
        },
    )
    stop_after_epochs: int | None = field(
        default=None,
        metadata={"help": "Stop the process after this many epochs this run (simulates an interruption)."},
    )

    def __post_init__(self) -> None:
        if self.fold not in (1, 2, 3):
            raise ValueError(f"--fold must be 1, 2 or 3, got {self.fold}")
        if self.mixed_precision not in ("no", "fp16", "bf16", "auto"):
            raise ValueError(f"--mixed_precision must be no, fp16, bf16 or auto, got {self.mixed_precision!r}")
        if self.decoded_cache not in ("auto", "always", "never"):
            raise ValueError(f"--decoded_cache must be auto, always or never, got {self.decoded_cache!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"--lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("--batch_size and --epochs must be positive")


def train_parser():
    """The parser of ``sevnet-hf train``, as ``loop.parse_args`` builds it (``cli_args.build_parser``), for a fast --help."""
    from ..cli_args import build_parser

    return build_parser(TrainArguments, "sevnet-hf train")
