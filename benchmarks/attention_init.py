"""How the AU projection's bias initialisation shapes SEV-Net's attention, at initialisation and after short training.

    python benchmarks/attention_init.py [--biases 1.0,0.1,0.0] [--dataset outputs/demo/data] [--steps 200]
    python benchmarks/attention_init.py --biases 1.0,0.1 --demo-recipe     # the demo's model and 5 epochs instead

Eq. 4-5 take ReLU(cos(V_i, w_k)) over non-negative ResNet features V_i. A large positive bias in the projection that
makes w_k starts every AU with a positive cosine everywhere (no all-zero map, every AU trainable) but also makes the
cosines nearly equal across locations, i.e. a uniform map. This script measures, for each bias:

- at initialisation (random weights, 15 random images + the astronaut portrait, 3 seeds): attention entropy relative
  to a uniform map, peak / mean attention, the share of all-zero (fallback) maps and AUs that are all-zero on every
  image (their embedding gets no gradient through the attention);
- after ``--steps`` training steps on a prepared synthetic set (fold 1; the paper's shared classifier and Inter-AU
  sizes), or with ``--demo-recipe`` after the demo's 5 epochs at 96 px (per-AU heads, Inter-AU 384/6/512): test
  mean F1, the same attention statistics on test faces, and attention mass inside the AUs' known regions vs a
  uniform map.

Writes benchmarks/results/attention_init.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description, pick_device, write_json  # noqa: E402

AUS = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]


def attention_stats(maps: torch.Tensor) -> dict:
    """maps: B x N x h x w attention (each map sums to 1)."""
    flat = maps.flatten(2).float()
    locations = flat.shape[-1]
    entropy = -(flat.clamp_min(1e-12) * flat.clamp_min(1e-12).log()).sum(-1) / math.log(locations)
    fallback = (flat.max(-1).values - flat.min(-1).values) < 1e-9  # the uniform map of an all-zero z
    return {
        "entropy_over_uniform": float(entropy.mean()),
        "peak_over_mean": float((flat.max(-1).values * locations).mean()),
        "all_zero_maps_percent": 100 * float(fallback.float().mean()),
        "aus_all_zero_on_every_image": int(fallback.all(0).sum()),
    }


def at_initialisation(bias: float, seeds: int = 3) -> dict:
    from sevnet_hf import SEVNetConfig, SEVNetForAUDetection
    from sevnet_hf.offline_assets import astronaut_photo

    face = torch.from_numpy(np.asarray(astronaut_photo())).permute(2, 0, 1).float() / 255
    face = (torch.nn.functional.interpolate(face[None], size=224) - 0.45) / 0.25
    runs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = SEVNetForAUDetection(SEVNetConfig(aus=AUS, au_projection_bias_init=bias)).eval()
        model.set_au_text_embeddings(torch.randn(len(AUS), model.config.text_hidden_size))
        with torch.no_grad():
            out = model(torch.cat([torch.randn(15, 3, 224, 224), face]), output_attentions=True)
        runs.append(attention_stats(out.au_attention_maps))
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def after_training(
    bias: float, dataset: str, steps: int | None, image_size: int, workdir: Path, demo: bool, seed: int = 0
) -> dict:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from sevnet_hf.data.schema import load_prepared, read_metadata
    from sevnet_hf.offline_assets import minilm_encoder_path
    from sevnet_hf.training.args import TrainArguments
    from sevnet_hf.training.attention_analysis import localisation_scores
    from sevnet_hf.training.loop import train

    out = workdir / f"bias_{bias}"
    batch = 16
    overrides = {"au_projection_bias_init": bias}
    if demo:  # as sevnet_hf/training/demo.py trains
        overrides.update(
            shared_classifier=False,
            classifier_per_au_bias=False,
            inter_au_hidden_size=384,
            inter_au_num_heads=6,
            inter_au_intermediate_size=512,
        )
    results = train(
        TrainArguments(
            dataset=dataset,
            output_dir=str(out),
            text_encoder=minilm_encoder_path(),
            backbone_weights="none",
            config_overrides=json.dumps(overrides),
            image_size=image_size,
            batch_size=batch,
            epochs=5 if demo else 2,
            max_steps_per_epoch=None if demo else steps // 2,
            patience=0,
            num_workers=1,
            seed=seed,
            report_to="none",
            progress=False,
        )
    )
    model = AutoModelForImageClassification.from_pretrained(out / "model").eval()
    processor = AutoImageProcessor.from_pretrained(out / "model")
    metadata = read_metadata(dataset)
    test_subjects = set(results["subjects"]["test"])
    test = load_prepared(dataset).filter(lambda s: s in test_subjects, input_columns="subject")
    test = test.select(range(min(256, len(test))))
    with torch.no_grad():
        images = [np.asarray(image.convert("RGB")) for image in test["image"]]
        maps = torch.cat(
            [
                model(**processor(images[i : i + 32]), output_attentions=True).au_attention_maps
                for i in range(0, len(images), 32)
            ]
        )
        local = localisation_scores(model, processor, test, metadata["au_columns"], max_images=len(test))
    return {
        "test_f1_mean": results["test"]["f1_mean"],
        "frequency_prior_f1_mean": results["frequency_prior"]["f1_mean"],
        **attention_stats(maps),
        "mass_in_region_percent": float(np.mean([s["mass_in_region"] for s in local.values()])),
        "uniform_mass_percent": float(np.mean([s["uniform_mass"] for s in local.values()])),
        "steps": None if demo else steps,
        "epochs": results["epochs_run"],
        "recipe": "demo" if demo else "paper (shared classifier)",
        "seed": seed,
        "batch_size": batch,
        "image_size": image_size,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--biases", default="1.0,0.1,0.0")
    parser.add_argument("--dataset", default="outputs/demo/data")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--demo-recipe", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation, order, augmentation)")
    parser.add_argument("--name", default="attention_init", help="JSON file name under benchmarks/results")
    args = parser.parse_args(argv)
    if args.demo_recipe:
        args.image_size = 96
    biases = [float(b) for b in args.biases.split(",")]
    result = {"machine": machine_description(pick_device("auto")), "initialisation": {}, "trained": {}}
    for bias in biases:
        result["initialisation"][str(bias)] = at_initialisation(bias)
        print(f"init, bias {bias}: {result['initialisation'][str(bias)]}", flush=True)
    if not args.no_training:
        with tempfile.TemporaryDirectory() as tmp:
            for bias in biases:
                result["trained"][str(bias)] = after_training(
                    bias, args.dataset, args.steps, args.image_size, Path(tmp), args.demo_recipe, args.seed
                )
                print(f"trained, bias {bias}: {result['trained'][str(bias)]}", flush=True)
    print(f"wrote {write_json(args.name, result)}")
    return result


if __name__ == "__main__":
    main()
