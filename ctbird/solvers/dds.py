"""The DDS chain (Decomposed Diffusion Sampling, Chung, Lee & Ye, ICLR 2024) on any affine measurement model.

DDIM sampling in which every Tweedie estimate ``x0_hat`` is pulled toward the data by a few conjugate-gradient steps
on ``||M(x0) - y||^2 + w ||x0 - x0_hat||^2`` started at ``x0_hat`` (:func:`ctbird.solvers.refine.conjugate_gradient`),
clamped to the prior's range, and the chain steps on from it with the network's noise estimate. The CT method
``dds`` runs it from pure noise (:mod:`ctbird.methods.dds`); started from a reconstruction renoised to an
intermediate timestep it refines that reconstruction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError
from .refine import conjugate_gradient


@torch.no_grad()
def dds_chain(prior, x: torch.Tensor, pairs: Sequence[tuple[int, int]], *,
              measure: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, cg_iters: int, eta: float,
              weight: float | torch.Tensor = 0.0, generator=None, history: list[float] | None = None,
              callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Run the DDS chain from ``x`` (``[B, C, h, w]``, the noisy image at timestep ``pairs[0][0]``).

    Parameters
    ----------
    prior : DiffusionPrior
        One UNet evaluation per pair (counted in ``prior.nfe``).
    pairs : sequence of ``(t, t_prev)``
        Descending DDIM timesteps; the last ``t_prev`` is negative (the clean image).
    measure : callable
        Affine measurement model ``x0 (prior scale [-1, 1]) -> y`` (its linear part's adjoint comes from autograd).
    y : Tensor
        Measurements shaped like ``measure(x0)``.
    cg_iters : int
        CG steps per sampling step (0: unconditional DDIM).
    eta : float
        DDIM stochasticity of the renoising (noise drawn with ``generator``: one, or one per batch item).
    weight : float or Tensor ``[B, 1, 1, 1]``
        Absolute anchor weight ``w`` on ``||x0 - x0_hat||^2`` (one for all, or one per batch item).
    history : list or None
        Receives each step's mean squared residual ``||M(x0_hat) - y||^2 / numel`` (batch mean).
    callback : callable or None
        ``callback({iteration, iters, loss, nfe, seconds})`` after each step.

    Returns
    -------
    Tensor ``[B, C, h, w]``: the data-consistent ``x0`` of the last step, in [-1, 1].
    """
    offset = measure(torch.zeros_like(x))

    def forward(d: torch.Tensor) -> torch.Tensor:
        return measure(d) - offset

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            d = torch.zeros_like(x, requires_grad=True)
            grad, = torch.autograd.grad(measure(d), d, grad_outputs=r)
        return grad

    nfe0, start = prior.nfe, time.perf_counter()
    x0 = x
    for i, (t, t_prev) in enumerate(pairs, start=1):
        x0_hat = prior.predict_x0(x, t)
        residual = y - measure(x0_hat)
        if history is not None:
            history.append(float(residual.square().flatten(1).mean(dim=1).mean()))
        x0 = conjugate_gradient(lambda v: adjoint(forward(v)) + weight * v, x0_hat, adjoint(residual),
                                cg_iters).clamp(-1.0, 1.0)
        if t_prev >= 0:
            shifted = x + math.sqrt(prior.schedule.alpha(t)) * (x0 - x0_hat)  # re-derives the network's eps
            x = prior.schedule.ddim_step(shifted, x0, t, t_prev, eta=eta, generator=generator)
        if callback is not None:
            callback({"iteration": i, "iters": len(pairs), "loss": residual.square().mean().item(),
                      "nfe": prior.nfe - nfe0, "seconds": time.perf_counter() - start})
    return x0


def refinement_pairs(t_start: int, delta_t: int) -> list[tuple[int, int]]:
    """DDIM pairs ``(t, t - delta_t)`` for ``t = t_start, t_start - delta_t, ...`` down to ``t >= 0`` (the last
    ``t_prev`` is negative: the clean image); ``t_start // delta_t + 1`` pairs."""
    return [(t, t - delta_t) for t in range(t_start, -1, -delta_t)]


@torch.no_grad()
def refine_by_dds(prior, x0: torch.Tensor, *, t_start: int, delta_t: int, measure: Callable[[torch.Tensor], torch.Tensor],
                  y: torch.Tensor, cg_iters: int, eta: float, generator=None, weight: float | torch.Tensor = 0.0,
                  start_noise: float | torch.Tensor = 0.0, history: list[float] | None = None,
                  callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Refine a reconstruction ``x0`` (``[B, C, h, w]``, prior scale) by the DDS chain from timestep ``t_start``.

    ``x0`` is renoised to ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t - a_t s^2) z`` (``z`` drawn with ``generator``) and
    :func:`dds_chain` runs the :func:`refinement_pairs` down to the clean image: the prior repairs what the first
    solver left off the image manifold while every step is pulled back to the data. ``s`` (``start_noise``: one value
    or one per item ``[B]``) is the std of the white noise ``x0`` already carries on the prior's scale, so only the
    rest of ``t_start``'s noise is drawn (none once ``s`` reaches it). Returns ``[B, C, h, w]`` in [-1, 1].
    """
    from ..priors.schedule import randn

    if not 0 <= t_start < prior.num_train_timesteps:
        raise ConfigError(f"refine_from_t must lie in [0, {prior.num_train_timesteps - 1}], got {t_start}.")
    a = prior.schedule.alpha(t_start)
    carried = torch.as_tensor(start_noise, dtype=x0.dtype, device=x0.device).reshape(-1, *([1] * (x0.dim() - 1)))
    fresh = (1.0 - a - a * carried.square()).clamp_min(0.0).sqrt()
    x = math.sqrt(a) * x0 + fresh * randn(tuple(x0.shape), generator=generator, device=x0.device)
    return dds_chain(prior, x, refinement_pairs(t_start, delta_t), measure=measure, y=y, cg_iters=cg_iters, eta=eta,
                     weight=weight, generator=generator, history=history, callback=callback)
