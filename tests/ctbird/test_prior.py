"""DiffusionPrior: DDIM parity with diffusers, gradient modes, loading and saving."""

from __future__ import annotations

import json

import pytest
import torch

from ctbird.errors import ConfigError, PriorError
from ctbird.priors import DiffusionPrior, default_prior_path


def _diffusers_ddim_loop(unet, x_T: torch.Tensor, delta_t: int) -> torch.Tensor:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=True,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    scheduler.set_timesteps(1000 // delta_t)
    x = x_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def test_timestep_pairs_match_reference(tiny_prior):
    pairs = tiny_prior.timestep_pairs(100)
    assert [t for t, _ in pairs] == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert [p for _, p in pairs][-1] < 0
    with pytest.raises(ConfigError):
        tiny_prior.timestep_pairs(0)


@pytest.mark.parametrize("delta_t", [100, 250])
def test_decode_matches_diffusers_ddim(tiny_prior, generator, delta_t):
    x_T = torch.randn(2, 1, 16, 16, generator=generator)
    ours = tiny_prior.decode(x_T, delta_t=delta_t)
    ref = _diffusers_ddim_loop(tiny_prior.unet, x_T, delta_t)
    assert ours.abs().max() <= 1.0
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert tiny_prior.nfe == 1000 // delta_t


def test_gradient_reaches_latent_in_both_modes_and_differs(tiny_prior, generator):
    x_T = torch.randn(1, 1, 16, 16, generator=generator)
    target = torch.randn(1, 1, 16, 16, generator=generator).clamp(-1, 1)
    grads = {}
    for mode in ("detached", "exact"):
        latent = x_T.clone().requires_grad_(True)
        loss = ((tiny_prior.decode(latent, grad_mode=mode) - target) ** 2).mean()
        loss.backward()
        grads[mode] = latent.grad.clone()
        assert torch.isfinite(grads[mode]).all() and grads[mode].abs().sum() > 0
    assert not torch.allclose(grads["detached"], grads["exact"])


def test_detached_gradient_is_diagonal_straight_through(tiny_prior, generator):
    """Pixels never clamped get dL/dx0 / sqrt(alpha_900) (method-notes section 1)."""
    x_T = (0.01 * torch.randn(1, 1, 16, 16, generator=generator)).requires_grad_(True)
    with torch.no_grad():
        x0 = tiny_prior.decode(x_T)
    weights = torch.randn(1, 1, 16, 16, generator=generator)
    (tiny_prior.decode(x_T) * weights).sum().backward()
    a900 = tiny_prior.alphas_cumprod[900]
    interior = x0.abs() < 0.9  # heuristically unclamped at the last step
    ratio = x_T.grad[interior] / weights[interior]
    assert ratio.numel() > 0
    assert ratio.max() <= 1.0 / a900 ** 0.5 * 1.0001


def test_exact_mode_with_and_without_checkpointing_agree(tiny_prior, generator):
    x_T = torch.randn(1, 1, 16, 16, generator=generator)
    grads = []
    for ckpt in (True, False):
        latent = x_T.clone().requires_grad_(True)
        tiny_prior.decode(latent, grad_mode="exact", checkpointing=ckpt).square().sum().backward()
        grads.append(latent.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_prediction_types_match_diffusers(generator, prediction_type, tiny_unet_config_factory, bird_scheduler_config):
    from diffusers import DDIMScheduler

    config = {**bird_scheduler_config, "prediction_type": prediction_type}
    prior = DiffusionPrior.from_config(tiny_unet_config_factory(), config, seed=1)
    x_T = torch.randn(1, 1, 16, 16, generator=generator)
    scheduler = DDIMScheduler(**config, clip_sample=True, set_alpha_to_one=True, steps_offset=0)
    scheduler.set_timesteps(10)
    x = x_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(prior.unet(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(prior.decode(x_T), x, atol=1e-5, rtol=0)


def test_prior_is_frozen(tiny_prior):
    assert not tiny_prior.unet.training
    assert all(not p.requires_grad for p in tiny_prior.unet.parameters())
    tiny_prior.train()
    assert not tiny_prior.unet.training
    assert tiny_prior.image_size == 16 and tiny_prior.channels == 1


def test_save_pretrained_round_trip(tiny_prior, tmp_path, generator, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_prior.save_pretrained(tmp_path / "prior")
    assert (folder / "unet" / "config.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
    loaded = DiffusionPrior.from_pretrained(folder)
    saved, reloaded = tiny_prior.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)  # bit for bit
    x_T = torch.randn(1, 1, 16, 16, generator=generator)
    # the same weights in two module instances may take different CPU kernel paths (seen on AMD EPYC: 3e-6)
    torch.testing.assert_close(loaded.decode(x_T), tiny_prior.decode(x_T), atol=1e-5, rtol=0)
    assert loaded.scheduler_config["beta_end"] == pytest.approx(0.02)


def test_bare_unet_folder_uses_default_schedule(tiny_prior, tmp_path):
    tiny_prior.unet.save_pretrained(tmp_path / "bare")
    loaded = DiffusionPrior.from_pretrained(tmp_path / "bare")
    assert loaded.alphas_cumprod == pytest.approx(tiny_prior.alphas_cumprod)
    assert loaded.prediction_type == "epsilon"


def test_ddpm_pipeline_folder_loads(tiny_unet, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    DDPMPipeline(unet=tiny_unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    prior = DiffusionPrior.from_pretrained(tmp_path / "pipe")
    assert prior.prediction_type == "v_prediction"
    expected = scheduler.alphas_cumprod[900].item()
    assert prior.alphas_cumprod[900] == pytest.approx(expected, rel=1e-6)


def test_missing_prior_raises_prior_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PriorError, match="prior"):
        DiffusionPrior.from_pretrained(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorError, match="unet/config.json"):
        DiffusionPrior.from_pretrained(tmp_path / "empty")
    with pytest.raises(PriorError, match="HF_HUB_OFFLINE"):
        DiffusionPrior.from_pretrained("no-such-owner/no-such-model")
    monkeypatch.setenv("CTBIRD_DEFAULT_PRIOR", str(tmp_path / "nowhere"))
    with pytest.raises(PriorError, match="CTBIRD_DEFAULT_PRIOR"):
        default_prior_path()


def test_non_unet_config_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(PriorError, match="UNet2DModel"):
        DiffusionPrior.from_pretrained(tmp_path)


def test_sample_is_seeded_and_in_range(tiny_prior):
    a = tiny_prior.sample(2, generator=torch.Generator().manual_seed(3), delta_t=100)
    b = tiny_prior.sample(2, generator=torch.Generator().manual_seed(3), delta_t=100)
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1.0


def test_image_size_override_decodes_other_sides_of_the_convolutional_unet(tiny_prior, tmp_path, generator):
    assert tiny_prior.size_multiple == 2 and tiny_prior.image_size == tiny_prior.trained_image_size == 16
    with pytest.raises(ConfigError, match="image_size"):
        tiny_prior.decode(torch.randn(1, 1, 32, 32, generator=generator))
    bigger = DiffusionPrior(tiny_prior.unet, tiny_prior.scheduler_config, image_size=32)
    x_T = torch.randn(1, 1, 32, 32, generator=generator)
    ref = _diffusers_ddim_loop(tiny_prior.unet, x_T, 250)
    torch.testing.assert_close(bigger.decode(x_T, delta_t=250), ref, atol=1e-5, rtol=0)
    assert bigger.shape == (1, 32, 32) and bigger.trained_image_size == 16
    for bad in (15, 0, 32.0, True):
        with pytest.raises(ConfigError, match="multiple of 2"):
            DiffusionPrior(tiny_prior.unet, tiny_prior.scheduler_config, image_size=bad)
    loaded = DiffusionPrior.from_pretrained(tiny_prior.save_pretrained(tmp_path / "p"), image_size=8)
    assert loaded.image_size == 8 and loaded.sample(1, generator=generator, delta_t=500).shape == (1, 1, 8, 8)
