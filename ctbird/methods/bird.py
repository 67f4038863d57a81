"""BIRD and BIRD + data consistency as CT methods."""

from __future__ import annotations

import torch

from .. import baselines
from ..config import BirdConfig, DCConfig
from ..solvers.bird import BIRD, BirdResult
from ..units import unit_to_hu
from .base import CTProblem, Reconstruction, resize


def _run_bird(problem: CTProblem, config: BirdConfig) -> BirdResult:
    """BIRD on the CT data term ``||F (A T(x0) - y)||^2`` (``F``: :class:`operators.SinogramFilter` of exponent
    ``config.data_filter``; none when it is ``None``), ``T`` = :meth:`CTProblem.prior_to_measured`."""
    fitted, y = problem.radon, problem.sinogram
    if config.data_filter is not None:
        from operators import SinogramFilter

        weighting = SinogramFilter(problem.radon.out_shape, exponent=config.data_filter).to(y.device)
        fitted, y = weighting @ problem.radon, weighting(y)
    solver = BIRD(problem.prior, fitted, config, input_transform=problem.prior_to_measured, callback=problem.callback)
    return solver.run(y, generator=problem.generator())


def _result(method: str, problem: CTProblem, out: BirdResult, hu: torch.Tensor, mu: torch.Tensor,
            config: BirdConfig) -> Reconstruction:
    hu_per_unit = float(unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0)))
    size = (problem.image_size, problem.image_size)
    uncertainty = resize(out.uncertainty, size) * hu_per_unit if out.uncertainty is not None else None
    return Reconstruction(image=hu.to(torch.float32), method=method, mu=mu.detach(), uncertainty=uncertainty,
                          seconds=0.0, nfe=out.nfe, loss_history=out.loss_history, grad_mode=out.grad_mode,
                          delta_t=out.delta_t, pixel_spacing_mm=problem.pixel_spacing_mm, solver_result=out,
                          config=config, info={**config.to_dict(), "iters_run": out.iters_run,
                                               "final_loss": out.final_loss.tolist()})


def bird(problem: CTProblem, config: BirdConfig) -> Reconstruction:
    """BIRD: the prior's decode of the optimized initial noise."""
    out = _run_bird(problem, config)
    return _result("bird", problem, out, problem.prior_to_hu(out.image), out.transformed, config)


def bird_dc(problem: CTProblem, config: DCConfig) -> Reconstruction:
    """BIRD, then ``dc_iters`` conjugate-gradient steps toward the data anchored at BIRD's image
    (:func:`ctbird.solvers.refine_data_consistency`)."""
    from ..solvers.refine import refine_data_consistency

    out = _run_bird(problem, config)
    mu = refine_data_consistency(problem.sinogram, problem.radon, out.transformed, weight=config.dc_weight,
                                 iters=config.dc_iters, nonneg=True, op_norm=baselines.operator_norm(problem.radon))
    return _result("bird+dc", problem, out, problem.measured_to_hu(mu), mu, config)
