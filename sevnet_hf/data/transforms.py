"""Training and test transforms that keep images as uint8 until they reach the device.

The data loader only decodes and resizes (workers, CPU). Random crop + horizontal flip (train) or center crop
(test) and normalisation run on the device, batched, so a GPU does them instead of the CPU. Test-time processing
equals :class:`sevnet_hf.SEVNetImageProcessor` (resize to ``resize`` -> center crop ``crop`` -> normalise).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import default_collate


def resize_for_crop(crop_size: int) -> int:
    """The paper's 256 -> 224 ratio for any crop size (224 -> 256, 112 -> 128)."""
    return int(round(crop_size * 256 / 224))


def decode_resized(data: bytes | str, size: int) -> np.ndarray:
    """Decode an encoded image to a ``size x size`` RGB uint8 array (JPEG draft mode scales down while decoding)."""
    with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as image:
        if image.format == "JPEG" and min(image.size) >= 2 * size:
            image.draft("RGB", (size, size))
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return np.array(image)  # a writable copy (torch.from_numpy needs one)


def encoded_images(dataset):
    """The ``image`` column of a prepared dataset left encoded (``{"bytes", "path"}`` per row)."""
    from datasets import Image as ImageFeature

    return dataset.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))


def decode_row(images, index: int, size: int) -> np.ndarray:
    """Row ``index`` of :func:`encoded_images` decoded to ``size x size`` RGB uint8."""
    image = images[int(index)]["image"]
    return decode_resized(image["bytes"] if image.get("bytes") else image["path"], size)


class AUImageDataset(torch.utils.data.Dataset):
    """A prepared dataset (``sevnet_hf.data.schema``) as ``{"pixel_values": uint8 3xSxS, "labels": float N}``.

    Labels keep the schema's unknown code (-1), which the loss and the metric leave out. With ``decoded`` (a
    :class:`sevnet_hf.data.decoded_cache.DecodedFaces` of the same side) images are copied from that cache instead of
    decoded; the dataset then needs the ``_row`` column of :func:`~sevnet_hf.data.decoded_cache.number_rows`.
    """

    def __init__(self, dataset, au_columns: Sequence[str], size: int = 256, decoded=None):
        missing = [c for c in au_columns if c not in dataset.column_names]
        if missing:
            raise ValueError(f"prepared dataset has no column {missing[0]!r}; its columns are {dataset.column_names}")
        self.images = encoded_images(dataset)
        self.labels = torch.from_numpy(
            np.stack([np.asarray(dataset[c], dtype=np.float32) for c in au_columns], axis=1)
        )
        self.size = size
        self.decoded, self.rows = decoded, None
        if decoded is not None:
            from .decoded_cache import ROW_COLUMN

            if decoded.size != size:
                raise ValueError(f"the decoded cache {decoded.path} holds {decoded.size} px faces, not {size} px")
            if ROW_COLUMN not in dataset.column_names:
                raise ValueError(f"reading from a decoded cache needs the {ROW_COLUMN!r} column (number_rows)")
            self.rows = np.asarray(dataset[ROW_COLUMN], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch for DataLoader: from the decoded cache in one gather (``collate_uint8`` takes it as it is)."""
        if self.decoded is None:
            return [self[index] for index in indices]
        pixels = self.decoded.batch(self.rows[np.asarray(indices, dtype=np.int64)])
        labels = self.labels[torch.as_tensor(indices, dtype=torch.int64)]
        batch = CollatedItems({"pixel_values": pixels[i], "labels": labels[i]} for i in range(len(indices)))
        batch.collated = {"pixel_values": pixels, "labels": labels}
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.decoded is not None:
            return {"pixel_values": self.decoded[self.rows[index]], "labels": self.labels[index]}
        array = decode_row(self.images, index, self.size)
        return {"pixel_values": torch.from_numpy(array).permute(2, 0, 1).contiguous(), "labels": self.labels[index]}


class CollatedItems(list):
    """Items of a batch that was already stacked (``.collated``); other collators still see a list of items."""

    collated: dict[str, torch.Tensor]


def collate_uint8(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack uint8 images and float labels (a data collator for DataLoader and ``transformers.Trainer``). In a
    DataLoader worker the stack is written straight into shared memory (``default_collate``), saving a copy."""
    if isinstance(batch, CollatedItems):
        return batch.collated
    return {
        "pixel_values": default_collate([item["pixel_values"] for item in batch]),
        "labels": default_collate([item["labels"] for item in batch]),
    }


class DeviceAugment(nn.Module):
    """uint8 B x 3 x S x S on the device -> normalised float crops (random crop + flip when training).

    With ``random_crop=False`` training takes the test's center crop and keeps only the random flip.
    """

    def __init__(
        self,
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
        random_crop: bool = True,
    ):
        super().__init__()
        self.crop_size = crop_size
        self.channels_last = channels_last
        self.random_crop = random_crop
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"DeviceAugment expects uint8 images, got {images.dtype}")
        batch, _, height, width = images.shape
        crop = self.crop_size
        if crop > min(height, width):
            raise ValueError(f"crop size {crop} is larger than the images ({height}x{width})")
        if train:
            if self.random_crop:
                tops = torch.randint(0, height - crop + 1, (batch,), generator=generator).tolist()
                lefts = torch.randint(0, width - crop + 1, (batch,), generator=generator).tolist()
            else:
                tops, lefts = [(height - crop) // 2] * batch, [(width - crop) // 2] * batch
            flips = (torch.rand(batch, generator=generator) < 0.5).tolist()
            # Offsets and flips are drawn on the CPU and used as Python values: no host-to-device copy, so no sync.
            views = [images[i, :, t : t + crop, left : left + crop] for i, (t, left) in enumerate(zip(tops, lefts))]
            crops = torch.stack([view.flip(-1) if flip else view for view, flip in zip(views, flips)])
        else:
            top, left = (height - crop) // 2, (width - crop) // 2
            crops = images[:, :, top : top + crop, left : left + crop]
        out = (crops.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out.contiguous()
