"""Image processor for SEV-Net and its baselines: aligned face -> resize 256 -> center crop 224 -> normalise.

Accepts PIL images, numpy arrays and torch tensors, in RGB, grayscale, RGBA or 16-bit. A transformers (>= 5)
``TorchvisionBackend`` processor: settings are class defaults, instance attributes and per-call keyword arguments, as
for every transformers image processor. Travels with checkpoints for ``trust_remote_code`` (no sibling imports).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb_tensor(image, convert_rgb: bool = True, channels_last: bool | None = None) -> torch.Tensor:
    """Any supported image as a float32 3 x H x W tensor with values in [0, 255].

    PIL (any mode), numpy or torch; H x W (gray), H x W x C or C x H x W with C in 1, 3, 4 (alpha dropped; a 3-axis
    array whose first axis has 1, 3 or 4 entries and whose last has not is taken as C x H x W, unless
    ``channels_last`` says which); uint8, uint16 (scaled by 1/257), bool, or float (taken as [0, 1] when its maximum
    is <= 1). ``convert_rgb=False`` keeps an array's channels as they are (C x H x W, any C).
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
        detected = not (image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4))
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        detected = tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4)
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}; pass a PIL image, numpy array or torch tensor"
        )
    channels_last = detected if channels_last is None else channels_last
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8) * 255
    was_float = tensor.is_floating_point()
    tensor = tensor.float()
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim == 3 and channels_last:
        tensor = tensor.permute(2, 0, 1)
    if tensor.ndim != 3 or (convert_rgb and tensor.shape[0] not in (1, 3, 4)):
        raise ValueError(f"expected an image of shape HxW, HxWxC or CxHxW with C in 1, 3, 4; got {tuple(image.shape)}")
    if convert_rgb and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif convert_rgb and tensor.shape[0] == 4:
        tensor = tensor[:3]
    if was_float and tensor.numel() and float(tensor.max()) <= 1.0:
        tensor = tensor * 255.0
    return tensor.contiguous()


