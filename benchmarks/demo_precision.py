"""The demo's training step in fp32 and in bf16 autocast, alternating in one run (the ground for ``--mixed_precision``).

    python benchmarks/demo_precision.py [--compare_layer4]   # CPU: the demo's SEV-Net, batch 16, 15 AUs

Builds the model ``sevnet-hf demo`` trains (its recipe from ``demo_train_arguments``: random resnet18 cut after
layer3, 128 px, Inter-AU 384/6/512, shared classifier, the offline MiniLM table), times training steps (forward + loss +
backward + Adam) under each precision in turn (ABAB..., so machine drift hits both alike) and prints images/s and the
bf16 / fp32 ratio. ``--compare_layer4`` times the recipe before a21289a (layer4 at output stride 16, 96 px) in the
same rounds and prints how fast the demo's step is against it. Writes benchmarks/results/demo_precision.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, timed, write_json  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--compare_layer4",
        action="store_true",
        help="also time the demo's recipe before a21289a (layer4 at output stride 16, 96 px) in the same rounds",
    )
    parser.add_argument("--name", default="demo_precision")
    args = parser.parse_args(argv)

    from sevnet_hf.datasets_scripts.synthetic_render import SYNTHETIC_AUS
    from sevnet_hf.training.demo import DemoArguments, demo_mixed_precision

    aus = list(SYNTHETIC_AUS)
    recipes = {"demo": DemoArguments()}
    if args.compare_layer4:
        recipes["layer4_96px"] = DemoArguments(image_size=96, backbone_feature_stage=-1)
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 2, (args.batch_size, len(aus))).astype(np.float32))
    steps = {name: _training_step(demo, aus, args.batch_size, labels) for name, demo in recipes.items()}
    device = torch.device("cpu")
    for step in steps.values():
        for bf16 in (False, True, False, True):  # warm-up of both paths
            step(bf16)
    samples = {f"{name}_{precision}": [] for name in steps for precision in ("fp32", "bf16")}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for precision, bf16 in (("fp32", False), ("bf16", True)):
                rate = args.batch_size / timed(lambda step=step, bf16=bf16: step(bf16), device, args.repeats)
                samples[f"{name}_{precision}"].append(rate)
    rates = {key: statistics.median(values) for key, values in samples.items()}
    result = {
        "machine": machine_description(device),
        "settings": {
            "batch_size": args.batch_size,
            "image_size": {name: demo.image_size for name, demo in recipes.items()},
            "backbone_feature_stage": {name: demo.backbone_feature_stage for name, demo in recipes.items()},
            "rounds": args.rounds,
            "repeats": args.repeats,
            "channels_last": True,
        },
        "demo_auto_choice": demo_mixed_precision("auto"),
        "images_per_s": {"fp32": rates["demo_fp32"], "bf16": rates["demo_bf16"], **rates},
        "samples": samples,
        "ratio_bf16_over_fp32": rates["demo_bf16"] / rates["demo_fp32"],
    }
    demo = recipes["demo"]
    print(
        f"demo training step, batch {args.batch_size}, {demo.image_size} px: fp32 {rates['demo_fp32']:.1f} img/s, "
        f"bf16 {rates['demo_bf16']:.1f} img/s, ratio {result['ratio_bf16_over_fp32']:.2f} "
        f"(demo's auto here: {result['demo_auto_choice']})"
    )
    if args.compare_layer4:
        for precision in ("fp32", "bf16"):
            ratio = rates[f"demo_{precision}"] / rates[f"layer4_96px_{precision}"]
            result[f"ratio_demo_over_layer4_{precision}"] = ratio
            print(
                f"the layer4 recipe (96 px) in {precision}: {rates[f'layer4_96px_{precision}']:.1f} img/s; the demo's "
                f"step is {ratio:.2f}x as fast"
            )
    print("wrote", write_json(args.name, result))
    return result


def _training_step(demo, aus: list[str], batch_size: int, labels: torch.Tensor):
    """One training step (forward + loss + backward + Adam) of the model ``demo``'s recipe builds, on random images."""
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.training.build import build_model
    from sevnet_hf.training.demo import demo_train_arguments

    recipe = demo_train_arguments(demo, Path("unused"), Path("unused"), minilm_encoder_path())
    rng = np.random.default_rng(0)
    model, _ = build_model(recipe, aus, rng.integers(0, 2, (64, len(aus))), verbose=False)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    images = torch.randn(batch_size, 3, demo.image_size, demo.image_size).contiguous(memory_format=torch.channels_last)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values=images, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


if __name__ == "__main__":
    main()
