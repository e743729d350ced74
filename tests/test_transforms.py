"""DeviceAugment: random crop + flip from the drawn offsets, center crop equal to the image processor, uint8 only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sevnet_hf import SEVNetImageProcessor
from sevnet_hf.data.transforms import DeviceAugment, decode_resized

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def batch(count=6, side=20, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (count, 3, side, side), dtype=np.uint8))


def normalise(crop: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(3, 1, 1) * 255
    std = torch.tensor(STD).view(3, 1, 1) * 255
    return (crop.float() - mean) / std


def test_training_crops_and_flips_follow_the_drawn_offsets():
    images = batch()
    augment = DeviceAugment(16, MEAN, STD)
    out = augment(images, train=True, generator=torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)  # the same draws, in the same order, by hand
    tops = torch.randint(0, 5, (6,), generator=draws).tolist()
    lefts = torch.randint(0, 5, (6,), generator=draws).tolist()
    flips = (torch.rand(6, generator=draws) < 0.5).tolist()
    assert 0 < sum(flips) < 6  # both cases are exercised
    for i, (top, left, flip) in enumerate(zip(tops, lefts, flips)):
        crop = images[i, :, top : top + 16, left : left + 16]
        expected = normalise(crop.flip(-1) if flip else crop)
        torch.testing.assert_close(out[i], expected)


def test_without_random_crop_training_takes_the_center_crop_and_still_flips():
    images = batch(count=8)
    augment = DeviceAugment(16, MEAN, STD, random_crop=False)
    out = augment(images, train=True, generator=torch.Generator().manual_seed(3))
    center = augment(images, train=False)
    flipped = [bool(torch.equal(out[i], center[i].flip(-1))) for i in range(8)]
    for i in range(8):
        assert torch.equal(out[i], center[i]) or flipped[i]
    assert 0 < sum(flipped) < 8  # flips are still drawn, and not for every face


def test_test_time_crop_equals_the_image_processor():
    face = (np.random.default_rng(1).random((256, 256, 3)) * 255).astype(np.uint8)
    encoded = Image.fromarray(face)
    processor = SEVNetImageProcessor(size=64, crop_size=56)
    expected = processor(encoded)["pixel_values"]
    resized = torch.from_numpy(np.array(encoded.resize((64, 64), Image.BILINEAR, reducing_gap=None)))
    augment = DeviceAugment(56, processor.image_mean, processor.image_std, channels_last=True)
    out = augment(resized.permute(2, 0, 1).unsqueeze(0), train=False)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=0.02, rtol=0)  # resize implementations differ by rounding only


def test_float_images_and_oversized_crops_are_refused():
    augment = DeviceAugment(16, MEAN, STD)
    with pytest.raises(TypeError, match="uint8"):
        augment(batch().float(), train=False)
    with pytest.raises(ValueError, match="larger than the images"):
        DeviceAugment(32, MEAN, STD)(batch(), train=True)


def test_decode_resized_gives_square_rgb():
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray((np.random.default_rng(2).random((90, 70)) * 255).astype(np.uint8)).save(buffer, "PNG")
    array = decode_resized(buffer.getvalue(), 32)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8 and array.flags.writeable


def test_trainer_collator_passes_random_crop_through():
    from sevnet_hf.training.trainer_utils import AUDataCollator

    processor = SEVNetImageProcessor(size=20, crop_size=16)
    items = [{"pixel_values": image, "labels": torch.zeros(3)} for image in batch(count=8)]
    center = AUDataCollator(processor, train=False)(items)["pixel_values"]
    for random_crop in (False, True):
        out = AUDataCollator(processor, train=True, seed=1, random_crop=random_crop)(items)["pixel_values"]
        centred = [torch.equal(out[i], center[i]) or torch.equal(out[i], center[i].flip(-1)) for i in range(8)]
        assert all(centred) is not random_crop  # random crops move some faces off the center crop
