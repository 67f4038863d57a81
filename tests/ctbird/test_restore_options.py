"""``ctbird.restore``'s kernel models and warm start, and the DDIM inversion behind the warm start."""

from __future__ import annotations

import pytest
import torch

from ctbird.api import ddim_invert, restore
from ctbird.errors import ConfigError
from ctbird.priors import DiffusionPrior

UNET = {"sample_size": 16, "in_channels": 1, "out_channels": 1, "block_out_channels": (8, 16), "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 4}


@pytest.fixture(scope="module")
def prior():
    return DiffusionPrior.from_config(UNET, seed=0)


def test_ddim_inversion_is_exact_when_the_noise_estimate_is_zero():
    """With eps = 0 every DDIM step only rescales by sqrt(a_t): inverting then decoding returns x0 exactly."""
    zero = DiffusionPrior.from_config(UNET, seed=0)
    with torch.no_grad():
        zero.unet.conv_out.weight.zero_()
        zero.unet.conv_out.bias.zero_()
    x0 = torch.rand(2, 1, 16, 16) * 1.6 - 0.8
    latent = ddim_invert(zero, x0, delta_t=250)
    assert not torch.allclose(latent, x0)
    assert torch.allclose(zero.decode(latent, delta_t=250), x0, atol=1e-5)


def test_gaussian_kernel_model_learns_its_width(prior):
    image = torch.rand(1, 1, 16, 16)
    result = restore(image, "gaussian-deblur", prior=prior, kernel_model="gaussian", kernel_size=7, iters=3,
                     delta_t=500, lr_operator=0.1)
    kernel = result.kernel[0]
    assert kernel.shape == (7, 7) and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(kernel, kernel.T, atol=1e-6) and torch.allclose(kernel, kernel.flip(0), atol=1e-6)
    with pytest.raises(ConfigError, match="kernel_model"):
        restore(image, "gaussian-deblur", prior=prior, kernel_model="spline", kernel_size=7, iters=1)


def test_warm_start_counts_the_inversion_and_changes_the_start(prior):
    image = torch.rand(1, 1, 16, 16)
    cold = restore(image, "denoise", prior=prior, iters=1, delta_t=500, warm_start=False)
    warm = restore(image, "denoise", prior=prior, iters=1, delta_t=500, warm_start=True)
    assert warm.nfe == cold.nfe + 2
    assert not torch.allclose(warm.image, cold.image)


def test_for_task_applies_the_cpu_budget_to_restoration_tasks_only():
    from ctbird.config import PRESETS, RESTORE_CPU_BUDGET, BirdConfig

    fast, full = BirdConfig.for_task("sr", "cpu-fast"), BirdConfig.for_task("sr")
    assert (fast.iters, fast.delta_t) == (RESTORE_CPU_BUDGET["iters"], RESTORE_CPU_BUDGET["delta_t"])
    assert fast.replace(iters=full.iters, delta_t=full.delta_t) == full
    assert BirdConfig.for_task("ct", "cpu-fast") == BirdConfig() and "cpu-fast" in PRESETS
    with pytest.raises(ConfigError, match="preset"):
        BirdConfig.for_task("denoise", "turbo")
