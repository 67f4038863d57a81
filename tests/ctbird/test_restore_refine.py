"""The DDS refinement that ``ctbird.restore`` runs after BIRD (``RefineConfig``) and the noise-level estimate it uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctbird.api import restore
from ctbird.config import RESTORE_TASKS, RefineConfig
from ctbird.errors import ConfigError


def _scene(side: int = 16) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = ((yy - side / 2) ** 2 + (xx - side / 3) ** 2 < (side / 4) ** 2).float()
    return (0.25 + 0.5 * disc)[None, None]


def _blurred(side: int = 16) -> tuple[torch.Tensor, object]:
    from operators.blur import GaussianBlur

    blur = GaussianBlur(1.0, image_shape=(1, side, side))
    with torch.no_grad():
        return blur(_scene(side)).clamp(0, 1), blur


def _misfit(blur, image: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((blur(image) - y).square().mean().sqrt())


def test_refinement_increases_data_consistency(gaussian_prior):
    y, blur = _blurred()
    result = restore(y, "gaussian-deblur", prior=gaussian_prior, blind=False, kernel=1.0, iters=3, delta_t=250,
                     refine=RefineConfig(t0=300, step=50, cg_iters=5))
    bird = result.solver_result.transformed.clamp(0, 1)
    assert _misfit(blur, result.image, y) < 0.5 * _misfit(blur, bird, y)


def test_no_refinement_reproduces_the_raw_bird_output(gaussian_prior):
    y, _ = _blurred()
    settings = dict(prior=gaussian_prior, blind=False, kernel=1.0, iters=3, delta_t=250, seed=3)
    refined = restore(y, "gaussian-deblur", **settings)
    off = restore(y, "gaussian-deblur", refine=False, **settings)
    zero = restore(y, "gaussian-deblur", refine=RefineConfig(t0=0), **settings)
    assert refined.refine == RefineConfig.for_task("gaussian-deblur") and off.refine is None and zero.refine is None
    assert torch.equal(off.image, refined.solver_result.transformed.clamp(0, 1))
    assert torch.equal(zero.image, off.image) and not torch.equal(refined.image, off.image)
    default = RefineConfig.for_task("gaussian-deblur")
    assert refined.nfe == off.nfe + default.t0 // default.step + 1


def test_refinement_is_seeded_and_keeps_the_estimated_operator(gaussian_prior):
    y, _ = _blurred()
    settings = dict(prior=gaussian_prior, kernel_size=5, iters=2, delta_t=250, lr_operator=0.05,
                    refine=RefineConfig(t0=200, step=100))
    first, second = restore(y, "gaussian-deblur", **settings), restore(y, "gaussian-deblur", **settings)
    assert torch.equal(first.image, second.image) and torch.equal(first.kernel, second.kernel)
    other = restore(y, "gaussian-deblur", seed=1, **settings)
    assert not torch.equal(first.image, other.image)


def test_anchor_pulls_a_denoised_image_toward_the_prior(gaussian_prior):
    """Identity operator: with no anchor, converged CG returns the observation; a large anchor keeps the prior's."""
    y = (_scene() + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    free = restore(y, "denoise", prior=gaussian_prior, iters=1, delta_t=500, refine=RefineConfig(t0=100, step=50,
                                                                                               cg_iters=5))
    anchored = restore(y, "denoise", prior=gaussian_prior, iters=1, delta_t=500,
                       refine=RefineConfig(t0=100, step=50, cg_iters=5, anchor=1e4))
    assert torch.allclose(free.image, y, atol=1e-4)
    assert float((anchored.image - y).abs().mean()) > 0.02
    assert anchored.noise_sigma[0] == pytest.approx(0.1, rel=0.3)


def test_refine_settings_are_checked():
    with pytest.raises(ConfigError, match="t0"):
        RefineConfig(t0=1000)
    with pytest.raises(ConfigError, match="start"):
        RefineConfig(start="bicubic")
    with pytest.raises(ConfigError, match="anchor"):
        RefineConfig(anchor=-1.0)
    assert all(RefineConfig.for_task(task).enabled for task in RESTORE_TASKS)
    with pytest.raises(ConfigError, match="task"):
        RefineConfig.for_task("ct")


def test_noise_estimate_reads_signal_dependent_noise_at_its_average_power():
    """Speckle (noise std proportional to the signal) on a dark-and-bright scene: the median-based MAD alone reads
    the dark half's level; the estimate is the overall std."""
    rng = np.random.default_rng(0)
    image = np.full((128, 128), 0.05)
    image[:, 64:] = 0.8
    noise = rng.normal(0.0, 1.0, image.shape) * (0.01 + 0.1 * image)
    from ctbird.restoration_baselines import estimate_noise_sigma

    assert estimate_noise_sigma(image + noise) == pytest.approx(float(noise.std()), rel=0.1)


def test_kernel_least_squares_recovers_a_motion_kernel_from_the_true_image():
    from operators.blur import Blur

    from ctbird.restoration_baselines import fit_blur_kernel

    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(rng.random((64, 64)), 1.5)
    truth = np.zeros((9, 9))
    truth[4, 1:8] = 1.0
    truth[3, 6:8] = 0.5
    truth /= truth.sum()
    with torch.no_grad():
        blurred = Blur(torch.from_numpy(truth).float(), image_shape=(1, 64, 64))(torch.from_numpy(image).float()[None, None])
    kernel = fit_blur_kernel(image, blurred[0, 0].numpy().astype(np.float64), 9, iters=500, smoothing_px=0.0)
    assert kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0)
    assert np.linalg.norm(kernel - truth) < 0.1 * np.linalg.norm(truth)


