"""BIRD solver (+ data-consistency refinement) and the DPS baseline on tiny priors."""

from __future__ import annotations

import math

import pytest
import torch

from ctbird.errors import ConfigError, InputError
from ctbird.solvers import BIRD, DPS, EarlyStopping, project_to_sphere, refine_data_consistency
from operators import Identity, ParallelBeam
from operators.blur import Blur, GaussianBlur
from operators.mask import Mask
from operators.radon import Radon
from operators.resample import Downsample

SHAPE = (1, 16, 16)


def _smooth_image() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    return (0.8 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None]


def _operator(name: str):
    if name == "identity":
        return Identity(SHAPE)
    if name == "blur":
        return Blur(kernel_size=5, image_shape=SHAPE, learnable=True)
    if name == "downsample":
        return Downsample(4, SHAPE)
    if name == "mask":
        return Mask(torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) > 0.5, SHAPE)
    return Radon(ParallelBeam(views=8), 16, backend="matrix")


@pytest.mark.parametrize("name", ["identity", "blur", "downsample", "mask", "radon"])
def test_loss_falls(tiny_prior, name):
    op = _operator(name)
    with torch.no_grad():
        y = op(_smooth_image())
    result = BIRD(tiny_prior, op, iters=8, lr_latent=5e-2, lr_operator=1e-2).run(y, generator=torch.Generator().manual_seed(0))
    assert result.loss_history[-1] < result.loss_history[0]
    assert float(result.final_loss) < result.loss_history[0]
    assert result.iters_run == 8 and result.nfe == 8 * 10 + 10
    assert result.image.shape == (1, *SHAPE) and result.image.abs().max() <= 1.0
    if name == "blur":
        k = result.kernel[0]
        assert k.shape == (5, 5) and (k >= 0).all() and float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        assert not torch.allclose(k, torch.full((5, 5), 1 / 25))  # the kernel was estimated, not left at its init


def test_loss_falls_far_on_a_reachable_image(gaussian_prior):
    """With a well-behaved prior BIRD fits a measurement its range can explain almost exactly."""
    latent_true = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = gaussian_prior.decode(latent_true)
    result = BIRD(gaussian_prior, Identity(SHAPE), iters=60, lr_latent=5e-2).run(y, generator=torch.Generator().manual_seed(0))
    assert float(result.final_loss) < 0.1 * result.loss_history[0]


