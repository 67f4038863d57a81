"""``ctbird.restore``'s kernel models, warm start and noise-matched refinement, and the DDIM inversion behind the warm
start."""

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


def test_deblurring_operators_mirror_the_border_unless_told_otherwise(prior):
    from operators import GeometryError

    from ctbird.api import restoration_operator

    for task in ("gaussian-deblur", "motion-deblur"):
        blind = restoration_operator(task, (1, 16, 16), blind=True, sr_factor=1, kernel_size=5, kernel=None, mask=None)
        known = restoration_operator(task, (1, 16, 16), blind=False, sr_factor=1, kernel_size=None, kernel=1.0,
                                     mask=None, padding="zeros")
        assert (blind.padding, known.padding) == ("reflect", "zeros")
    # a bright image: a zero border darkens the model's edge, so the estimate differs where it reaches
    image = torch.full((1, 1, 16, 16), 0.8) + 0.1 * torch.rand(1, 1, 16, 16)
    runs = {padding: restore(image, "gaussian-deblur", prior=prior, padding=padding, kernel_size=5, iters=2,
                             delta_t=500, refine=False) for padding in ("reflect", "zeros")}
    assert not torch.allclose(runs["reflect"].kernel, runs["zeros"].kernel)
    with pytest.raises(GeometryError, match="padding"):
        restore(image, "gaussian-deblur", prior=prior, padding="wrap", kernel_size=5, iters=1)


def test_warm_start_counts_the_inversion_and_changes_the_start(prior):
    image = torch.rand(1, 1, 16, 16)
    cold = restore(image, "denoise", prior=prior, iters=1, delta_t=500, warm_start=False, refine=False)
    warm = restore(image, "denoise", prior=prior, iters=1, delta_t=500, warm_start=True, refine=False)
    assert warm.nfe == cold.nfe + 2
    assert not torch.allclose(warm.image, cold.image)


def test_for_task_applies_the_cpu_budget_to_restoration_tasks_only():
    from ctbird.config import PRESETS, RESTORE_CPU_BUDGET, BirdConfig

    for task in ("sr", "gaussian-deblur"):
        fast, full = BirdConfig.for_task(task, "cpu-fast"), BirdConfig.for_task(task)
        assert (fast.iters, fast.delta_t) == (RESTORE_CPU_BUDGET[task]["iters"], RESTORE_CPU_BUDGET[task]["delta_t"])
        assert fast.replace(iters=full.iters, delta_t=full.delta_t) == full
    assert BirdConfig.for_task("gaussian-deblur", "cpu-fast").iters == 2 * BirdConfig.for_task("sr", "cpu-fast").iters
    assert BirdConfig.for_task("ct", "cpu-fast") == BirdConfig() and "cpu-fast" in PRESETS
    with pytest.raises(ConfigError, match="preset"):
        BirdConfig.for_task("denoise", "turbo")


def _zero_noise_prior() -> DiffusionPrior:
    """A prior whose noise estimate is 0: its Tweedie step returns ``x_t / sqrt(a_t)``."""
    zero = DiffusionPrior.from_config(UNET, seed=0)
    with torch.no_grad():
        zero.unet.conv_out.weight.zero_()
        zero.unet.conv_out.bias.zero_()
    return zero


def test_timestep_of_noise_is_the_first_step_whose_noise_reaches_the_level(prior):
    schedule = prior.schedule
    ratio = [((1 - a) / a) ** 0.5 for a in schedule.alphas_cumprod]
    for level in (0.05, 0.1, 0.3, 1.0):
        t = schedule.timestep_of_noise(level)
        assert ratio[t] >= level > ratio[t - 1]
    assert schedule.timestep_of_noise(0.0) == 0 and schedule.timestep_of_noise(1e9) == schedule.num_train_timesteps - 1


