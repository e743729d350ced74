"""The AU-embedding collapse over training steps, with and without the diversity term.

    python benchmarks/attention_collapse.py [--dataset outputs/demo/data] [--weights 0,1] [--steps 300] [--every 25]

The demo's model (random resnet18 at output stride 16, 96 px crops of 110 px faces, MiniLM AU table, Inter-AU
384/6/512, the shared classifier) trained with Adam 1e-3, batch 16, on the synthetic ``demo`` set, fold 1, once per
``au_diversity_weight``. Every ``--every`` steps, on 32 validation faces: mean pairwise cosine of the AU embeddings,
mean total variation between two AUs' maps of a face, share of all-zero (fallback) maps, attention entropy / uniform,
the spread of the logits across the AUs of a face, and the norm of the gradient reaching the text path at that step.
At the end: test mean F1 on the 16 unseen subjects. Writes benchmarks/results/attention_collapse.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, pick_device, write_json  # noqa: E402


def run(dataset: str, weight: float, steps: int, every: int, seed: int, stride: int) -> dict:
    from sevnet_hf import SEVNetConfig, SEVNetForAUDetection
    from sevnet_hf.data.decoded_cache import build_decoded_cache, number_rows
    from sevnet_hf.data.folds import split_fold
    from sevnet_hf.data.schema import load_prepared, read_metadata
    from sevnet_hf.data.transforms import AUImageDataset, DeviceAugment
    from sevnet_hf.metrics import au_f1_scores, probabilities_to_predictions
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.training.attention_health import AttentionHealth, grad_norm, text_path_parameters

    metadata = read_metadata(dataset)
    columns = list(metadata["au_columns"])
    decoded = build_decoded_cache(dataset, 110, progress=False)
    splits = split_fold(number_rows(load_prepared(dataset)), 1, metadata=metadata, seed=0, verbose=False)
    parts = {name: AUImageDataset(splits[name], columns, size=110, decoded=decoded) for name in splits}
    torch.manual_seed(seed)
    config = SEVNetConfig(
        id2label=dict(enumerate(columns)),
        image_size=96,
        backbone_output_stride=stride,
        inter_au_hidden_size=384,
        inter_au_num_heads=6,
        inter_au_intermediate_size=512,
        au_diversity_weight=weight,
    )
    model = SEVNetForAUDetection.from_backbones(config, backbone_weights=None, text_encoder=minilm_encoder_path())
    model = model.to(memory_format=torch.channels_last)
    augment = DeviceAugment(96, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    text_parameters = text_path_parameters(model)
    probe_rows = list(range(0, len(parts["validation"]), 15))[:32]
    probe = torch.stack([parts["validation"][i]["pixel_values"] for i in probe_rows])

    def health(step: int, text_grad: float, loss: float, seconds: float) -> dict:
        model.eval()
        with torch.no_grad():
            out = model(augment(probe, train=False), output_attentions=True)
        model.train()
        statistics = AttentionHealth()
        statistics.update(out)
        return {
            "step": step,
            "loss": loss,
            **statistics.compute(),
            "logit_spread_across_aus": float(out.logits.std(1).mean()),
            "text_path_grad_norm": text_grad,
            "seconds": seconds,
        }

    generator = torch.Generator().manual_seed(seed)
    train_set, trajectory, step, started = parts["train"], [], 0, time.perf_counter()
    losses = []
    while step < steps:
        order = torch.randperm(len(train_set), generator=generator).tolist()
        for start in range(0, len(order) - 15, 16):
            batch = train_set.__getitems__(order[start : start + 16])
            pixels = torch.stack([item["pixel_values"] for item in batch])
            labels = torch.stack([item["labels"] for item in batch])
            loss = model(augment(pixels, train=True, generator=generator), labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            text_grad = grad_norm(text_parameters)
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            if step == 1 or step % every == 0:
                trajectory.append(
                    health(step, float(text_grad), float(np.mean(losses)), time.perf_counter() - started)
                )
                losses = []
                print(json.dumps({"weight": weight, **trajectory[-1]}), flush=True)
            if step >= steps:
                break
    model.eval()
    probabilities, labels = [], []
    with torch.no_grad():
        test = parts["test"]
        for start in range(0, len(test), 64):
            batch = test.__getitems__(list(range(start, min(len(test), start + 64))))
            pixels = torch.stack([item["pixel_values"] for item in batch])
            probabilities.append(torch.sigmoid(model(augment(pixels, train=False)).logits))
            labels.append(torch.stack([item["labels"] for item in batch]))
    scores = au_f1_scores(
        probabilities_to_predictions(torch.cat(probabilities).numpy(), [0.5] * len(columns)),
        torch.cat(labels).numpy(),
        columns,
    )
    return {"au_diversity_weight": weight, "test_f1_mean": scores["f1_mean"], "trajectory": trajectory}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="outputs/demo/data")
    parser.add_argument("--weights", default="0,1")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--name", default="attention_collapse")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    runs = [
        run(args.dataset, float(w), args.steps, args.every, args.seed, args.output_stride)
        for w in args.weights.split(",")
    ]
    lines = ["| au_diversity_weight | step | AU cosine | map TV | dead maps | entropy | logit spread | text grad |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for result in runs:
        for point in result["trajectory"]:
            lines.append(
                f"| {result['au_diversity_weight']:g} | {point['step']} | {point['au_embedding_cosine']:.3f} | "
                f"{point['au_map_tv']:.3f} | {100 * point['dead_map_share']:.1f}% | {point['attention_entropy']:.3f} | "
                f"{point['logit_spread_across_aus']:.3f} | {point['text_path_grad_norm']:.3f} |"
            )
        lines.append(f"| {result['au_diversity_weight']:g} | test mean F1 | {result['test_f1_mean']:.1f} | | | | | |")
    text = "\n".join(lines)
    print(text)
    result = {"machine": machine_description(pick_device("auto")), "args": vars(args), "runs": runs, "table": text}
    print(f"wrote {write_json(args.name, result)}")
    return result


if __name__ == "__main__":
    main()
