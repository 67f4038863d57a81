"""Diffusion Posterior Sampling (Chung et al., ICLR 2023) on a :class:`DiffusionPrior`: the baseline for BIRD.

At every step ``t -> t_prev`` of a DDIM schedule (``eta = 1`` ~ DDPM ancestral sampling, ``eta = 0``
deterministic DDIM): ``x0_hat = x0_hat(x_t)`` by the UNet (Tweedie), an unconditional update
``x'_{t_prev} = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - s^2) eps_hat + s z``, then the measurement guidance
``x_{t_prev} = x'_{t_prev} - zeta * grad_{x_t} ||y - A(T(x0_hat(x_t)))||``. The gradient of the residual *norm*
(not its square) is the paper's step ``zeta_t = zeta / ||y - A(x0_hat)||`` applied to the squared residual
(up to the factor 2), as in the official code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from operators.base import Operator

from ..config import DPSConfig
from ..errors import ConfigError, InputError
from ..priors.diffusion import DiffusionPrior
from .bird import Generators, randn_per_item


@dataclass
class DPSResult:
    """Outcome of :meth:`DPS.run`.

    Attributes
    ----------
    image : Tensor ``[B, C, H, W]``
        Final sample ``x0`` in ``[-1, 1]``.
    transformed : Tensor
        ``input_transform(image)`` (operator input scale).
    loss_history : list of float
        Mean residual norm ``||y - A(T(x0_hat))||`` per step.
    final_loss : Tensor ``[B]``
        Mean squared residual of the final image.
    nfe : int
        UNet evaluations (one per step, each backpropagated).
    seconds : float
    steps, zeta, eta, method
    """

    image: torch.Tensor
    transformed: torch.Tensor
    loss_history: list[float]
    final_loss: torch.Tensor
    nfe: int
    seconds: float
    steps: int
    zeta: float
    eta: float
    method: str = "dps"
    info: dict = field(default_factory=dict)


class DPS:
    """Diffusion Posterior Sampling with a non-blind operator.

    Parameters
    ----------
    prior : DiffusionPrior
    operator : operators.Operator
        Forward model on the ``input_transform`` scale (its parameters are not estimated).
    zeta : float
        Guidance step size on the gradient of the residual norm (paper: 0.3-1.0 for images in [-1, 1]; the CT
        method scales :class:`ctbird.config.DPSConfig`'s relative ``zeta`` by the measurement model's Lipschitz
        constant).
    steps : int
        Sampling steps (``delta_t = T // steps``; 1000 = every DDPM step).
    eta : float
        DDIM stochasticity (1: DDPM-like ancestral sampling, 0: deterministic).
    input_transform : callable or None
        As in :class:`ctbird.solvers.BIRD`.
    callback : callable or None
        ``callback(dict(iteration, iters, loss, nfe, seconds))`` after every step.
    """

    def __init__(self, prior: DiffusionPrior, operator: Operator, *, zeta: float, steps: int = DPSConfig.iters,
                 eta: float = DPSConfig.eta, input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 callback: Callable[[dict], None] | None = None) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= prior.num_train_timesteps:
            raise ConfigError(f"steps must be an integer in [1, {prior.num_train_timesteps}], got {steps!r}.")
        if not (math.isfinite(zeta) and zeta >= 0):
            raise ConfigError(f"zeta must be a finite number >= 0, got {zeta!r}.")
        if not (0.0 <= eta <= 1.0):
            raise ConfigError(f"eta must be in [0, 1], got {eta!r}.")
        self.prior, self.operator = prior, operator
        self.steps, self.zeta, self.eta = steps, float(zeta), float(eta)
        self.input_transform = input_transform
        self.callback = callback

    def _measure(self, x0: torch.Tensor) -> torch.Tensor:
        return self.operator(self.input_transform(x0) if self.input_transform is not None else x0)

    def run(self, y: torch.Tensor, generator: Generators = None) -> DPSResult:
        """Sample ``x0`` given ``y`` ``[B, *operator.out_shape]``.

        ``generator`` seeds ``x_T`` and the noise: one ``torch.Generator`` for the batch, or a sequence of ``B`` (item
        ``b``'s draws from ``generator[b]``: an item is sampled as it would be alone).
        """
        expected = tuple(self.operator.out_shape)
        if not isinstance(y, torch.Tensor) or y.dim() != len(expected) + 1 or tuple(y.shape[1:]) != expected:
            raise InputError(f"y must be a tensor of shape [B, {', '.join(map(str, expected))}], "
                             f"got {list(getattr(y, 'shape', []))}.")
        prior, device = self.prior, self.prior.device
        y = y.to(device=device, dtype=torch.float32)
        self.operator.to(device)
        pairs = prior.timestep_pairs(prior.num_train_timesteps // self.steps)
        x = randn_per_item(y.shape[0], 1, prior.shape, generator, device=device)
        nfe0, start, history = prior.nfe, time.perf_counter(), []
        for i, (t, t_prev) in enumerate(pairs, start=1):
            x = x.detach().requires_grad_(True)
            x0 = prior.predict_x0(x, t)
            residual = (self._measure(x0) - y).flatten(1).norm(dim=1)
            grad, = torch.autograd.grad(residual.sum(), x)
            with torch.no_grad():
                x = self.prior.schedule.ddim_step(x, x0, t, t_prev, eta=self.eta, generator=generator) - self.zeta * grad
            history.append(float(residual.detach().mean()))
            if self.callback is not None:
                self.callback({"iteration": i, "iters": len(pairs), "loss": history[-1], "nfe": prior.nfe - nfe0,
                               "seconds": time.perf_counter() - start})
        image = x.detach().clamp(-1.0, 1.0)
        with torch.no_grad():
            transformed = self.input_transform(image) if self.input_transform is not None else image
            final = (self.operator(transformed) - y).square().flatten(1).mean(dim=1)
        return DPSResult(image=image, transformed=transformed, loss_history=history, final_loss=final,
                         nfe=prior.nfe - nfe0, seconds=time.perf_counter() - start, steps=len(pairs),
                         zeta=self.zeta, eta=self.eta)