def test_seeded_run_is_bitwise_reproducible(tiny_prior):
    op = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
    with torch.no_grad():
        y = op(_smooth_image())
    runs = []
    for _ in range(2):
        op = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
        runs.append(BIRD(tiny_prior, op, iters=4, lr_latent=1e-2, lr_operator=1e-2).run(y, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(runs[0].image, runs[1].image) and torch.equal(runs[0].kernel, runs[1].kernel)
    assert runs[0].loss_history == runs[1].loss_history
    other = BIRD(tiny_prior, Identity(SHAPE), iters=1).run(y, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.latent, runs[0].latent)


def test_normalized_step_has_rms_lr_per_sample_and_keeps_direction():
    from ctbird.solvers.bird import normalized_step

    grad = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([1e-6, 1.0, 1e3]).view(3, 1, 1, 1)
    grad[2] = 0.0
    step = normalized_step(grad, 0.01)
    rms = step.flatten(1).pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms[:2], torch.full((2,), 0.01))  # the gradient's scale does not matter
    assert torch.equal(step[2], torch.zeros_like(step[2]))  # no gradient, no step
    cosine = torch.nn.functional.cosine_similarity(step[:2].flatten(1), grad[:2].flatten(1))
    torch.testing.assert_close(cosine, torch.ones(2))


def test_normalized_gd_fits_a_reachable_image_on_the_sphere(gaussian_prior):
    latent_true = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = gaussian_prior.decode(latent_true)
    seen = []
    result = BIRD(gaussian_prior, Identity(SHAPE), iters=60, lr_latent=5e-2, latent_optimizer="normalized-gd",
                  callback=lambda info: seen.append(info["latent"].clone())).run(y, generator=torch.Generator().manual_seed(0))
    assert float(result.final_loss) < 0.1 * result.loss_history[0]
    assert result.info["latent_optimizer"] == "normalized-gd"
    assert result.latent.flatten(1).norm(dim=1).item() == pytest.approx(16.0, rel=1e-5)
    # each step moves x_T by about lr * sqrt(D) before the projection back onto the sphere
    first, second = seen[0], seen[1]
    assert 0.3 * 5e-2 * 16 < float((second - first).norm()) < 1.01 * 5e-2 * 16
    adam = BIRD(gaussian_prior, Identity(SHAPE), iters=60, lr_latent=5e-2).run(y, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(adam.latent, result.latent)
    with pytest.raises(ConfigError, match="latent_optimizer"):
        BIRD(gaussian_prior, Identity(SHAPE), latent_optimizer="sgd")


def test_cosine_latent_rate_decays_to_its_floor(gaussian_prior):
    from ctbird.solvers.bird import COSINE_FLOOR

    bird = BIRD(gaussian_prior, Identity(SHAPE), iters=11, lr_latent=1e-2, latent_lr_schedule="cosine")
    rates = [bird.latent_lr(it) for it in range(1, 12)]
    assert rates[0] == pytest.approx(1e-2) and rates[-1] == pytest.approx(COSINE_FLOOR * 1e-2)
    assert rates[5] == pytest.approx(1e-2 * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2))
    assert all(a > b for a, b in zip(rates, rates[1:]))
    constant = BIRD(gaussian_prior, Identity(SHAPE), iters=11, lr_latent=1e-2)
    assert {constant.latent_lr(it) for it in range(1, 12)} == {1e-2}
    # the normalized steps follow the schedule: the last step is about COSINE_FLOOR times the first
    y = _smooth_image()
    seen = []
    BIRD(gaussian_prior, Identity(SHAPE), iters=11, lr_latent=1e-2, latent_optimizer="normalized-gd",
         latent_lr_schedule="cosine", callback=lambda info: seen.append(info["latent"].clone())).run(
        y, generator=torch.Generator().manual_seed(0))
    start = project_to_sphere(torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(0)))
    first, last = float((seen[0] - start).norm()), float((seen[-1] - seen[-2]).norm())
    assert last / first == pytest.approx(COSINE_FLOOR, rel=0.1)
    with pytest.raises(ConfigError, match="latent_lr_schedule"):
        BIRD(gaussian_prior, Identity(SHAPE), latent_lr_schedule="step")


def test_sphere_projection_holds(tiny_prior):
    seen = []
    y = _smooth_image()
    result = BIRD(tiny_prior, Identity(SHAPE), iters=3, lr_latent=0.5, callback=seen.append).run(y)
    assert result.latent.flatten(1).norm(dim=1).item() == pytest.approx(math.sqrt(16 * 16), rel=1e-5)
    assert [d["iteration"] for d in seen] == [1, 2, 3] and all("loss" in d for d in seen)
    scaled = project_to_sphere(3.0 * torch.randn(4, 3, 8, 8))
    torch.testing.assert_close(scaled.flatten(1).norm(dim=1), torch.full((4,), math.sqrt(3 * 8 * 8)))