def test_noise_matched_renoising_draws_only_the_noise_the_start_lacks():
    from ctbird.solvers.dds import refine_by_dds

    zero = _zero_noise_prior()
    generator = torch.Generator().manual_seed(0)
    noisy = (0.4 * torch.randn(2, 1, 16, 16, generator=generator)).clamp(-0.9, 0.9)
    t = zero.schedule.timestep_of_noise(0.1)
    level = ((1 - zero.schedule.alpha(t)) / zero.schedule.alpha(t)) ** 0.5  # t's own level (0.1 or just above)
    common = dict(t_start=t, delta_t=999, measure=lambda v: v, y=noisy, cg_iters=0, eta=0.0)
    matched = refine_by_dds(zero, noisy, start_noise=torch.tensor([level, 0.0]), generator=generator, **common)
    plain = refine_by_dds(zero, noisy, generator=generator, **common)
    assert torch.allclose(matched[0], noisy[0], atol=1e-6)  # the start's own noise stands in for t's: none drawn
    assert not torch.allclose(matched[1], noisy[1], atol=1e-3)  # a clean start gets all of it
    assert float((plain - noisy).std()) > 0.5 * ((1 - zero.schedule.alpha(t)) / zero.schedule.alpha(t)) ** 0.5


def test_default_denoising_is_the_noise_matched_tweedie_step_without_birds_search(prior):
    from ctbird.config import RefineConfig

    image = (0.5 + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    result = restore(image, "denoise", prior=prior, iters=2, delta_t=500)
    assert result.refine == RefineConfig.for_task("denoise") and result.refine.match_noise
    assert result.solver_result is None and result.iters_run == 0 and result.loss_history == []
    assert result.nfe == 1 and result.image.shape == image.shape  # 8 renoisings, one batched Tweedie step
    searched = restore(image, "denoise", prior=prior, iters=2, delta_t=500, refine=RefineConfig.for_task("denoise").replace(start="bird"))
    assert searched.solver_result is not None and searched.iters_run == 2


def test_search_noise_floor_raises_only_the_noise_of_cleaner_observations():
    from ctbird.api import _raise_noise
    from ctbird.restoration_baselines import estimate_noise_sigma

    base = torch.full((2, 1, 64, 64), 0.5)
    noise = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    y = base + torch.tensor([0.002, 0.03]).view(2, 1, 1, 1) * noise
    levels = [estimate_noise_sigma(item) for item in y.numpy()]
    raised = _raise_noise(y, levels, 0.01, seed=0)
    assert estimate_noise_sigma(raised[0].numpy()) == pytest.approx(0.01, rel=0.15)
    assert torch.equal(raised[1], y[1])  # already noisier than the floor
    assert torch.equal(_raise_noise(y, levels, 0.01, seed=0), raised)  # seeded
    assert _raise_noise(y, levels, 0.0, seed=0) is y


def test_search_noise_floor_reaches_the_search_only(prior):
    y = torch.full((1, 1, 16, 16), 0.4)
    y[..., 4:12, 4:12] = 0.6
    kept = y.clone()
    settings = dict(prior=prior, kernel_size=5, iters=2, delta_t=250, refine=False)
    default = restore(y, "gaussian-deblur", **settings)
    off = restore(y, "gaussian-deblur", search_noise_floor=0.0, **settings)
    floored = restore(y, "gaussian-deblur", search_noise_floor=0.05, **settings)
    assert torch.equal(y, kept)  # the observation is never touched
    assert default.search_noise_floor == pytest.approx(0.01) and off.search_noise_floor == 0.0
    assert floored.search_noise_floor == pytest.approx(0.05)
    assert not torch.equal(floored.image, off.image)
    assert floored.noise_sigma == off.noise_sigma  # the reported noise level is the observation's
    with pytest.raises(ConfigError, match="search_noise_floor"):
        restore(y, "gaussian-deblur", search_noise_floor=-1.0, **settings)


def test_noise_scale_renoises_in_proportion_to_the_observations_noise():
    from ctbird.config import RefineConfig

    zero = _zero_noise_prior()  # its Tweedie step returns the renoised start: what is drawn shows in the result
    s = 0.02
    image = (0.5 + s * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    base = RefineConfig.for_task("denoise").replace(t0=1)
    matched = restore(image, "denoise", prior=zero, refine=base.replace(noise_scale=1.0)).image
    scaled = restore(image, "denoise", prior=zero, refine=base.replace(noise_scale=2.0)).image
    assert float((matched - image).std()) < 0.25 * s
    # (2 s)^2 - s^2 of fresh noise, averaged over the renoisings
    assert float((scaled - image).std()) == pytest.approx(3 ** 0.5 * s / base.samples ** 0.5, rel=0.4)
    with pytest.raises(ConfigError, match="noise_scale"):
        RefineConfig(noise_scale=0.5)


def test_denoising_above_the_priors_size_puts_back_the_observed_fine_detail(prior):
    """A 16² prior cannot hold a 0.4 cycles/px pattern of a 32² image; the residual Wiener step restores it."""
    side, level = 32, 0.01
    xx = torch.arange(side, dtype=torch.float32)
    pattern = 0.2 * torch.cos(2 * torch.pi * 0.4 * xx).expand(side, side)
    truth = 0.5 + pattern
    noisy = (truth + level * torch.randn(side, side, generator=torch.Generator().manual_seed(2)))[None, None]
    result = restore(noisy.clamp(0, 1), "denoise", prior=prior)
    kept = float((result.image[0, 0] - 0.5).mul(pattern).sum() / pattern.square().sum())
    assert kept == pytest.approx(1.0, abs=0.15)
    assert float((result.image[0, 0] - truth).square().mean().sqrt()) < level


def test_the_searchs_misfit_floors_the_anchors_noise_only_where_configured(prior):
    from ctbird.api import anchor_noise
    from ctbird.config import RefineConfig

    image = (0.5 + 0.01 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    result = restore(image, "motion-deblur", prior=prior, kernel_size=5, iters=2, delta_t=500, refine=False)
    misfit = result.search_misfit[0]
    assert misfit > 0 and len(result.search_misfit) == 1
    assert anchor_noise(RefineConfig.for_task("motion-deblur"), [0.0], [misfit]) == [misfit]
    assert anchor_noise(RefineConfig.for_task("motion-deblur"), [2 * misfit], [misfit]) == [2 * misfit]
    assert anchor_noise(RefineConfig.for_task("gaussian-deblur"), [0.0], [misfit]) == [0.0]
    assert anchor_noise(RefineConfig.for_task("motion-deblur"), [0.003], None) == [0.003]
    assert restore(image, "denoise", prior=prior).search_misfit is None  # no search, no misfit


def test_inpainting_above_the_priors_size_keeps_the_observed_fine_detail(prior):
    side = 32
    xx = torch.arange(side, dtype=torch.float32)
    pattern = 0.2 * torch.cos(2 * torch.pi * 0.4 * xx).expand(side, side)
    truth = 0.5 + pattern
    mask = torch.ones(side, side)
    mask[12:20, 12:20] = 0.0
    noisy = ((truth + 0.01 * torch.randn(side, side, generator=torch.Generator().manual_seed(5))) * mask)[None, None]
    result = restore(noisy.clamp(0, 1), "inpaint", prior=prior, mask=mask, iters=2, delta_t=500)
    observed = mask > 0
    kept = float(((result.image[0, 0] - 0.5) * pattern)[observed].sum() / pattern[observed].square().sum())
    assert kept == pytest.approx(1.0, abs=0.2)  # a 16² prior alone cannot hold 0.4 cycles/px


def test_blind_gaussian_width_starts_from_the_observations_classical_estimate(prior):
    from operators.blur import GaussianBlur

    from ctbird.api import INITIAL_SIGMA_PX
    from ctbird.config import RESTORE_SETUP
    from ctbird.metrics import kernel_sigma
    from ctbird.restoration_baselines import estimate_gaussian_sigma

    scene = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wide = GaussianBlur(4.0, image_shape=(1, 64, 64), kernel_size=25)(scene)
    y = torch.cat([wide, scene])  # a wide blur and a sharp image, one batch
    settings = dict(prior=prior, kernel_size=25, iters=1, delta_t=500, lr_operator=0.0, refine=False)
    result = restore(y, "gaussian-deblur", width_start_fraction=0.5, **settings)
    estimate = estimate_gaussian_sigma(wide[0, 0].double().numpy())
    assert estimate > 3.0 and result.initial_width[0] == pytest.approx(0.5 * estimate)
    assert result.initial_width[1] == INITIAL_SIGMA_PX  # a sharp image's half-estimate is below the floor
    # lr_operator 0: each item's width stays where it started
    assert kernel_sigma(result.kernel[0]) == pytest.approx(0.5 * estimate, rel=0.05)
    assert kernel_sigma(result.kernel[1]) == pytest.approx(INITIAL_SIGMA_PX, rel=0.05)
    flat = restore(y, "gaussian-deblur", width_start_fraction=0.0, **settings)
    assert flat.initial_width == [INITIAL_SIGMA_PX] * 2
    default = restore(y[:1], "gaussian-deblur", **settings)  # 64² with a 16² prior: the task's fraction applies
    fraction = RESTORE_SETUP["gaussian-deblur"]["width_start_fraction"]
    assert fraction > 0 and default.initial_width == [pytest.approx(max(INITIAL_SIGMA_PX, fraction * estimate))]
    with torch.no_grad():  # 16²: the prior's own grid, where the default keeps the 1 px start
        at_grid = GaussianBlur(2.0, image_shape=(1, 16, 16), kernel_size=9)(scene[..., :16, :16])
    kept = dict(settings, kernel_size=9)
    assert restore(at_grid, "gaussian-deblur", **kept).initial_width == [INITIAL_SIGMA_PX]
    told = restore(at_grid, "gaussian-deblur", width_start_fraction=2.0, **kept).initial_width[0]  # a given one applies
    assert told == pytest.approx(2.0 * estimate_gaussian_sigma(at_grid[0, 0].double().numpy())) and told > 1.5
    assert restore(y[:1], "motion-deblur", **settings).initial_width is None  # a free kernel has no width
    with pytest.raises(ConfigError, match="width_start_fraction"):
        restore(y, "gaussian-deblur", width_start_fraction=-0.5, **settings)


def test_bird_loads_each_items_operator_start():
    from operators.blur import GaussianBlur

    from ctbird.config import BirdConfig
    from ctbird.errors import InputError
    from ctbird.solvers.bird import BIRD

    zero_rate = BirdConfig.for_task("gaussian-deblur").with_overrides(iters=1, delta_t=500, lr_operator=0.0,
                                                                       n_samples=2)
    operator = GaussianBlur(1.0, image_shape=(1, 16, 16), kernel_size=7, learnable=True)
    bird = BIRD(DiffusionPrior.from_config(UNET, seed=0), operator, zero_rate)
    y = torch.rand(2, 1, 16, 16)
    starts = [{"log_sigma": torch.tensor([0.5])}, {"log_sigma": torch.tensor([-0.3])}]
    out = bird.run(y, generator=torch.Generator().manual_seed(0), init_operator_state=starts)
    assert [float(s["log_sigma"]) for s in out.operator_state] == pytest.approx([0.5, -0.3])
    with pytest.raises(InputError, match="one state per item"):
        bird.run(y, init_operator_state=starts[:1])
    with pytest.raises(InputError, match="does not have"):
        bird.run(y, init_operator_state=[{"angle": torch.tensor(0.1)}] * 2)
