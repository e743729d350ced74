"""The best any AU embedding can do with a zero-shot run's trained weights: an upper bound for any description.

    python benchmarks/zeroshot_oracle.py [--workdir outputs/zeroshot] [--dataset <workdir>/data]

For every trained model of a ``sevnet-hf zeroshot`` run (``<workdir>/train_seed*``) and each held-out AU, an embedding
w̄ (the vector Eq. 4 compares with V) is fitted by Adam to the held-out AU's labels on the fold's *training* subjects,
through the model's own attention (Eq. 4-6) and shared classifier, every trained weight frozen; its ROC-AUC on the
unseen test subjects is what a description could reach at best, since a description only chooses w̄. The fit starts
from the ``--starts`` trained AUs' embeddings whose logits rank the training faces best, and the start with the best
training ROC-AUC is kept. Uses labels the zero-shot model never saw: a reference, not a zero-shot result. Printed next
to the own descriptions' ROC-AUC from ``zeroshot.json``; writes benchmarks/results/``--name``.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import write_runs  # noqa: E402


@torch.no_grad()
def visual_maps(model, processor, part, batch: int = 64) -> torch.Tensor:
    """The backbone's map V of every face of ``part`` (B x d_v x h x w)."""
    maps = []
    for start in range(0, len(part), batch):
        faces = [np.asarray(face.convert("RGB")) for face in part[start : start + batch]["image"]]
        maps.append(model.get_backbone()(processor(faces)["pixel_values"]))
    return torch.cat(maps)


def embedding_logits(model, visual: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """The shared classifier's logit for one AU embedding over the faces of ``visual`` (Eq. 4-7)."""
    from sevnet_hf.modeling_sevnet import cross_modality_attention

    attended, _ = cross_modality_attention(visual, embedding[None])
    return model.classifier(attended)[:, 0]


def fit_embedding(model, visual, labels: np.ndarray, start: torch.Tensor, steps: int) -> torch.Tensor:
    """Adam on the BCE of one embedding's logits against ``labels`` (unknown labels left out), weights frozen."""
    from sevnet_hf.training.zeroshot import known_labels

    known = torch.as_tensor(known_labels(labels))
    targets = torch.as_tensor(labels, dtype=torch.float32)[known]
    embedding = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=0.05)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(embedding_logits(model, visual[known], embedding), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return embedding.detach()


def measure_run(run_dir: Path, dataset, holdout: list[str], starts: int, steps: int) -> dict:
    from sevnet_hf.training.demo import load_trained, subjects_part
    from sevnet_hf.training.zeroshot import roc_auc

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    model, processor = load_trained(run_dir / "model")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    parts = {}
    for split in ("train", "test"):
        part = subjects_part(dataset, results["subjects"][split])
        parts[split] = (part, visual_maps(model, processor, part))
    with torch.no_grad():
        trained = model.sevnet.compute_au_embeddings()
    row = {"run": run_dir.name, "aus": {}}
    for au in holdout:
        (train_part, train_visual), (test_part, test_visual) = parts["train"], parts["test"]
        train_labels = np.asarray(train_part[au], dtype=float)
        test_labels = np.asarray(test_part[au], dtype=float)

        def auc(visual, labels, embedding):
            with torch.no_grad():
                return roc_auc(embedding_logits(model, visual, embedding).numpy(), labels)

        fits = [auc(train_visual, train_labels, e) for e in trained]
        fits = [f if f == f else -1.0 for f in fits]  # NaN (one class only) last
        best = None
        for k in np.argsort(fits)[::-1][:starts]:
            embedding = fit_embedding(model, train_visual, train_labels, trained[k], steps)
            train_auc = auc(train_visual, train_labels, embedding)
            if best is None or train_auc > best["train_roc_auc"]:
                best = {
                    "start": model.config.au_labels[k],
                    "train_roc_auc": train_auc,
                    "test_roc_auc": auc(test_visual, test_labels, embedding),
                }
        row["aus"][au] = best
    return row


def main(argv: list[str] | None = None) -> int:
    from sevnet_hf.data.schema import load_prepared

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="outputs/zeroshot", help="a sevnet-hf zeroshot --output_dir")
    parser.add_argument("--dataset", default=None, help="its prepared dataset (default: <workdir>/data)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--name", default="zeroshot_oracle")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    summary_file = workdir / "zeroshot.json"
    if not summary_file.is_file():
        parser.error(f"{summary_file} does not exist: run sevnet-hf zeroshot --output_dir {workdir} first")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    dataset = load_prepared(Path(args.dataset) if args.dataset else workdir / "data")
    torch.manual_seed(0)
    rows, lines = [], ["run          AU     own description  oracle embedding (train -> test ROC-AUC, start)"]
    for seed in summary["seeds"]:
        row = measure_run(workdir / f"train_seed{seed}", dataset, summary["holdout_aus"], args.starts, args.steps)
        for au, best in row["aus"].items():
            own = summary["per_seed"][str(seed)]["descriptions"][au]["roc_auc"]
            best["own_description_roc_auc"] = own
            lines.append(
                f"{row['run']:<12} {au:<6} {own:15.3f}  {best['train_roc_auc']:.3f} -> {best['test_roc_auc']:.3f} "
                f"({best['start']})"
            )
        rows.append(row)
    means = {
        key: float(np.mean([b[key] for r in rows for b in r["aus"].values()]))
        for key in ("own_description_roc_auc", "test_roc_auc")
    }
    lines.append(
        f"mean over held-out AUs and seeds: own descriptions {means['own_description_roc_auc']:.3f}, "
        f"oracle embedding {means['test_roc_auc']:.3f}"
    )
    write_runs(args.name, rows, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
