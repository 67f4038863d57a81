"""The diffusion noise schedule and the DDIM step: the one definition that training, the prior and the solvers use.

A DDPM (Ho et al. 2020) noises a clean image ``x0`` to ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with
``a_t = alphas_cumprod[t]``; a DDIM step (Song et al. 2021) goes from ``x_t`` to ``x_{t_prev}`` through the
network's estimate of ``x0``. ctbird's priors are trained and decoded on :data:`SCHEDULER_CONFIG`; a prior folder
may bring another diffusers schedule, which :class:`NoiseSchedule` reads the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch

from ..errors import ConfigError, PriorError

#: ctbird's noise schedule (BIRD's reference one): 1000 steps, linear betas 1e-4 .. 0.02, epsilon prediction;
#: with ``x0`` clipped to [-1, 1], final ``alpha_prev = 1`` and "leading" timesteps without offset, it is also
#: the diffusers ``DDIMScheduler`` config that training writes to ``scheduler/scheduler_config.json`` and the
#: schedule of a prior folder without one. Read-only.
SCHEDULER_CONFIG: Mapping = MappingProxyType({
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
})
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


class NoiseSchedule:
    """``alphas_cumprod`` of a diffusers DDPM/DDIM scheduler config, its DDIM timesteps and the DDIM update.

    Only the schedule (``num_train_timesteps``, ``beta_*`` or ``trained_betas``) and ``prediction_type`` are
    read: the DDIM details (``x0`` clamped to [-1, 1], final ``alpha_prev = 1``, leading timesteps) are fixed.

    Parameters
    ----------
    config : mapping or None
        A diffusers scheduler config; ``None`` means :data:`SCHEDULER_CONFIG`.

    Raises
    ------
    PriorError
        If the config does not describe a schedule diffusers can build, or has an unknown prediction type.
    """

    def __init__(self, config: Mapping | None = None) -> None:
        from diffusers import DDIMScheduler

        config = dict(SCHEDULER_CONFIG if config is None else config)
        self.prediction_type: str = config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise PriorError(f"Unsupported prediction_type {self.prediction_type!r} in the scheduler config; "
                             f"expected one of {PREDICTION_TYPES}.")
        known = {k: v for k, v in config.items() if not k.startswith("_")}
        try:
            scheduler = DDIMScheduler.from_config(known)
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise PriorError(f"Cannot build a noise schedule from the scheduler config {known}: {exc}") from exc
        self.config = config
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        # python floats (of diffusers' float32 values): no device syncs inside the DDIM loop
        self.alphas_cumprod: tuple[float, ...] = tuple(float(a) for a in scheduler.alphas_cumprod.to(torch.float32))

    def alpha(self, t: int) -> float:
        """``alphas_cumprod[t]``, and 1 for ``t < 0`` (the clean image)."""
        return self.alphas_cumprod[t] if t >= 0 else 1.0

    def timestep_of_noise(self, std: float) -> int:
        """The first timestep whose noise-to-signal ratio ``sqrt((1 - a_t) / a_t)`` reaches ``std`` (the std of white
        noise on an image of the prior's [-1, 1] scale): ``x_t / sqrt(a_t)`` is then such an image. 0 for ``std`` at or
        below the first ratio; the last timestep for any ``std`` beyond the schedule."""
        for t, a in enumerate(self.alphas_cumprod):
            if math.sqrt((1.0 - a) / a) >= std:
                return t
        return self.num_train_timesteps - 1

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` for ``[B, ...]`` images and integer timesteps ``t`` ``[B]``."""
        alphas = torch.tensor(self.alphas_cumprod, dtype=torch.float32, device=x0.device)
        a = alphas[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def timestep_pairs(self, delta_t: int = 100) -> list[tuple[int, int]]:
        """``(t, t_prev)`` pairs of the "leading" DDIM schedule with step ``delta_t``.

        As diffusers' ``set_timesteps(T // delta_t)`` with ``steps_offset=0``: ``n = T // delta_t`` steps,
        ratio ``T // n``, ``t = (n-1)*ratio, ..., ratio, 0`` and ``t_prev = t - ratio`` (negative means
        ``alpha_prev = 1``). ``delta_t=100`` with ``T=1000`` gives ``t = 900, 800, ..., 0``.
        """
        T = self.num_train_timesteps
        if isinstance(delta_t, bool) or not isinstance(delta_t, int) or not 1 <= delta_t <= T:
            raise ConfigError(f"delta_t must be an integer in [1, {T}] (the DDIM step), got {delta_t!r}. "
                              "BIRD uses delta_t=100 (10 steps).")
        n = T // delta_t
        ratio = T // n
        return [(i * ratio, i * ratio - ratio) for i in reversed(range(n))]

    def predict_x0(self, x: torch.Tensor, model_output: torch.Tensor, t: int) -> torch.Tensor:
        """``x0`` implied by the network output at timestep ``t`` (any prediction type), clamped to [-1, 1]."""
        a_t = self.alpha(t)
        if self.prediction_type == "epsilon":
            x0 = (x - math.sqrt(1.0 - a_t) * model_output) / math.sqrt(a_t)
        elif self.prediction_type == "v_prediction":
            x0 = math.sqrt(a_t) * x - math.sqrt(1.0 - a_t) * model_output
        else:
            x0 = model_output
        return x0.clamp(-1.0, 1.0)

    def ddim_step(self, x: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int, eta: float = 0.0,
                  generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """One DDIM step ``x_t -> x_{t_prev}`` given the (clamped) estimate ``x0``.

        ``eps`` is re-derived from ``x`` and ``x0``; ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z``
        with ``s = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev))`` and ``z`` standard normal noise drawn
        with ``generator`` (only when ``s > 0``; one generator per batch item, or one for all). ``eta = 0``: deterministic DDIM; ``eta = 1``: DDPM-like.
        """
        a_t, a_prev = self.alpha(t), self.alpha(t_prev)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * randn(tuple(x.shape), generator=generator, device=x.device)
        return x_prev

    def save(self, folder: str | Path) -> Path:
        """Write the schedule as a diffusers ``DDIMScheduler`` config, ``folder/scheduler_config.json``."""
        from diffusers import DDIMScheduler

        DDIMScheduler.from_config({k: v for k, v in self.config.items() if not k.startswith("_")}).save_config(folder)
        return Path(folder) / "scheduler_config.json"

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.config!r})"


def randn(shape: tuple[int, ...], *, generator: torch.Generator | Sequence[torch.Generator] | None,
          device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device`` (reproducible across devices).

    A sequence of generators draws one equal share of ``shape[0]`` each, in order (item ``b`` of a batch from
    ``generator[b]``, so an item's noise does not depend on the rest of its batch).
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        if not generator or shape[0] % len(generator):
            raise ValueError(f"{len(generator)} generators cannot share a batch of {shape[0]}")
        rows = shape[0] // len(generator)
        return torch.cat([randn((rows, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


__all__ = ["SCHEDULER_CONFIG", "PREDICTION_TYPES", "NoiseSchedule", "randn"]