def test_n_samples_gives_uncertainty_and_best_fit(tiny_prior):
    op = Identity(SHAPE)
    y = torch.cat([_smooth_image(), -_smooth_image()])
    result = BIRD(tiny_prior, op, iters=2, lr_latent=1e-2, n_samples=3).run(y, generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (2, 3, *SHAPE)
    assert result.uncertainty.shape == (2, *SHAPE) and result.uncertainty.mean() > 0
    for b in range(2):
        errors = ((result.samples[b] - y[b]) ** 2).flatten(1).mean(dim=1)
        torch.testing.assert_close(result.image[b], result.samples[b, int(errors.argmin())])
        assert float(result.final_loss[b]) == pytest.approx(float(errors.min()), rel=1e-5)
    single = BIRD(tiny_prior, op, iters=1).run(y[:1])
    assert single.uncertainty is None


def test_blind_kernel_estimation_recovers_gaussian_kernel(gaussian_prior):
    """Image held at the truth (latent fixed): BIRD's joint Adam must recover the blur kernel."""
    latent_true = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x_true = gaussian_prior.decode(latent_true)
        truth = GaussianBlur(1.0, kernel_size=5, image_shape=SHAPE)
        k_true = truth.kernel
        y = truth(x_true)
    op = Blur(kernel_size=5, image_shape=SHAPE, learnable=True)
    initial_error = float((op.kernel.detach() - k_true).norm())
    result = BIRD(gaussian_prior, op, iters=40, lr_latent=1e-7, lr_operator=5e-2).run(y, init_latent=latent_true)
    estimated_error = float((result.kernel[0] - k_true).norm())
    assert estimated_error < 0.3 * initial_error
    torch.testing.assert_close(op.kernel.detach(), result.kernel[0])  # the user's operator holds the estimate


def test_blind_restarts_get_their_own_kernels(tiny_prior):
    op = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
    with torch.no_grad():
        y = op(_smooth_image())
    result = BIRD(tiny_prior, op, iters=3, lr_latent=1e-2, lr_operator=5e-2, n_samples=2).run(y)
    assert result.kernel.shape == (1, 3, 3) and len(result.operator_state) == 1


def test_exact_mode_records_and_differs(tiny_prior):
    y = _smooth_image()
    runs = {mode: BIRD(tiny_prior, Identity(SHAPE), iters=2, lr_latent=5e-2, grad_mode=mode).run(
        y, generator=torch.Generator().manual_seed(0)) for mode in ("detached", "exact")}
    assert runs["exact"].grad_mode == "exact" and runs["detached"].grad_mode == "detached"
    assert runs["exact"].delta_t == 100
    assert not torch.equal(runs["exact"].latent, runs["detached"].latent)


def test_early_stopping_on_plateau(tiny_prior):
    y = _smooth_image()
    result = BIRD(tiny_prior, Identity(SHAPE), iters=50, lr_latent=1e-9,
                  early_stopping=EarlyStopping(patience=3, rel_tol=1e-3)).run(y)
    assert result.stopped_early and result.iters_run == 4


def test_input_transform_maps_the_prior_scale(tiny_prior):
    y = (_smooth_image() + 1) / 2
    result = BIRD(tiny_prior, Identity(SHAPE), iters=2, input_transform=lambda x: (x + 1) / 2).run(y)
    torch.testing.assert_close(result.transformed, (result.image + 1) / 2)


def test_invalid_configuration_and_inputs(tiny_prior):
    with pytest.raises(ConfigError, match="iters"):
        BIRD(tiny_prior, Identity(SHAPE), iters=0)
    with pytest.raises(ConfigError, match="grad_mode"):
        BIRD(tiny_prior, Identity(SHAPE), grad_mode="full")
    with pytest.raises(ConfigError, match="delta_t"):
        BIRD(tiny_prior, Identity(SHAPE), delta_t=5000)
    with pytest.raises(InputError, match="shape"):
        BIRD(tiny_prior, Identity(SHAPE), iters=1).run(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="NaN"):
        BIRD(tiny_prior, Identity(SHAPE), iters=1).run(torch.full((1, *SHAPE), float("nan")))


def test_data_consistency_refinement_lowers_residual_and_stays_anchored():
    radon = Radon(ParallelBeam(views=6), 16, backend="matrix")
    x_true = (_smooth_image() + 1) / 2
    y = radon(x_true)
    x_prior = x_true + 0.2 * torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(0))
    refined = refine_data_consistency(y, radon, x_prior, weight=0.05, iters=10)
    assert (radon(refined) - y).norm() < 0.5 * (radon(x_prior) - y).norm()
    strong = refine_data_consistency(y, radon, x_prior, weight=1e3, iters=10)
    assert (strong - x_prior).norm() < 0.05 * (refined - x_prior).norm()
    with pytest.raises(ConfigError):
        refine_data_consistency(y, radon, x_prior, weight=0.0, iters=10)


