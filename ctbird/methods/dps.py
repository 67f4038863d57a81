"""DPS (diffusion posterior sampling) as a CT method: the prior-based baseline."""

from __future__ import annotations

from ..config import DPSConfig
from ..solvers.dps import DPS
from .base import CTProblem, Reconstruction


def dps(problem: CTProblem, config: DPSConfig) -> Reconstruction:
    """DPS with the guidance step ``config.zeta`` relative to the measurement model's Lipschitz constant
    (``d(mu * px) / d(unit) * ||A||``), so one setting fits every pixel spacing and geometry."""
    zeta = config.zeta / problem.measurement_norm()
    out = DPS(problem.prior, problem.radon, steps=config.iters, zeta=zeta, eta=config.eta,
              input_transform=problem.prior_to_measured, callback=problem.callback).run(
        problem.sinogram, generator=problem.generator())
    return Reconstruction(image=problem.prior_to_hu(out.image), method="dps", mu=out.transformed, uncertainty=None,
                          seconds=0.0, nfe=out.nfe, loss_history=out.loss_history, grad_mode="exact",
                          delta_t=problem.prior.num_train_timesteps // config.iters,
                          pixel_spacing_mm=problem.pixel_spacing_mm, solver_result=out, config=config,
                          info={"zeta": zeta, "steps": config.iters})
