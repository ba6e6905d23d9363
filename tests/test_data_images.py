"""Reading images and masks in every mode, and batching them for a backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from uadflows.data import (DatasetError, Sample, image_size, load_batch, read_image, read_mask,
                           sample_mask)


@pytest.fixture
def rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    return tmp_path / "rgb.png", pixels


def test_read_image_modes(tmp_path, rgb):
    path, pixels = rgb
    assert np.array_equal(read_image(path), pixels)
    gray = pixels[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.bmp")
    assert np.array_equal(read_image(tmp_path / "gray.bmp"), np.repeat(gray[..., None], 3, 2))
    rgba = np.concatenate([pixels, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), pixels)  # alpha dropped
    sixteen = (gray.astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "gray16.png")
    out = read_image(tmp_path / "gray16.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    assert np.abs(out[..., 1].astype(int) - gray).max() <= 1  # rescaled, not clipped at 255


def test_read_mask_values_and_modes(tmp_path):
    values = np.zeros((6, 8), np.uint8)
    values[1, 2], values[3, 4], values[5, 7] = 1, 2, 255  # VisA class ids and 255
    Image.fromarray(values).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), values != 0)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[2, 3, 1] = 9
    Image.fromarray(colour).save(tmp_path / "c.png")
    expected = np.zeros((6, 8), bool)
    expected[2, 3] = True
    assert np.array_equal(read_mask(tmp_path / "c.png"), expected)
    palette = Image.fromarray(values).convert("P")
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), values != 0)


def test_image_size_reads_header_only(rgb):
    path, _ = rgb
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated: size still known
    assert image_size(path) == (20, 30)
    with pytest.raises(DatasetError, match="truncated"):
        read_image(path)
    with pytest.raises(DatasetError, match="file not found"):
        image_size(path.with_name("gone.png"))


def test_load_batch_resizes_mixed_sizes(tmp_path, rgb):
    path, pixels = rgb
    Image.fromarray(pixels[:10, :10, 0]).save(tmp_path / "small.png")
    batch = load_batch([path, Sample(tmp_path / "small.png", "test", 0, "good")], (16, 24))
    assert batch.shape == (2, 3, 16, 24) and batch.dtype == torch.float32
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    expected = F.interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255,
                             size=(16, 24), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(batch[0], expected[0].clamp(0, 1), atol=1e-6)
    same = load_batch([path], (20, 30))  # no resize at the native size
    assert torch.equal(same[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    with pytest.raises(ValueError, match="no images"):
        load_batch([], (8, 8))


def test_sample_mask_is_empty_for_normal_images(tmp_path, rgb):
    path, _ = rgb
    mask = sample_mask(Sample(path, "test", 0, "good"))
    assert mask.shape == (20, 30) and mask.dtype == bool and not mask.any()
