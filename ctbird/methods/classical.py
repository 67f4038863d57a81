"""FBP, SIRT and TV as CT methods (the algorithms live in :mod:`ctbird.baselines`)."""

from __future__ import annotations

from .. import baselines
from ..config import FBPConfig, SIRTConfig, TVConfig
from .base import CTProblem, Reconstruction


def fbp(problem: CTProblem, config: FBPConfig) -> Reconstruction:
    """Filtered backprojection."""
    mu = baselines.fbp(problem.sinogram, problem.geometry, problem.image_size, filter=config.filter)
    return problem.classical("fbp", mu, config, {})


def sirt(problem: CTProblem, config: SIRTConfig) -> Reconstruction:
    """SIRT with non-negative attenuation."""
    mu = baselines.sirt(problem.sinogram, problem.radon, iters=config.iters, nonneg=True)
    return problem.classical("sirt", mu, config, {"iters": config.iters})


def tv(problem: CTProblem, config: TVConfig) -> Reconstruction:
    """Total variation (Chambolle-Pock) with non-negative attenuation."""
    mu = baselines.tv(problem.sinogram, problem.radon, lam=config.lam, iters=config.iters, nonneg=True)
    return problem.classical("tv", mu, config, {"iters": config.iters})