def test_dps_lowers_the_data_error(gaussian_prior):
    latent_true = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    op = Downsample(2, SHAPE)
    with torch.no_grad():
        y = op(gaussian_prior.decode(latent_true))
    guided = DPS(gaussian_prior, op, steps=20, zeta=1.0).run(y, generator=torch.Generator().manual_seed(0))
    free = DPS(gaussian_prior, op, steps=20, zeta=0.0).run(y, generator=torch.Generator().manual_seed(0))
    assert float(guided.final_loss) < 0.5 * float(free.final_loss)  # 0.023 vs 0.064
    assert guided.loss_history[-1] < guided.loss_history[0]
    assert guided.nfe == 20 and guided.image.shape == (1, *SHAPE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_channels_last_matches_fp32_and_runs(tiny_unet_config_factory, bird_scheduler_config):
    from ctbird.priors import DiffusionPrior

    config = {**tiny_unet_config_factory(3, 64), "block_out_channels": (32, 64), "norm_num_groups": 8}
    fp32 = DiffusionPrior.from_config(config, bird_scheduler_config).to("cuda")
    fast = DiffusionPrior.from_config(config, bird_scheduler_config, bf16=True, channels_last=True).to("cuda")
    x_T = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    ref, out = fp32.decode(x_T), fast.decode(x_T)
    assert out.dtype == torch.float32 and (out - ref).abs().mean() < 0.05
    op = Blur(kernel_size=7, image_shape=(3, 64, 64), learnable=True)
    y = op(((ref[:2] + 1) / 2).detach()).detach()
    for mode in ("detached", "exact"):
        result = BIRD(fast, op, iters=5, lr_latent=1e-2, grad_mode=mode, n_samples=2,
                      input_transform=lambda x: (x + 1) / 2).run(y)
        assert result.image.is_cuda and torch.isfinite(result.image).all()
        assert result.loss_history[-1] < result.loss_history[0]


def test_keep_best_returns_each_latents_lowest_loss_iterate(tiny_prior):
    """A large constant rate makes the iterates jump; keep_best returns the best-fitting one seen, per latent."""
    op = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
    with torch.no_grad():
        y = op(torch.cat([_smooth_image(), -_smooth_image()]))

    def run(keep_best):
        seen = []
        blur = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
        result = BIRD(tiny_prior, blur, iters=12, lr_latent=0.3, lr_operator=5e-2, latent_optimizer="normalized-gd",
                      n_samples=2, keep_best=keep_best, callback=lambda info: seen.append(info["losses"])).run(
            y, generator=torch.Generator().manual_seed(3))
        return result, torch.tensor(seen)  # [iterations, B * n_samples], each the loss before that step

    last, seen = run(False)
    kept, seen_kept = run(True)
    assert torch.equal(seen, seen_kept)  # keeping the best changes what is returned, not the trajectory
    # per item: the best of its restarts' iterates, those scored during the run and those after the last step
    scored_best = seen.min(dim=0).values.view(2, 2).min(dim=1).values
    torch.testing.assert_close(kept.final_loss, torch.minimum(scored_best, last.final_loss))
    assert bool((kept.final_loss < last.final_loss).any())  # the jumps are real at this rate: not a vacuous test
    assert kept.info["keep_best"] is True and last.info["keep_best"] is False


def test_keep_best_restores_the_operator_it_was_scored_with(tiny_prior):
    op = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
    with torch.no_grad():
        y = op(_smooth_image())
    blur = Blur(kernel_size=3, image_shape=SHAPE, learnable=True)
    result = BIRD(tiny_prior, blur, iters=10, lr_latent=0.3, lr_operator=5e-2, latent_optimizer="normalized-gd",
                  keep_best=True).run(y, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        refit = float((blur(result.image) - y).pow(2).mean())
        decoded = tiny_prior.decode(result.latent)
    assert refit == pytest.approx(float(result.final_loss[0]), rel=1e-5)  # image, kernel and loss belong together
    torch.testing.assert_close(decoded, result.image)  # and the latent decodes to the image
    assert torch.equal(result.kernel[0], blur.kernel.detach().reshape(3, 3))
