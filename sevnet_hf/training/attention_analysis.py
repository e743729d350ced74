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
    resize, crop_size = processor.square_sizes()
    scale = aligned_size / resize
    left = top = (resize - crop_size) // 2
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
