"""A tiny prepared dataset made through the real preparation path (schema.prepare_dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sevnet_hf.data.align import canonical_template
from sevnet_hf.data.schema import FrameRecord, prepare_dataset


def make_prepared_dataset(out_dir: Path, aus=(1, 2, 4), subjects_per_part: int = 2, frames: int = 6, size: int = 96):
    """Faces are flat images whose quadrant brightness follows the labels (learnable), with the 5-point template
    (scaled to the image) as landmarks so alignment is a pure scaling. Some labels are unknown (-1); ``au_regions`` holds each AU's quadrant."""
    template = canonical_template(size)
    partition = {}
    units = []
    for part in (1, 2, 3):
        for s in range(subjects_per_part):
            subject = f"P{part}S{s}"
            partition[subject] = part

            seed = len(units)

            def thunk(subject=subject, seed=seed):
                local = np.random.default_rng(seed)
                for frame in range(frames):
                    labels = {au: int(local.random() < 0.4) for au in aus}
                    if frame == 0:
                        labels[aus[0]] = -1
                    image = (local.random((size, size, 3)) * 60 + 60).astype(np.uint8)
                    regions = []
                    for k, au in enumerate(aus):
                        y, x = divmod(k, 2)
                        regions.append([x * size // 2, y * size // 2, (x + 1) * size // 2, (y + 1) * size // 2])
                        if labels[au] == 1:
                            image[y * size // 2 : (y + 1) * size // 2, x * size // 2 : (x + 1) * size // 2] += 90
                    yield FrameRecord(
                        subject,
                        "T1",
                        frame,
                        labels,
                        image=image,
                        landmarks=template.copy(),
                        source=f"{subject}/T1/{frame}",
                        extra={"au_regions": regions},
                    )

            units.append((subject, thunk))
    prepare_dataset(
        units,
        out_dir,
        aus=list(aus),
        source="tiny-test",
        partition=partition,
        partition_name="test parts",
        progress=False,
        box_keys=("au_regions",),
    )
    return out_dir
