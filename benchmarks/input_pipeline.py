"""Input pipeline vs model step: can the data path feed the model?

    python benchmarks/input_pipeline.py [--dataset PREPARED_DIR] [--num-workers N]

Measures, in one run: images/s the data path delivers with the given workers (default: the training default for
the device), both ways the training command can read faces:

- decode: read + JPEG decode + resize in DataLoader workers, collate;
- cache: copy from the decoded uint8 cache (sevnet_hf/data/decoded_cache.py; built first, its build time printed);

each followed by crop/flip/normalise on the device as the training loop does them, and the SEV-Net training step's
images/s at the same batch and crop (benchmarks/model_step.py). Prints the rates and their ratios to the step (target
>= 2 on CPU, so training is model-bound). Without --dataset it prepares the synthetic quick preset in a temporary
folder. Writes benchmarks/results/input_pipeline_<device>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, pick_device, write_json  # noqa: E402


def loader_rate(
    dataset_dir: str, batch_size: int, crop: int, workers: int, device, batches: int, decoded=None
) -> float:
    from sevnet_hf.data.decoded_cache import number_rows
    from sevnet_hf.data.schema import load_prepared, read_metadata
    from sevnet_hf.data.transforms import AUImageDataset, DeviceAugment, collate_uint8, resize_for_crop
    from sevnet_hf.image_processing_sevnet import IMAGENET_MEAN, IMAGENET_STD

    metadata = read_metadata(dataset_dir)
    dataset = load_prepared(dataset_dir)
    if decoded is not None:
        dataset = number_rows(dataset)
    data = AUImageDataset(dataset, metadata["au_columns"], size=resize_for_crop(crop), decoded=decoded)
    sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=batch_size * (batches + 2))
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_uint8,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    augment = DeviceAugment(crop, IMAGENET_MEAN, IMAGENET_STD).to(device)
    iterator = iter(loader)
    for _ in range(2):  # start the workers
        next(iterator)
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        augment(batch["pixel_values"].to(device, non_blocking=True), train=True)
        count += len(batch["labels"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-workers", type=int, default=None, help="default: the training default on the device")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--name", default=None, help="JSON file name under benchmarks/results")
    args = parser.parse_args(argv)
    from sevnet_hf.data.decoded_cache import build_decoded_cache
    from sevnet_hf.data.transforms import resize_for_crop
    from sevnet_hf.training.loop import default_num_workers

    device = pick_device(args.device)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    workers = args.num_workers if args.num_workers is not None else default_num_workers(device)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            from sevnet_hf.datasets_scripts import synthetic

            dataset = str(Path(tmp) / "synthetic")
            synthetic.main(["--output", dataset, "--preset", "quick"])
        rates = {"decode": loader_rate(dataset, batch, args.image_size, workers, device, args.batches)}
        started = time.perf_counter()
        decoded = build_decoded_cache(
            dataset, resize_for_crop(args.image_size), cache_dir=Path(tmp) / "cache", num_workers=workers
        )
        cache_build_s = time.perf_counter() - started
        rates["cache"] = loader_rate(dataset, batch, args.image_size, workers, device, args.batches, decoded)
    import model_step

    step = model_step.main(
        [
            "--device",
            str(device),
            "--batch-size",
            str(batch),
            "--image-size",
            str(args.image_size),
            "--rounds",
            "2",
            "--repeats",
            "2",
            "--name",
            f"{args.name or 'input_pipeline_' + device.type}_model_step",
        ]
    )
    model_rate = step["images_per_s"]["sevnet"]["train"]
    result = {
        "machine": machine_description(device),
        "settings": {"batch_size": batch, "image_size": args.image_size, "num_workers": workers, "dataset": dataset},
        "data_images_per_s": rates,
        "cache_build_s": cache_build_s,
        "cache_rows": decoded.rows,
        "sevnet_train_images_per_s": model_rate,
        "ratio_data_over_model": {path: rate / model_rate for path, rate in rates.items()},
    }
    print(f"SEV-Net training step: {model_rate:.1f} img/s (batch {batch}, {args.image_size} px)")
    for path, rate in rates.items():
        print(
            f"data path ({path}): {rate:.1f} img/s with {workers} workers; "
            f"ratio to the step {rate / model_rate:.1f} (target >= 2)"
        )
    print(f"decoded cache: {decoded.rows} faces built in {cache_build_s:.1f} s")
    print(f"wrote {write_json(args.name or f'input_pipeline_{device.type}', result)}")
    return result


if __name__ == "__main__":
    main()
