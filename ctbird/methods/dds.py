"""DDS (Decomposed Diffusion Sampling; Chung, Lee & Ye, ICLR 2024) as a CT method: a prior-based baseline beside DPS.

DDIM sampling in which every denoised estimate is pulled toward the data before the step. At each step
``t -> t_prev`` (``iters`` steps, ``delta_t = 1000 // iters``):

1. ``x0_hat = x0_hat(x_t)`` by the UNet (Tweedie; one UNet evaluation, no backpropagation); its squared data
   residual (mean over the sinogram) is the step's entry of ``loss_history``;
2. ``x0' = x0_hat + argmin_{d in K} ||A T(x0_hat + d) - y||^2 + w ||d||^2`` by ``cg_iters`` conjugate-gradient
   steps (:func:`ctbird.solvers.dds.dds_chain`, :func:`ctbird.solvers.refine.conjugate_gradient`) started at ``x0_hat``: the minimisation is restricted to
   the Krylov subspace ``K`` of the normal operator at the initial residual, so ``x0'`` stays near the clean-image
   manifold's tangent space at ``x0_hat`` (the paper's argument). ``T`` is :meth:`CTProblem.prior_to_measured`, the
   measurement model of every prior-based method (prior scale -> attenuation per pixel length -> Radon);
   ``w = gamma * ||A T||^2``. ``x0'`` is clamped to the prior's range;
3. ``x_{t_prev}`` by the DDIM step of :mod:`ctbird.priors.schedule` from ``x0'`` with the network's noise estimate
   ``eps_hat`` (the step re-derives ``eps`` from ``x_t`` and its ``x0``, so it is given
   ``x_t + sqrt(a_t) (x0' - x0_hat)``, which re-derives exactly ``eps_hat``), renoised with DDIM's ``eta``.

The last step (``t_prev < 0``) returns ``x0'``. NFE = ``iters``. The official code's ``eta`` mixes fresh noise and
``eps_hat`` with weights ``eta`` and ``sqrt(1 - eta^2)`` of ``sqrt(1 - a_prev)``; ctbird uses DDIM's ``eta``
(Song et al.) of the one DDIM step instead.
"""

from __future__ import annotations

import torch

from ..config import DDSConfig
from ..errors import ConfigError
from ..priors.schedule import randn
from ..solvers.dds import dds_chain
from .base import CTProblem, Reconstruction


def dds(problem: CTProblem, config: DDSConfig) -> Reconstruction:
    """DDS on ``problem`` with ``config`` (steps, CG iterations, DDIM ``eta``, anchor weight ``gamma``)."""
    prior, y = problem.prior, problem.sinogram
    if config.iters > prior.num_train_timesteps:
        raise ConfigError(f"DDS setting 'iters' must be at most {prior.num_train_timesteps}, got {config.iters}.")
    generator = problem.generator()
    x = randn((y.shape[0], *prior.shape), generator=generator, device=prior.device)
    nfe0, history = prior.nfe, []
    weight = config.gamma * problem.measurement_norm() ** 2
    pairs = prior.timestep_pairs(prior.num_train_timesteps // config.iters)
    image = dds_chain(prior, x, pairs, measure=lambda x0: problem.radon(problem.prior_to_measured(x0)),
                      y=y.to(x.device), cg_iters=config.cg_iters, eta=config.eta,
                      weight=weight, generator=generator, history=history,
                      callback=problem.callback)
    with torch.no_grad():
        mu = problem.prior_to_measured(image)
        final = (problem.radon(mu) - y.to(mu.device)).square().flatten(1).mean(dim=1)
    return Reconstruction(image=problem.prior_to_hu(image), method="dds", mu=mu.to(torch.float32), uncertainty=None,
                          seconds=0.0, nfe=prior.nfe - nfe0, loss_history=history, grad_mode=None,
                          delta_t=prior.num_train_timesteps // config.iters, pixel_spacing_mm=problem.pixel_spacing_mm,
                          config=config, info={**config.to_dict(), "steps": len(pairs),
                                               "anchor_weight": weight,
                                               "final_loss": final.tolist()})
