"""BIRD as a CT method: ``bird`` (BIRD, then the DDS refinement of its image) and ``bird-raw`` (BIRD's decode alone,
for ablations)."""

from __future__ import annotations

import dataclasses

import torch

from ..config import BirdConfig
from ..solvers.bird import BIRD, BirdResult
from ..solvers.dds import refine_by_dds, refinement_pairs
from ..units import unit_to_hu
from .base import CTProblem, Reconstruction, resize


def _run_bird(problem: CTProblem, config: BirdConfig, generator) -> BirdResult:
    """BIRD on the CT data term ``||F (A T(x0) - y)||^2`` (``F``: :class:`operators.SinogramFilter` of exponent
    ``config.data_filter``; none when it is ``None``), ``T`` = :meth:`CTProblem.prior_to_measured`."""
    fitted, y = problem.radon, problem.sinogram
    if config.data_filter is not None:
        from operators import SinogramFilter

        weighting = SinogramFilter(problem.radon.out_shape, exponent=config.data_filter).to(y.device)
        fitted, y = weighting @ problem.radon, weighting(y)
    solver = BIRD(problem.prior, fitted, config, input_transform=problem.prior_to_measured, callback=problem.callback)
    return solver.run(y, generator=generator)


def _refine(problem: CTProblem, config: BirdConfig, out: BirdResult, generator) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Every restart of ``out`` refined by :func:`refine_by_dds` on the plain data term ``||A T(x0) - y||^2``.

    Returns the image ``[B, C, h, w]`` (the mean of the refined restarts; prior scale), their per-pixel std (``None``
    for one restart) and the refinement's UNet evaluations.
    """
    batch, n = out.samples.shape[:2]
    y = problem.sinogram.repeat_interleave(n, dim=0) if n > 1 else problem.sinogram
    nfe0 = problem.prior.nfe
    refined = refine_by_dds(problem.prior, out.samples.flatten(0, 1), t_start=config.refine_from_t,
                            delta_t=config.refine_delta_t, y=y, cg_iters=config.refine_cg_iters, eta=config.refine_eta,
                            measure=lambda x0: problem.radon(problem.prior_to_measured(x0)), generator=generator,
                            callback=problem.callback)
    refined = refined.view(batch, n, *refined.shape[1:])
    return refined.mean(dim=1), (refined.std(dim=1) if n > 1 else None), problem.prior.nfe - nfe0


def _reconstruction(method: str, problem: CTProblem, out: BirdResult, image: torch.Tensor, std: torch.Tensor | None,
                    config: BirdConfig, nfe: int, info: dict) -> Reconstruction:
    hu_per_unit = float(unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0)))
    size = (problem.image_size, problem.image_size)
    mu = problem.prior_to_measured(image).detach()
    uncertainty = resize(std, size) * hu_per_unit if std is not None else None
    return Reconstruction(image=problem.prior_to_hu(image), method=method, mu=mu, uncertainty=uncertainty,
                          seconds=0.0, nfe=nfe, loss_history=out.loss_history, grad_mode=out.grad_mode,
                          delta_t=out.delta_t, pixel_spacing_mm=problem.pixel_spacing_mm, solver_result=out,
                          config=config, info={**config.to_dict(), "iters_run": out.iters_run,
                                               "final_loss": out.final_loss.tolist(), **info})


def bird(problem: CTProblem, config: BirdConfig) -> Reconstruction:
    """BIRD, then (``refine_from_t > 0``) the DDS refinement of every restart; the image is the mean of the refined
    restarts and the uncertainty their per-pixel std. NFE counts both stages."""
    generator = problem.generator()
    out = _run_bird(problem, config, generator)
    if config.refine_from_t == 0:
        return _reconstruction("bird", problem, out, out.image, out.uncertainty, config, out.nfe, {"refine_nfe": 0})
    image, std, refine_nfe = _refine(problem, config, out, generator)
    with torch.no_grad():
        residual = problem.radon(problem.prior_to_measured(image)) - problem.sinogram
    return _reconstruction("bird", problem, out, image, std, config, out.nfe + refine_nfe,
                           {"refine_nfe": refine_nfe, "refine_steps": len(refinement_pairs(config.refine_from_t,
                                                                                           config.refine_delta_t)),
                            "refined_loss": residual.square().flatten(1).mean(dim=1).tolist()})


def bird_raw(problem: CTProblem, config: BirdConfig) -> Reconstruction:
    """BIRD's decode of the optimized ``x_T`` alone (``bird`` with ``refine_from_t = 0``, whatever the setting):
    the best-fitting restart, and the std across restarts."""
    return dataclasses.replace(bird(problem, config.replace(refine_from_t=0)), method="bird-raw")
