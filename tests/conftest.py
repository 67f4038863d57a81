"""Shared fixtures: tiny diffusers UNets built from config (no download) and seeded generators."""

from __future__ import annotations

import os

import pytest
import torch

# The test machines are small and shared: intra-op threads only add contention for these tiny tensors.
torch.set_num_threads(int(os.environ.get("CTBIRD_TEST_THREADS", "1")))

TINY_UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 4,
}

#: The BIRD reference scheduler (linear betas 1e-4..0.02, 1000 steps, epsilon).
BIRD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


def tiny_unet_config(channels: int = 1, size: int = 16) -> dict:
    return {**TINY_UNET_CONFIG, "in_channels": channels, "out_channels": channels, "sample_size": size}


@pytest.fixture
def tiny_unet_config_factory():
    """``f(channels=1, size=16) -> dict``: a UNet2DModel config small enough for CPU tests."""
    return tiny_unet_config


@pytest.fixture
def bird_scheduler_config() -> dict:
    """The BIRD reference scheduler config (a fresh copy)."""
    return dict(BIRD_SCHEDULER_CONFIG)


@pytest.fixture
def tiny_unet():
    """A seeded 1-channel 16x16 UNet2DModel (random weights)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**TINY_UNET_CONFIG).eval()


@pytest.fixture
def tiny_prior():
    """A 1-channel 16x16 DiffusionPrior with seeded random weights and the BIRD schedule."""
    from ctbird.priors import DiffusionPrior

    return DiffusionPrior.from_config(TINY_UNET_CONFIG, BIRD_SCHEDULER_CONFIG, seed=0)


@pytest.fixture
def tiny_rgb_prior():
    """A 3-channel 16x16 DiffusionPrior (photographs)."""
    from ctbird.priors import DiffusionPrior

    return DiffusionPrior.from_config(tiny_unet_config(3), BIRD_SCHEDULER_CONFIG, seed=0)


@pytest.fixture
def generator():
    """A CPU ``torch.Generator`` seeded with 0."""
    return torch.Generator().manual_seed(0)


class GaussianDataDenoiser(torch.nn.Module):
    """Test double for a *trained* UNet: the exact epsilon-predictor for data ``x0 ~ N(0, data_std^2 I)``.

    ``eps_hat(x_t, t) = sqrt(1 - a_t) x_t / (1 - a_t + a_t data_std^2)``. Its DDIM decode is a smooth
    (almost linear) map with few clamped pixels, like a real prior on in-distribution images, so solver
    convergence can be tested in seconds. Random-weight UNets saturate ``x0`` at +-1 almost everywhere.
    """

    def __init__(self, channels: int = 1, size: int = 16, data_std: float = 0.5) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(in_channels=channels, out_channels=channels, sample_size=size)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device and dtype
        self.data_std = data_std

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        from types import SimpleNamespace

        a = self.alphas_cumprod[torch.as_tensor(t, device=x.device).long()].view(-1, 1, 1, 1).to(x.dtype)
        eps = (1 - a).sqrt() * x / (1 - a + a * self.data_std ** 2) + 0 * self.anchor
        return SimpleNamespace(sample=eps)


@pytest.fixture
def gaussian_prior():
    """A 1-channel 16x16 DiffusionPrior around :class:`GaussianDataDenoiser` (well-behaved decode)."""
    from ctbird.priors import DiffusionPrior

    return DiffusionPrior(GaussianDataDenoiser(), BIRD_SCHEDULER_CONFIG)