class SEVNetImageProcessor(TorchvisionBackend):
    r"""Resize, center-crop, scale to [0, 1] and normalise: aligned face -> resize 256 -> center crop 224.

    Every argument can also be given per call (``processor(images, size=..., crop_size=..., do_normalize=False)``).

    Args:
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"shortest_edge": 256}`):
            `{"shortest_edge": n}` resizes the shorter side to n (aspect kept; aligned faces are 256x256);
            `{"height": h, "width": w}` resizes to exactly h x w; an int n means `{"shortest_edge": n}`.
        crop_size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 224, "width": 224}`):
            The center crop fed to the model; an int n means n x n.
        image_mean (`list[float]`, *optional*, defaults to ImageNet's): per-channel mean (of the backbone's
            pretrained data config; see `from_backbone`).
        image_std (`list[float]`, *optional*, defaults to ImageNet's): per-channel standard deviation.
        do_resize / do_center_crop / do_rescale / do_normalize (`bool`, *optional*, default `True`): the steps.
        rescale_factor (`float`, *optional*, defaults to 1/255): applied to pixel values in [0, 255] (16-bit and
            float inputs are first brought to [0, 255], see `to_rgb_tensor`).
        do_convert_rgb (`bool`, *optional*, defaults to `True`): images become 3-channel RGB (gray repeated, alpha
            dropped), which the backbone needs; `False` keeps the channels as given (then `image_mean`/`image_std`
            need one value per channel).

    Resizing is bilinear with antialiasing (``torch.nn.functional.interpolate``), one image at a time, so outputs do not
    depend on batch composition. Registered for both of transformers' backend names ("torchvision" and "pil").
    """

    model_input_names = ["pixel_values"]
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    default_to_square = False  # an int size is the shorter side
    resample = PILImageResampling.BILINEAR  # what _process_one does (bilinear, antialiased)
    image_mean = list(IMAGENET_MEAN)
    image_std = list(IMAGENET_STD)
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check(self.do_resize, self.size, self.do_center_crop, self.crop_size)

    @staticmethod
    def _check(do_resize, size, do_center_crop, crop_size) -> None:
        edge = getattr(size, "shortest_edge", None) if size is not None else None
        if do_resize and do_center_crop and edge is not None and crop_size is not None:
            if max(crop_size.height, crop_size.width) > edge:
                raise ValueError(
                    f"SEVNetImageProcessor: crop_size ({dict(crop_size)}) must not exceed size ({dict(size)})"
                )

    def square_sizes(self) -> tuple[int, int]:
        """(shorter side after resizing, side of the square crop): the two numbers the training augmentation and the
        attention figures work with. A ``{"height", "width"}`` resize or a non-square crop has no such pair."""
        size, crop = self.size, self.crop_size
        if getattr(size, "shortest_edge", None) is None or crop.height != crop.width:
            raise ValueError(f"SEVNetImageProcessor: expected a shortest-edge size and a square crop, got {size}, {crop}")
        return size.shortest_edge, crop.height

    @classmethod
    def from_backbone(cls, backbone: str, size: int = 256, crop_size: int = 224) -> SEVNetImageProcessor:
        """A processor whose mean/std come from the timm backbone's pretrained data config (no download)."""
        import timm

        cfg = timm.get_pretrained_cfg(backbone)
        mean = getattr(cfg, "mean", None) if cfg is not None else None
        std = getattr(cfg, "std", None) if cfg is not None else None
        kwargs = {"image_mean": list(mean), "image_std": list(std)} if mean is not None and std is not None else {}
        return cls(size=size, crop_size=crop_size, **kwargs)

    def process_image(self, image, do_convert_rgb: bool | None = None, input_data_format=None, **kwargs) -> torch.Tensor:
        """One raw image -> float C x H x W in [0, 255] (``to_rgb_tensor``: 16-bit, float, gray, RGBA handled)."""
        layout = {"channels_last": True, "channels_first": False}.get(getattr(input_data_format, "value", input_data_format))
        return to_rgb_tensor(image, convert_rgb=do_convert_rgb is not False, channels_last=layout)

    def _preprocess(
        self,
        images: list[torch.Tensor],
        do_resize: bool,
        size,
        do_center_crop: bool,
        crop_size,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        self._check(do_resize, size, do_center_crop, crop_size)
        if not images:
            raise ValueError("SEVNetImageProcessor got an empty list of images")
        settings = (do_resize, size, do_center_crop, crop_size, do_rescale, rescale_factor, do_normalize)
        processed = [self._process_one(image, *settings, image_mean, image_std) for image in images]
        pixel_values = torch.stack(processed)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors or "pt")

    @staticmethod
    def _process_one(
        image, do_resize, size, do_center_crop, crop_size, do_rescale, rescale_factor, do_normalize, mean, std
    ) -> torch.Tensor:
        """One float 3 x H x W image in [0, 255] -> 3 x crop_h x crop_w."""
        if do_resize:
            height, width = image.shape[-2:]
            if size.shortest_edge is not None:
                edge = size.shortest_edge
                scale = edge / min(height, width)
                new_size = (max(edge, round(height * scale)), max(edge, round(width * scale)))
            else:
                new_size = (size.height, size.width)
            if new_size != (height, width):
                image = F.interpolate(
                    image[None], size=new_size, mode="bilinear", align_corners=False, antialias=True
                )[0]
        if do_center_crop:
            height, width = image.shape[-2:]
            crop_h, crop_w = min(crop_size.height, height), min(crop_size.width, width)
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            image = image[:, top : top + crop_h, left : left + crop_w]
        if do_rescale:  # the default divides by 255, as earlier versions did (bit-identical outputs)
            image = image / 255.0 if rescale_factor == 1 / 255 else image * rescale_factor
        if do_normalize:
            image = (image - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        return image
