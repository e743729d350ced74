"""End to end: one training epoch of ``sevnet-hf train`` on a prepared set; images/s and the share of the epoch the
step loop spent waiting for data (from the run's metrics.jsonl).

    python benchmarks/epoch.py [--dataset PREPARED_DIR] [--epochs 1] [--batch-size 100] [--max-steps 30]

Without --dataset it prepares the synthetic quick preset. The SEV-Net has the paper's sizes and a random 1024-wide
stand-in text encoder (as in model_step.py). With --epochs above 1 the last epoch is the steady state (workers
started, kernels tuned). Compare its images/s with benchmarks/model_step.py's SEV-Net training rate on the same
machine. Writes benchmarks/results/epoch_<device>.json (or --name).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, pick_device, write_json  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None, help="default: the training default on the device")
    parser.add_argument("--decoded-cache", default="auto", choices=["auto", "always", "never"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--name", default=None, help="JSON file name under benchmarks/results")
    args = parser.parse_args(argv)
    from sevnet_hf.offline_assets import write_random_text_encoder
    from sevnet_hf.training.args import TrainArguments
    from sevnet_hf.training.loop import train

    device = pick_device("auto")
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            from sevnet_hf.datasets_scripts import synthetic

            dataset = str(Path(tmp) / "synthetic")
            synthetic.main(["--output", dataset, "--preset", "quick"])
        out = Path(tmp) / "run"
        # BERT-Large's width, random weights: the step's cost depends on the AU table's width, not on the text.
        encoder = write_random_text_encoder(Path(tmp) / "text_encoder", 1024, layers=1, heads=16, intermediate_size=1024)
        train(
            TrainArguments(
                dataset=dataset,
                output_dir=str(out),
                text_encoder=encoder,
                backbone_weights="none",
                image_size=args.image_size,
                batch_size=batch,
                epochs=args.epochs,
                patience=0,
                max_steps_per_epoch=args.max_steps,
                num_workers=args.num_workers,
                decoded_cache=args.decoded_cache,
                decoded_cache_dir=str(Path(tmp) / "cache"),
                report_to="none",
                progress=False,
            )
        )
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = {
        "machine": machine_description(device),
        "settings": {
            "batch_size": batch,
            "image_size": args.image_size,
            "dataset": dataset,
            "max_steps": args.max_steps,
            "decoded_cache": args.decoded_cache,
            "num_workers": args.num_workers,
            "epochs": args.epochs,
        },
        "epochs": [{k: r[k] for k in ("epoch", "train_images_per_s", "data_wait_share")} for r in history],
        "train_images_per_s": history[-1]["train_images_per_s"],
        "data_wait_share": history[-1]["data_wait_share"],
    }
    for r in result["epochs"]:
        print(
            f"epoch {r['epoch']}: {r['train_images_per_s']:.1f} img/s, waiting for data "
            f"{100 * r['data_wait_share']:.1f}% of the epoch"
        )
    print(f"wrote {write_json(args.name or f'epoch_{device.type}', result)}")
    return result


if __name__ == "__main__":
    main()
