"""Image processor for SEV-Net and its baselines: aligned face -> resize 256 -> center crop 224 -> normalise.

Accepts PIL images, numpy arrays and torch tensors, in RGB, grayscale, RGBA or 16-bit. Travels with checkpoints for
``trust_remote_code`` (no sibling imports needed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb_tensor(image) -> torch.Tensor:
    """Any supported image as a float32 3 x H x W tensor with values in [0, 255].

    PIL (any mode), numpy or torch; H x W (gray), H x W x C or C x H x W with C in 1, 3, 4 (alpha dropped);
    uint8, uint16 (scaled by 1/257), bool, or float (taken as [0, 1] when its maximum is <= 1).
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float32) / (257.0 if mode.startswith("I;16") else 1.0)
            image = np.clip(array, 0, 255)
        else:
            image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 257.0
        image = np.ascontiguousarray(image)
        tensor = torch.from_numpy(image if image.flags.writeable else image.copy())
        channels_last = True
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        channels_last = tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4)
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}; pass a PIL image, numpy array or torch tensor"
        )
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8) * 255
    was_float = tensor.is_floating_point()
    tensor = tensor.float()
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim == 3 and channels_last:
        tensor = tensor.permute(2, 0, 1)
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape HxW, HxWxC or CxHxW with C in 1, 3, 4; got {tuple(image.shape)}")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:
        tensor = tensor[:3]
    if was_float and tensor.numel() and float(tensor.max()) <= 1.0:
        tensor = tensor * 255.0
    return tensor.contiguous()


class SEVNetImageProcessor(BaseImageProcessor):
    r"""Resize (shorter side to `size`), center-crop to `crop_size`, scale to [0, 1] and normalise.

    Args:
        size (`int`, *optional*, defaults to 256): shorter side after resizing (aligned faces are 256x256).
        crop_size (`int`, *optional*, defaults to 224): side of the center crop fed to the model.
        image_mean (`list[float]`, *optional*, defaults to ImageNet's): per-channel mean (of the backbone's
            pretrained data config; see `from_backbone`).
        image_std (`list[float]`, *optional*, defaults to ImageNet's): per-channel standard deviation.
        do_resize / do_center_crop / do_normalize (`bool`, *optional*, default `True`): switch the steps.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 256,
        crop_size: int = 224,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_resize: bool = True,
        do_center_crop: bool = True,
        do_normalize: bool = True,
        **kwargs,
    ):
        if isinstance(size, dict):  # accept transformers' {"shortest_edge": n} / {"height": n, "width": n}
            size = size.get("shortest_edge", size.get("height"))
        if isinstance(crop_size, dict):
            crop_size = crop_size.get("height", crop_size.get("shortest_edge"))
        if do_center_crop and do_resize and crop_size > size:
            raise ValueError(f"SEVNetImageProcessor: crop_size ({crop_size}) must not exceed size ({size})")
        super().__init__(**kwargs)
        self.size = int(size)
        self.crop_size = int(crop_size)
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_STD)
        self.do_resize = do_resize
        self.do_center_crop = do_center_crop
        self.do_normalize = do_normalize

    @classmethod
    def from_backbone(cls, backbone: str, size: int = 256, crop_size: int = 224) -> SEVNetImageProcessor:
        """A processor whose mean/std come from the timm backbone's pretrained data config (no download)."""
        import timm

        cfg = timm.get_pretrained_cfg(backbone)
        mean = getattr(cfg, "mean", None) if cfg is not None else None
        std = getattr(cfg, "std", None) if cfg is not None else None
        return cls(size=size, crop_size=crop_size, image_mean=mean, image_std=std)

    def process_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """One float 3 x H x W image in [0, 255] -> normalised 3 x crop x crop."""
        if self.do_resize:
            height, width = image.shape[-2:]
            scale = self.size / min(height, width)
            new_size = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
            if new_size != (height, width):
                image = F.interpolate(
                    image[None], size=new_size, mode="bilinear", align_corners=False, antialias=True
                )[0]
        if self.do_center_crop:
            height, width = image.shape[-2:]
            crop = min(self.crop_size, height, width)
            top, left = (height - crop) // 2, (width - crop) // 2
            image = image[:, top : top + crop, left : left + crop]
        image = image / 255.0
        if self.do_normalize:
            mean = torch.tensor(self.image_mean).view(3, 1, 1)
            std = torch.tensor(self.image_std).view(3, 1, 1)
            image = (image - mean) / std
        return image

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Process one image or a list of images into ``{"pixel_values": B x 3 x crop x crop}``."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.ndim == 4)
        batch = [images] if single else list(images)
        if not batch:
            raise ValueError("SEVNetImageProcessor got an empty list of images")
        pixel_values = torch.stack([self.process_tensor(to_rgb_tensor(image)) for image in batch])
        data = {"pixel_values": pixel_values.numpy() if return_tensors == "np" else pixel_values}
        return BatchFeature(data=data)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)
