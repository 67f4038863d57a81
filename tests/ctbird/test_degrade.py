"""Restoration degradations (:func:`ctbird.simulate.degrade_image`) and the kernel metrics of :mod:`ctbird.metrics`."""

import numpy as np
import pytest
import torch

from ctbird.errors import ConfigError, InputError
from ctbird.metrics import kernel_error, kernel_sigma
from ctbird.restoration_baselines import gaussian_kernel
from ctbird.simulate import degrade_image, inpaint_mask, motion_kernel


def _image(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (0.2 + 0.6 * (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).float())[None]


def test_motion_kernel_and_kernel_error():
    k = motion_kernel(21, seed=3)
    assert k.shape == (21, 21) and torch.all(k >= 0) and abs(float(k.sum()) - 1.0) < 1e-5
    assert torch.equal(k, motion_kernel(21, seed=3)) and not torch.equal(k, motion_kernel(21, seed=4))
    assert int((k > 0).sum()) > 21  # a path, not a dot
    g = gaussian_kernel(21, 3.0)
    assert kernel_error(g, g) < 1e-9
    assert kernel_error(np.roll(g, (2, -1), axis=(0, 1)), g) < 0.05  # shift-invariant up to k // 4
    assert kernel_error(np.roll(g, (8, 0), axis=(0, 1)), g) > 0.5   # beyond k // 4 it is not
    assert kernel_error(np.ones((21, 21)), g) > 0.5
    assert kernel_sigma(g) == pytest.approx(3.0, rel=0.02)
    with pytest.raises(InputError):
        kernel_error(g, g[:-2, :-2])


@pytest.mark.parametrize("task", ["gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint"])
def test_degrade_image_is_seeded_and_shaped(task):
    image = _image()
    case = degrade_image(task, image, sr_factor=4, seed=5)
    y = case["y"]
    assert y.shape == ((1, 1, 16, 16) if task == "sr" else (1, 1, 64, 64))
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, degrade_image(task, image, sr_factor=4, seed=5)["y"])
    assert not torch.equal(y, degrade_image(task, image, sr_factor=4, seed=6)["y"])
    assert ("kernel" in case) == (task in ("gaussian-deblur", "motion-deblur"))
    if "kernel" in case:
        assert case["kernel"].shape == (11, 11)  # what ctbird.restore estimates at 64 px
        assert abs(float(case["kernel"].sum()) - 1.0) < 1e-5
    if task == "inpaint":
        assert torch.all(y[0, 0][case["mask"] == 0] == 0) and float(case["mask"].mean()) < 1.0


def test_degrade_image_blurs_as_specified():
    image = _image()
    sharp_edges = float((image[0, :, 1:] - image[0, :, :-1]).abs().max())
    blurred = degrade_image("gaussian-deblur", image, seed=0)
    assert kernel_sigma(blurred["kernel"]) == pytest.approx(3 * 64 / 256, rel=0.05)
    assert float((blurred["y"][0, 0, :, 1:] - blurred["y"][0, 0, :, :-1]).abs().max()) < sharp_edges


def test_inpaint_mask_centres_a_square_hole():
    mask = inpaint_mask(256)
    assert int((mask == 0).sum()) == 80 * 80 and mask[128, 128] == 0 and mask[0, 0] == 1
    wide = inpaint_mask(64, 128)
    assert wide.shape == (64, 128) and wide[32, 64] == 0 and int((wide == 0).sum()) == 20 * 20


def test_degrade_image_rejects_bad_input():
    with pytest.raises(ConfigError):
        degrade_image("unknown", _image())
    with pytest.raises(InputError):
        degrade_image("sr", _image(60), sr_factor=8)
    with pytest.raises(InputError):
        degrade_image("denoise", _image()[0])


def test_white_noise_replaces_the_benchmark_noise_when_asked():
    image = _image()
    clean = degrade_image("motion-deblur", image, kernel_size=9, seed=2, noise_std=0.0)
    noisy = degrade_image("motion-deblur", image, kernel_size=9, seed=2, noise_std=0.01)
    default = degrade_image("motion-deblur", image, kernel_size=9, seed=2)
    assert torch.equal(clean["kernel"], noisy["kernel"])
    assert float((noisy["y"] - clean["y"]).std()) == pytest.approx(0.01, rel=0.1)
    assert float((default["y"] - clean["y"]).std()) > 0.03  # the benchmark's speckle + Gaussian noise is heavier
    with pytest.raises(ConfigError, match="noise_std"):
        degrade_image("denoise", image, noise_std=-1.0)
