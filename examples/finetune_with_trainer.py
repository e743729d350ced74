"""Fine-tune a saved SEV-Net on a prepared dataset with a different AU set, with ``transformers.Trainer``.

The new AUs get their descriptions (shipped, or your JSON file) and a recomputed frozen AU text table. The backbone,
the Inter-AU encoder and the projections carry over. The classifier depends on the model's head:

- a shared classifier (the paper's Eq. 7, ``shared_classifier=True``): one function applied to every AU's feature,
  so it carries over;
- one classifier per AU (``shared_classifier=False``) or a shared one with per-AU biases
  (``classifier_per_au_bias=True``): it has parameters per AU, so it is re-initialised for the new AUs and learnt
  from scratch here (per-AU biases start at the training base rates, as in ``sevnet-hf train``).

The script prints which parts carried over, read from the weights before and after the change.

    python examples/finetune_with_trainer.py --model outputs/demo/train/model --dataset prepared/disfa \
        --text_encoder sentence-transformers/bert-large-nli-mean-tokens --output_dir outputs/disfa_ft --fold 1

The text encoder must be the one the model was built with (its width is part of the model).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class FinetuneArguments:
    model: str = field(metadata={"help": "Saved SEV-Net folder or Hub id."})
    dataset: str = field(metadata={"help": "Prepared dataset folder (sevnet-hf prepare ...)."})
    text_encoder: str = field(metadata={"help": "The text encoder the model was built with (Hub id or folder)."})
    output_dir: str = field(default="outputs/finetune", metadata={"help": "Trainer output folder."})
    descriptions: str | None = field(default=None, metadata={"help": "JSON file of AU descriptions (else shipped)."})
    fold: int = field(default=1, metadata={"help": "Fold for the train/validation/test split."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs when > 0)."})
    batch_size: int = field(default=32, metadata={"help": "Per-device batch size."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate."})
    seed: int = field(default=0, metadata={"help": "Seed."})


def main(argv: list[str] | None = None) -> dict:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    import sevnet_hf  # noqa: F401  (registers SEV-Net with the auto classes)
    from sevnet_hf.data.folds import split_fold
    from sevnet_hf.data.schema import load_prepared, read_metadata
    from sevnet_hf.data.transforms import AUImageDataset
    from sevnet_hf.training.build import adapt_au_set
    from sevnet_hf.training.loop import parse_args
    from sevnet_hf.training.trainer_utils import AUDataCollator, make_compute_metrics

    args = parse_args(argv, FinetuneArguments)
    model = AutoModelForImageClassification.from_pretrained(args.model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    dataset = load_prepared(args.dataset)
    metadata = read_metadata(args.dataset)
    splits = split_fold(dataset, args.fold, metadata=metadata, seed=args.seed)
    columns = metadata["au_columns"]
    parts = {name: AUImageDataset(splits[name], columns, size=processor.square_sizes()[0]) for name in splits}
    train_labels = parts["train"].labels.numpy()
    print(
        adapt_au_set(
            model,
            metadata["aus"],
            descriptions=args.descriptions,
            text_encoder=args.text_encoder,
            train_labels=train_labels,
        ),
        flush=True,
    )

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )

    class SplitCollatorTrainer(Trainer):  # random crop + flip for training batches, center crop for evaluation
        def get_eval_dataloader(self, eval_dataset=None):
            self.data_collator = AUDataCollator(processor, train=False)
            return super().get_eval_dataloader(eval_dataset)

        def get_train_dataloader(self):
            self.data_collator = AUDataCollator(processor, train=True, seed=args.seed)
            return super().get_train_dataloader()

    trainer = SplitCollatorTrainer(
        model=model,
        args=training_args,
        train_dataset=parts["train"],
        eval_dataset=parts["validation"],
        data_collator=AUDataCollator(processor, train=True, seed=args.seed),
        compute_metrics=make_compute_metrics(model.config.au_labels, model.config.decision_thresholds),
    )
    trainer.train()
    metrics = trainer.evaluate(parts["test"], metric_key_prefix="test")
    trainer.save_model(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print({k: round(v, 2) for k, v in metrics.items() if "f1" in k})
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
