"""Model step speed: SEV-Net vs the bare timm backbone, same batch, resolution and precision, in one run.

    python benchmarks/model_step.py                      # CPU here: batch 32, fp32
    python benchmarks/model_step.py --batch-size 256     # GPU: bf16 autocast; channels_last everywhere by default

Prints images/s for training steps (forward + backward + Adam) and inference, and SEV-Net / backbone ratios.
Measurements alternate between the two models (ABAB...) so machine noise hits both alike. The SEV-Net here has the
paper's sizes: a 1024-wide AU text table (BERT-Large width; random values, the encoder itself never runs in a step),
Inter-AU 768 wide with 6 heads, and 12 AUs. Writes benchmarks/results/model_step[_<device>].json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, pick_device, timed, write_json  # noqa: E402


class BareBackbone(torch.nn.Module):
    """The reference: the timm backbone with global pooling and a linear head over the AUs (ResNet-18 baseline)."""

    def __init__(self, name: str, num_aus: int):
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, num_classes=num_aus)

    def forward(self, pixel_values, labels=None):
        logits = self.model(pixel_values)
        loss = (
            F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / len(logits)
            if labels is not None
            else None
        )
        return loss, logits


class SEVNetStep(torch.nn.Module):
    def __init__(self, name: str, num_aus: int):
        super().__init__()
        from sevnet_hf import SEVNetConfig, SEVNetForAUDetection

        aus = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24, 9, 25, 26][:num_aus]
        self.model = SEVNetForAUDetection(SEVNetConfig(backbone=name, aus=aus))
        self.model.set_au_text_embeddings(torch.randn(num_aus, self.model.config.text_hidden_size))

    def forward(self, pixel_values, labels=None):
        out = self.model(pixel_values, labels=labels)
        return out.loss, out.logits


def measure(args) -> dict:
    device = pick_device(args.device)
    use_bf16 = device.type == "cuda" and args.precision in ("auto", "bf16")
    channels_last = True if args.channels_last is None else args.channels_last  # as training does
    models = {"backbone": BareBackbone(args.backbone, args.num_aus), "sevnet": SEVNetStep(args.backbone, args.num_aus)}
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (args.batch_size, args.num_aus), device=device).float()
    steps = {}
    for name, model in models.items():
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        runner = torch.compile(model) if args.compile else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")

        def train_step(runner=runner, model=model, optimizer=optimizer):
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, _ = runner(images, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        @torch.no_grad()
        def infer_step(runner=runner, model=model):
            model.eval()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                runner(images)

        for _ in range(args.warmup):
            train_step()
            infer_step()
        steps[name] = (train_step, infer_step)

    samples = {name: {"train": [], "infer": []} for name in models}
    for _ in range(args.rounds):  # alternate the models so drift in machine load hits both
        for name, (train_step, infer_step) in steps.items():
            samples[name]["train"].append(args.batch_size / timed(train_step, device, args.repeats))
            samples[name]["infer"].append(args.batch_size / timed(infer_step, device, args.repeats))
    rates = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    return {
        "machine": machine_description(device),
        "settings": {
            "backbone": args.backbone,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "precision": "bf16 autocast" if use_bf16 else "fp32",
            "channels_last": channels_last,
            "compile": args.compile,
            "num_aus": args.num_aus,
            "rounds": args.rounds,
            "repeats": args.repeats,
        },
        "images_per_s": rates,
        "samples": samples,
        "ratio_train": rates["sevnet"]["train"] / rates["backbone"]["train"],
        "ratio_infer": rates["sevnet"]["infer"] / rates["backbone"]["infer"],
        "params": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-aus", type=int, default=12)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None, help="JSON file name under benchmarks/results")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.batch_size is None:
        args.batch_size = 256 if device.type == "cuda" else 32
    result = measure(args)
    rates = result["images_per_s"]
    print(f"machine: {result['machine']}")
    print(f"settings: {result['settings']}")
    print(f"{'model':<10} {'train img/s':>12} {'infer img/s':>12}")
    for name in ("backbone", "sevnet"):
        print(f"{name:<10} {rates[name]['train']:>12.1f} {rates[name]['infer']:>12.1f}")
    print(f"{'ratio':<10} {result['ratio_train']:>12.3f} {result['ratio_infer']:>12.3f}   (SEV-Net / bare backbone)")
    path = write_json(args.name or f"model_step_{device.type}", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