def test_kernel_misfit_is_the_objective_the_kernel_fit_lowers():
    from operators.blur import Blur
    from scipy.ndimage import gaussian_filter

    from ctbird.restoration_baselines import fit_blur_kernel, kernel_misfit

    rng = np.random.default_rng(3)
    image = gaussian_filter(rng.random((64, 64)), 1.5)
    truth = np.zeros((9, 9))
    truth[2:7, 4] = 1.0
    truth[6, 5:8] = 0.5  # asymmetric: a flipped kernel would not fit
    truth /= truth.sum()
    with torch.no_grad():
        blurred = Blur(torch.from_numpy(truth).float(), image_shape=(1, 64, 64), padding="reflect")(
            torch.from_numpy(image).float()[None, None])[0, 0].numpy().astype(np.float64)
    flat = np.full((9, 9), 1 / 81)
    assert kernel_misfit(image, blurred, truth, smoothing_px=0.0) < 1e-6 * kernel_misfit(image, blurred, flat,
                                                                                            smoothing_px=0.0)
    noisy = blurred + 0.05 * rng.standard_normal((64, 64))
    short = fit_blur_kernel(image, noisy, 9, iters=20)
    long = fit_blur_kernel(image, noisy, 9, iters=400)
    assert kernel_misfit(image, noisy, long) < kernel_misfit(image, noisy, short) < kernel_misfit(image, noisy, flat)
    assert kernel_misfit(image, noisy, long) < kernel_misfit(image, noisy, truth)  # the fit overfits the noise


def test_free_kernel_refit_starts_flat_and_moves_toward_the_true_kernel():
    from operators.blur import Blur
    from scipy.ndimage import gaussian_filter

    from ctbird.api import _fit_kernels, restoration_operator
    from ctbird.metrics import kernel_error

    image = gaussian_filter(np.random.default_rng(1).random((64, 64)), 1.5)
    truth = np.zeros((9, 9))
    truth[4, 1:8] = 1.0
    truth /= truth.sum()
    x = torch.from_numpy(image).float()[None, None]
    with torch.no_grad():
        y = Blur(torch.from_numpy(truth).float(), image_shape=(1, 64, 64))(x)
    operator = restoration_operator("motion-deblur", (1, 64, 64), blind=True, sr_factor=1, kernel_size=9, kernel=None,
                                    mask=None)
    from_start = _fit_kernels(operator, x, y)
    with torch.no_grad():
        for parameter in operator.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(0))
    from_other = _fit_kernels(operator, x, y)
    assert torch.equal(from_start, from_other)  # the fit does not start from the kernel it replaces
    assert from_start.shape == (1, 9, 9)
    assert kernel_error(from_start[0], truth) < 0.5 * kernel_error(np.ones((9, 9)), truth)


