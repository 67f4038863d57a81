"""Image reading/writing and working-size resampling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ctbird.errors import InputError
from ctbird.io import from_working_size, read_image, resolve_window, to_working_size, write_png


def test_read_image_modes(tmp_path):
    grey8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    np.testing.assert_allclose(read_image(tmp_path / "g8.png"), grey8[None] / 255.0, atol=1e-7)
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), grey16[None] / 65535.0, atol=1e-6)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb = read_image(tmp_path / "rgba.png")
    assert rgb.shape == (3, 3, 4) and rgb.dtype == np.float32
    assert rgb[0].min() == 1.0 and rgb[1:].max() == 0.0


def test_read_image_rejects_non_images(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError):
        read_image(tmp_path / "x.png")
    with pytest.raises(InputError):
        read_image(tmp_path / "missing.png")


def test_write_png_windows_and_bit_depths(tmp_path):
    hu = np.array([[-2000.0, -160.0], [40.0, 3000.0]])
    write_png(hu, tmp_path / "w.png", window="soft-tissue")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w.png")), [[0, 0], [128, 255]])
    write_png(np.array([[0.0, 1.0]]), tmp_path / "u16.png", bits=16)
    assert np.asarray(Image.open(tmp_path / "u16.png")).max() == 65535
    write_png(np.ones((3, 2, 2)) * 0.5, tmp_path / "rgb.png")
    assert np.asarray(Image.open(tmp_path / "rgb.png")).shape == (2, 2, 3)
    assert resolve_window("-100,100") == (-100.0, 100.0)
    with pytest.raises(InputError):
        resolve_window("cardiac")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left


def test_working_size_block_average_and_round_trip():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    small = to_working_size(image, 32)
    np.testing.assert_allclose(small, image.reshape(32, 2, 32, 2).mean(axis=(1, 3)), rtol=1e-6)
    smooth = np.outer(np.linspace(-1000, 1000, 48), np.ones(48)).astype(np.float32)
    back = from_working_size(to_working_size(smooth, 32), smooth.shape)
    assert back.shape == (48, 48) and np.abs(back - smooth)[4:-4].max() < 60
    assert to_working_size(smooth, 48) is not smooth


def test_non_square_images_are_padded_with_air_and_cropped_back():
    image = np.zeros((20, 40), np.float32)
    working = to_working_size(image, 40)
    assert working.shape == (40, 40) and working[0, 0] == -1024.0 and working[20, 20] == 0.0
    np.testing.assert_array_equal(from_working_size(working, (20, 40)), image)
