"""Classical restoration baselines and the estimators behind them (:mod:`ctbird.restoration_baselines`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctbird.errors import ConfigError
from ctbird.restoration_baselines import (estimate_gaussian_sigma, estimate_noise_sigma, gaussian_kernel, run_baseline,
                                          task_baselines)


def _scene(side: int = 96, seed: int = 0) -> np.ndarray:
    """Piecewise-constant discs and squares in [0.1, 0.9] (edges at every scale, roughly 1/f^2 power)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    image = np.full((side, side), 0.5)
    for _ in range(25):
        cy, cx, r = rng.uniform(0, side, 2).tolist() + [rng.uniform(3, side / 4)]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.1, 0.9)
    return image


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_noise_sigma_estimate_within_ten_percent(sigma):
    rng = np.random.default_rng(1)
    noisy = _scene() + rng.normal(0, sigma, (96, 96))
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)


@pytest.mark.parametrize("width", [1.0, 2.0, 3.0])
def test_gaussian_width_estimate_within_thirty_percent(width):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    blurred = gaussian_filter(_scene(128), width) + rng.normal(0, 0.002, (128, 128))
    assert estimate_gaussian_sigma(blurred) == pytest.approx(width, rel=0.3)


def test_richardson_lucy_with_the_true_kernel_beats_the_blurred_image():
    from scipy.ndimage import convolve

    truth = _scene()
    kernel = gaussian_kernel(9, 1.5)
    blurred = convolve(truth, kernel, mode="reflect")
    out = run_baseline("richardson-lucy", torch.from_numpy(blurred)[None, None].float(), "gaussian-deblur",
                       kernel=torch.from_numpy(kernel))
    error_in, error_out = np.abs(blurred - truth).mean(), np.abs(out.image[0, 0].numpy() - truth).mean()
    assert out.image.shape == (1, 1, 96, 96) and error_out < 0.85 * error_in


def test_bicubic_upsamples_by_the_factor_and_baselines_are_per_task():
    low = torch.rand(1, 3, 8, 8)
    assert run_baseline("bicubic", low, "sr", sr_factor=4).image.shape == (1, 3, 32, 32)
    assert task_baselines("denoise") == ("tv",)
    with pytest.raises(ConfigError, match="does not apply"):
        run_baseline("tv", low, "sr")


def test_residual_wiener_keeps_detail_above_the_noise_and_drops_the_noise():
    from scipy.ndimage import gaussian_filter

    from ctbird.restoration_baselines import residual_wiener

    truth = _scene(128)
    noisy = truth + np.random.default_rng(3).normal(0, 0.02, truth.shape)
    exact = residual_wiener(truth, noisy, 0.02)  # the residual is noise alone: almost all of it is dropped
    assert np.abs(exact - truth).std() < 0.3 * 0.02
    smooth = gaussian_filter(truth, 2.0)  # an estimate that lost the edges
    out = residual_wiener(smooth, noisy, 0.02)
    error = lambda image: float(np.sqrt(np.mean((image - truth) ** 2)))  # noqa: E731
    assert error(out) < 0.92 * error(noisy) and error(out) < 0.4 * error(smooth)  # better than either


def test_masked_residual_wiener_changes_only_the_observed_pixels():
    from scipy.ndimage import gaussian_filter

    from ctbird.restoration_baselines import residual_wiener

    truth = _scene(128)
    mask = np.ones_like(truth)
    mask[40:90, 40:90] = 0.0
    noisy = (truth + np.random.default_rng(4).normal(0, 0.02, truth.shape)) * mask
    smooth = gaussian_filter(truth, 2.0)
    out = residual_wiener(smooth, noisy, 0.02, mask)
    assert np.array_equal(out[mask == 0], smooth[mask == 0])  # the hole keeps the estimate
    observed = mask > 0
    error = lambda image: float(np.sqrt(np.mean((image - truth)[observed] ** 2)))  # noqa: E731
    assert error(out) < 0.5 * error(smooth)


def _motion_blurred(seed: int, side: int = 96, kernel_side: int = 15, noise: float = 0.005):
    """``(truth, observation, kernel)``: :func:`_scene` blurred by a synthetic motion kernel (reflect borders) plus
    white noise."""
    from ctbird.simulate import motion_kernel
    from operators.blur import Blur

    truth = _scene(side)
    kernel = motion_kernel(kernel_side, seed).to(torch.float64)
    with torch.no_grad():
        blurred = Blur(kernel, image_shape=(1, side, side), padding="reflect")(torch.from_numpy(truth)[None, None])
    observation = blurred[0, 0].numpy() + np.random.default_rng(seed).normal(0, noise, (side, side))
    return truth, observation, kernel.numpy()


@pytest.mark.parametrize("seed", [1, 4, 6])
def test_blind_kernel_estimate_recovers_a_motion_kernel(seed):
    from ctbird.metrics import kernel_error
    from ctbird.restoration_baselines import estimate_blur_kernel

    _, observation, kernel = _motion_blurred(seed)
    estimate = estimate_blur_kernel(observation, kernel.shape[0])
    assert estimate.shape == kernel.shape and estimate.min() >= 0 and estimate.sum() == pytest.approx(1.0)
    flat = kernel_error(np.ones_like(kernel), kernel)
    assert kernel_error(estimate, kernel) < flat / 2  # the #15 target, met on a piecewise-flat scene


def test_l0_gradient_deconvolution_with_the_true_kernel_restores_the_edges():
    from ctbird.metrics import psnr
    from ctbird.restoration_baselines import l0_gradient_deconvolution

    truth, observation, kernel = _motion_blurred(0)
    restored = l0_gradient_deconvolution(observation, kernel, 2e-3)
    assert restored.shape == truth.shape
    assert psnr(restored, truth, data_range=1.0) > psnr(observation, truth, data_range=1.0) + 4.0


def test_centre_kernel_moves_the_centroid_to_the_grid_centre():
    from ctbird.restoration_baselines import centre_kernel

    kernel = np.zeros((11, 11))
    kernel[2:4, 6:9] = [[1.0, 2.0, 1.0], [0.5, 1.0, 0.5]]
    centred = centre_kernel(kernel)
    r = np.arange(11) - 5
    assert abs((centred.sum(1) * r).sum()) < 0.5 and abs((centred.sum(0) * r).sum()) < 0.5
    assert centred.sum() == pytest.approx(1.0)
    assert np.allclose(centred[centred > 0], kernel[kernel > 0] / kernel.sum())  # the same taps, moved
    assert np.allclose(centre_kernel(centred), centred)


def test_l0_blind_baseline_estimates_its_own_kernel_and_beats_the_observation():
    from ctbird.metrics import psnr

    truth, observation, kernel = _motion_blurred(0)
    image = torch.from_numpy(observation).clamp(0, 1)[None, None].float()
    out = run_baseline("l0-blind", image, "motion-deblur", kernel_size=15)
    ignored = run_baseline("l0-blind", image, "motion-deblur", kernel_size=15, kernel=torch.ones(15, 15))
    assert out.kernel.shape == (15, 15) and torch.equal(out.kernel, ignored.kernel)  # blind: a given kernel is unused
    assert psnr(out.image[0, 0].numpy(), truth, data_range=1.0) > psnr(observation, truth, data_range=1.0) + 1.0
    assert "l0-blind" in task_baselines("motion-deblur") and "l0-blind" not in task_baselines("gaussian-deblur")
    with pytest.raises(ConfigError, match="does not apply"):
        run_baseline("l0-blind", image, "gaussian-deblur")