def test_kernel_refits_replace_the_kernel_and_cost_one_chain_each(gaussian_prior):
    y, _ = _blurred()
    settings = dict(prior=gaussian_prior, kernel_size=5, iters=2, delta_t=250)
    once = restore(y, "gaussian-deblur", refine=RefineConfig(t0=200, step=100), **settings)
    refit = restore(y, "gaussian-deblur", refine=RefineConfig(t0=200, step=100, kernel_refits=2), **settings)
    assert refit.nfe == once.nfe + 2 * 3
    assert refit.kernel.shape == once.kernel.shape and float(refit.kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(refit.kernel, once.kernel)
    assert torch.allclose(refit.kernel[0], refit.kernel[0].T, atol=1e-6)  # the Gaussian model refits its width
    assert torch.equal(once.kernel, once.solver_result.kernel)


def test_gaussian_width_fit_recovers_the_blur_of_the_true_image():
    from operators.blur import GaussianBlur

    from ctbird.api import _fit_gaussian_width

    image = _scene(32)
    truth = GaussianBlur(1.3, image_shape=(1, 32, 32), kernel_size=9, padding="zeros")
    with torch.no_grad():
        y = truth(image)
    start = GaussianBlur(0.7, image_shape=(1, 32, 32), kernel_size=9, learnable=True, padding="zeros")
    kernel = _fit_gaussian_width(start, image, y)
    assert torch.allclose(kernel, truth.kernel, atol=1e-4)


def test_refinement_samples_are_averaged_in_one_batched_chain(gaussian_prior):
    y, _ = _blurred()
    settings = dict(prior=gaussian_prior, blind=False, kernel=1.0, iters=2, delta_t=250)
    one = restore(y, "gaussian-deblur", refine=RefineConfig(t0=200, step=50), **settings)
    four = restore(y, "gaussian-deblur", refine=RefineConfig(t0=200, step=50, samples=4), **settings)
    assert four.nfe == one.nfe and four.image.shape == one.image.shape and not torch.allclose(four.image, one.image)


def test_kernel_fit_smoothness_and_support():
    from operators.blur import Blur
    from scipy.ndimage import gaussian_filter

    from ctbird.errors import InputError
    from ctbird.restoration_baselines import fit_blur_kernel

    rng = np.random.default_rng(2)
    image = gaussian_filter(rng.random((64, 64)), 1.5)
    truth = np.zeros((9, 9))
    truth[4, 1:8] = 1.0
    truth /= truth.sum()
    with torch.no_grad():
        blurred = Blur(torch.from_numpy(truth).float(), image_shape=(1, 64, 64))(
            torch.from_numpy(image).float()[None, None])
    y = blurred[0, 0].numpy().astype(np.float64) + 0.02 * rng.standard_normal((64, 64))

    def roughness(k: np.ndarray) -> float:
        return float(np.square(np.diff(k, axis=0)).sum() + np.square(np.diff(k, axis=1)).sum())

    plain = fit_blur_kernel(image, y, 9, iters=300, smoothing_px=0.0)
    smooth = fit_blur_kernel(image, y, 9, iters=300, smoothing_px=0.0, smoothness=1.0)
    assert smooth.min() >= 0 and smooth.sum() == pytest.approx(1.0)
    assert roughness(smooth) < 0.5 * roughness(plain)
    support = truth > 0
    confined = fit_blur_kernel(image, y, 9, iters=300, smoothing_px=0.0, support=support)
    assert confined[~support].max() == 0.0 and confined.sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="support"):
        fit_blur_kernel(image, y, 9, support=np.zeros((9, 9), bool))
