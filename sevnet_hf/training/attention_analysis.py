"""Where attention lands: localisation scores against known AU regions, and side-by-side attention figures.

On the synthetic set every row records, for each AU, the box of the aligned face its drawing changes
(``au_regions``, aligned-face pixels). For faces where an AU is present we report the attention mass that falls
inside its box and how often the attention peak does, next to the chance level of a uniform map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic_io import save_atomic


def _cell_overlap(box, grid: tuple[int, int], crop: int, left: int, top: int, scale: float) -> np.ndarray:
    """Fraction of each attention cell (h x w over the crop) inside ``box`` (aligned pixels)."""
    height, width = grid
    x0, y0, x1, y1 = [float(v) / scale for v in box]  # aligned -> resized-image pixels
    x0, x1, y0, y1 = x0 - left, x1 - left, y0 - top, y1 - top  # -> crop pixels
    ys = np.linspace(0, crop, height + 1)
    xs = np.linspace(0, crop, width + 1)
    over_y = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0, None) / np.diff(ys)
    over_x = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0, None) / np.diff(xs)
    return over_y[:, None] * over_x[None, :]


def _crop_geometry(processor, aligned_size: int) -> tuple[int, int, int, float]:
    """(crop side, crop's left and top offsets in resized pixels, aligned pixels per resized pixel) of ``processor``."""
    resize, crop_size = processor.square_sizes()
    left = top = (resize - crop_size) // 2
    return crop_size, left, top, aligned_size / resize


def localisation_scores(
    model,
    processor,
    dataset,
    au_columns: list[str],
    max_images: int = 400,
    batch_size: int = 32,
    aligned_size: int = 256,
):
    """Per AU: mean attention mass inside the AU's region, share of attention peaks inside it, and the uniform-map
    chance level, over faces where the AU is present. Needs ``au_regions`` (one box per AU in ``au_columns`` order,
    in pixels of the ``aligned_size`` aligned face) and a model returning attention maps."""
    return _scan(model, processor, dataset, au_columns, max_images, batch_size, aligned_size)[0]


def attention_summary(
    model, processor, dataset, au_columns: list[str], max_images: int = 400, aligned_size: int = 256
) -> dict:
    """What the attention issue's bars read, on the first ``max_images`` faces of ``dataset``:

    - ``mass_over_uniform``: mean over AUs of (attention mass inside the AU's region) / (a uniform map's), faces
      where the AU is present (1.0: no better than uniform);
    - ``map_tv``: mean over faces of the mean total variation distance between the maps of two different AUs;
    - ``grid``: the maps' (h, w);
    - ``per_au``: :func:`localisation_scores`.
    """
    per_au, tv, grid = _scan(model, processor, dataset, au_columns, max_images, 32, aligned_size)
    ratios = [v["mass_in_region"] / v["uniform_mass"] for v in per_au.values() if v["uniform_mass"] > 0]
    return {
        "mass_over_uniform": float(np.mean(ratios)) if ratios else float("nan"),
        "map_tv": float(np.mean(tv)) if tv else float("nan"),
        "faces": len(tv),
        "grid": list(grid),
        "per_au": per_au,
    }


@torch.no_grad()
def _scan(model, processor, dataset, au_columns, max_images, batch_size, aligned_size):
    from .attention_health import pairwise_map_tv

    if "au_regions" not in dataset.column_names:
        raise ValueError("localisation needs the synthetic set's au_regions column (per-AU boxes in aligned pixels)")
    model.eval()
    crop_size, left, top, scale = _crop_geometry(processor, aligned_size)
    count = min(max_images, len(dataset))
    mass = {c: [] for c in au_columns}
    peak = {c: [] for c in au_columns}
    chance = {c: [] for c in au_columns}
    tv: list[float] = []
    grid: tuple[int, ...] = ()
    for start in range(0, count, batch_size):
        rows = dataset[start : min(count, start + batch_size)]
        images = [np.asarray(im.convert("RGB")) for im in rows["image"]]
        out = model(**processor(images), output_attentions=True)
        if out.au_attention_maps is None:
            raise ValueError(f"{type(model).__name__} returns no attention maps")
        tv.extend(pairwise_map_tv(out.au_attention_maps).tolist())
        maps = out.au_attention_maps.float().numpy()
        grid = maps.shape[-2:]
        for i in range(len(images)):
            for k, column in enumerate(au_columns):
                if rows[column][i] != 1:
                    continue
                overlap = _cell_overlap(rows["au_regions"][i][k], grid, crop_size, left, top, scale)
                attention = maps[i, k]
                mass[column].append(float((attention * overlap).sum()))
                peak_cell = np.unravel_index(attention.argmax(), attention.shape)
                peak[column].append(float(overlap[peak_cell] >= 0.5))
                chance[column].append(float(overlap.mean()))
    summary = {}
    for column in au_columns:
        if mass[column]:
            summary[column] = {
                "mass_in_region": 100 * float(np.mean(mass[column])),
                "peak_in_region": 100 * float(np.mean(peak[column])),
                "uniform_mass": 100 * float(np.mean(chance[column])),
                "faces": len(mass[column]),
            }
    return summary, tv, grid


@torch.no_grad()
def feature_locality(
    model,
    processor,
    dataset,
    au_columns: list[str],
    aligned_size: int = 256,
    min_overlap: float = 0.25,
    batch_size: int = 64,
) -> dict:
    """Whether the visual map holds each AU where the AU is, which attention needs before it can land there.

    Per AU and map cell, a linear probe (logistic regression on that cell's d_v features, standardised) is fitted on
    the faces of every other subject (sorted names) and scored by ROC-AUC on the rest. Per AU: the mean ROC-AUC over
    the cells that lie in the AU's region (mean overlap with its ``au_regions`` box >= ``min_overlap``), over the other
    cells, the best cell's, and whether the best cell is in the region. If region and other cells score alike, the
    features carry the AU everywhere (a receptive field that spans the face) and no map can prefer the region.
    ``model`` returns ``visual_features`` (B x d_v x h x w); ``dataset`` has ``image``, ``subject``, ``au_regions``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    for column in ("subject", "au_regions"):
        if column not in dataset.column_names:
            raise ValueError(f"feature_locality needs the dataset's {column!r} column")
    if len(dataset) == 0:
        raise ValueError("feature_locality needs at least one face (the dataset is empty)")
    model.eval()
    crop_size, left, top, scale = _crop_geometry(processor, aligned_size)
    features, labels = [], []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        out = model(**processor([np.asarray(im.convert("RGB")) for im in rows["image"]]))
        features.append(out.visual_features.float().flatten(2).numpy())
        labels.append(np.stack([np.asarray(rows[c]) for c in au_columns], axis=1))
    features, labels = np.concatenate(features), np.concatenate(labels)  # B x d_v x L, B x N
    grid = tuple(out.visual_features.shape[-2:])
    subjects = np.asarray(dataset["subject"])
    fit_part = np.isin(subjects, sorted(set(subjects))[::2])
    regions = dataset["au_regions"]
    summary = {}
    for k, column in enumerate(au_columns):
        known = (labels[:, k] == 0) | (labels[:, k] == 1)
        fit, score = known & fit_part, known & ~fit_part
        if len(set(labels[fit, k])) < 2 or len(set(labels[score, k])) < 2:
            continue  # a half without both classes: no probe, no score
        aucs = []
        for cell in range(features.shape[-1]):
            x = features[:, :, cell]
            mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
            probe = LogisticRegression(C=0.1, max_iter=300).fit((x[fit] - mean) / std, labels[fit, k])
            aucs.append(roc_auc_score(labels[score, k], probe.decision_function((x[score] - mean) / std)))
        aucs = np.asarray(aucs)
        overlap = np.mean([_cell_overlap(box[k], grid, crop_size, left, top, scale).ravel() for box in regions], 0)
        inside = overlap >= min_overlap
        summary[column] = {
            "region_cells": int(inside.sum()),
            "roc_auc_region": float(aucs[inside].mean()) if inside.any() else float("nan"),
            "roc_auc_other": float(aucs[~inside].mean()) if (~inside).any() else float("nan"),
            "roc_auc_best": float(aucs.max()),
            "best_cell_in_region": bool(inside[aucs.argmax()]),
        }
    return summary


def receptive_field(backbone: torch.nn.Module, pixel_values: torch.Tensor) -> dict:
    """How much of the face each cell of the visual map sees: its effective receptive field (ERF).

    For every cell, the gradient of the sum of its features with respect to the input pixels (absolute, summed over
    colour channels, averaged over the images of ``pixel_values``) is the ERF's weight map. Per cell: ``own_cell``,
    the share of that weight inside the cell's own patch of pixels (a cell that sees only its patch: 1.0); and
    ``radius_50``, the Chebyshev distance in pixels from the cell's centre within which half of the weight lies (half
    the crop's side: the cell sees the whole face). Summary over all cells and over the
    cells of the map's outer ring (``edge``), whose weight zero padding pushes inward. ``backbone(pixel_values)``
    must return the B x C x h x w map (``get_backbone()`` of a model).
    """
    was_training = backbone.training
    backbone.eval()
    pixels = pixel_values.detach().float().requires_grad_(True)
    with torch.enable_grad():
        features = backbone(pixels)
        height, width = features.shape[-2:]
        side = pixels.shape[-1]
        cell_h, cell_w = pixels.shape[-2] / height, side / width
        ys, xs = np.mgrid[0 : pixels.shape[-2], 0:side] + 0.5
        cells = {}
        for row in range(height):
            for column in range(width):
                (grad,) = torch.autograd.grad(features[:, :, row, column].sum(), pixels, retain_graph=True)
                weight = grad.abs().sum(1).mean(0).numpy()
                weight = weight / max(float(weight.sum()), 1e-30)
                distance = np.maximum(
                    np.abs(ys - (row + 0.5) * cell_h) / cell_h * cell_w, np.abs(xs - (column + 0.5) * cell_w)
                )
                inside = (np.abs(ys - (row + 0.5) * cell_h) <= cell_h / 2) & (
                    np.abs(xs - (column + 0.5) * cell_w) <= cell_w / 2
                )
                order = np.argsort(distance.ravel())
                half = np.searchsorted(np.cumsum(weight.ravel()[order]), 0.5)
                cells[(row, column)] = {
                    "own_cell": float(weight[inside].sum()),
                    "radius_50": float(distance.ravel()[order][min(half, order.size - 1)]),
                }
    backbone.train(was_training)

    def mean(key, keep=lambda cell: True):
        values = [v[key] for cell, v in cells.items() if keep(cell)]
        return float(np.mean(values)) if values else float("nan")

    def on_edge(cell):
        return cell[0] in (0, height - 1) or cell[1] in (0, width - 1)

    return {
        "grid": [int(height), int(width)],
        "crop": int(side),
        "own_cell": mean("own_cell"),
        "radius_50": mean("radius_50"),
        "edge_own_cell": mean("own_cell", on_edge),
        "edge_radius_50": mean("radius_50", on_edge),
        "uniform_own_cell": 1.0 / (height * width),
    }


def side_by_side_attention(models: dict, processor, faces: list[np.ndarray], path: Path) -> Path:
    """One block per face: a row of per-AU attention heat maps for each model (the paper's Fig. 4)."""
    from PIL import Image

    from ..inference.overlay import attention_grid

    blocks = []
    for face in faces:
        for name, model in models.items():
            with torch.no_grad():
                out = model(**processor(face), output_attentions=True)
            if out.au_attention_maps is None:
                continue
            probabilities = torch.sigmoid(out.logits)[0].numpy()
            panel = attention_grid(
                face, out.au_attention_maps[0].float().numpy(), model.config.au_labels, probabilities
            )
            label = np.full((22, panel.shape[1], 3), 255, np.uint8)
            _draw_text(label, name)
            blocks.append(np.concatenate([label, panel[..., :3]], axis=0))
    width = max(b.shape[1] for b in blocks)
    canvas = np.full((sum(b.shape[0] for b in blocks), width, 3), 255, np.uint8)
    top = 0
    for block in blocks:
        canvas[top : top + block.shape[0], : block.shape[1]] = block
        top += block.shape[0]
    save_atomic(path, Image.fromarray(canvas).save)
    return path


def _draw_text(canvas: np.ndarray, text: str) -> None:
    import cv2

    cv2.putText(canvas, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
