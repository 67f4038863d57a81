"""The one noise schedule and DDIM step (ctbird.priors.schedule) against diffusers."""

from __future__ import annotations

import math

import pytest
import torch

from ctbird.errors import ConfigError, PriorError
from ctbird.priors.schedule import SCHEDULER_CONFIG, NoiseSchedule, randn


def test_default_schedule_is_ddpm_linear_and_read_only():
    from diffusers import DDPMScheduler

    schedule = NoiseSchedule()
    reference = DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
    assert schedule.num_train_timesteps == 1000 and schedule.prediction_type == "epsilon"
    assert list(schedule.alphas_cumprod) == reference.alphas_cumprod.tolist()
    assert schedule.alpha(-20) == 1.0
    with pytest.raises(TypeError):
        SCHEDULER_CONFIG["beta_end"] = 0.01  # type: ignore[index]


def test_add_noise_is_the_forward_process():
    schedule = NoiseSchedule()
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 1, 4, 4, generator=generator), torch.randn(3, 1, 4, 4, generator=generator)
    t = torch.tensor([0, 500, 999])
    noisy = schedule.add_noise(x0, noise, t)
    for i, step in enumerate(t.tolist()):
        a = schedule.alphas_cumprod[step]
        torch.testing.assert_close(noisy[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("t, t_prev", [(900, 800), (40, 20), (0, -100)])
def test_ddim_step_matches_diffusers(eta, t, t_prev):
    """The step the prior's chain (eta 0) and DPS (eta 1) take is diffusers' DDIM step with x0 clipped."""
    from diffusers import DDIMScheduler

    reference = DDIMScheduler(**SCHEDULER_CONFIG)
    reference.set_timesteps(1000 // (t - t_prev))
    schedule = NoiseSchedule()
    generator = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 1, 8, 8, generator=generator), torch.randn(2, 1, 8, 8, generator=generator)
    x0 = schedule.predict_x0(x, eps, t)
    assert x0.abs().max() <= 1.0
    ours = schedule.ddim_step(x, x0, t, t_prev, eta=eta, generator=torch.Generator().manual_seed(7))
    noise = randn(tuple(x.shape), generator=torch.Generator().manual_seed(7), device="cpu")
    expected = reference.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_timestep_pairs_and_errors():
    schedule = NoiseSchedule()
    assert schedule.timestep_pairs(333) == [(666, 333), (333, 0), (0, -333)]
    for bad in (0, 1001, 2.0, True):
        with pytest.raises(ConfigError, match="delta_t"):
            schedule.timestep_pairs(bad)
    with pytest.raises(PriorError, match="prediction_type"):
        NoiseSchedule({**SCHEDULER_CONFIG, "prediction_type": "score"})
    with pytest.raises(PriorError, match="noise schedule"):
        NoiseSchedule({**SCHEDULER_CONFIG, "beta_schedule": "no-such-schedule"})


def test_saved_schedule_loads_back(tmp_path):
    from diffusers import DDIMScheduler

    file = NoiseSchedule().save(tmp_path / "scheduler")
    loaded = DDIMScheduler.from_pretrained(file.parent)
    assert loaded.config.clip_sample and loaded.config.set_alpha_to_one and loaded.config.steps_offset == 0
    assert NoiseSchedule(dict(loaded.config)).alphas_cumprod == NoiseSchedule().alphas_cumprod
