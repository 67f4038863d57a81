"""Data-consistency refinement of a reconstruction, and the one conjugate gradient of ctbird.

Solves ``min_x ||A x - y||^2 + w ||x - x_prior||^2`` with ``w = weight * ||A||^2`` by a few conjugate-gradient
steps on the normal equations ``(A^T A + w I) x = A^T y + w x_prior``, started at ``x_prior``. The prior's
image is the anchor; CG moves it toward the measurements mostly along the well-measured directions of ``A``.
:func:`conjugate_gradient` is the one CG of ctbird (also the data step of the ``dds`` method).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from operators.base import LinearOperator

from ..errors import ConfigError, InputError


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(dim=1).view(-1, *([1] * (a.dim() - 1)))


@torch.no_grad()
def refine_data_consistency(y: torch.Tensor, operator: LinearOperator, x_prior: torch.Tensor, *,
                            weight: float, iters: int, nonneg: bool = False,
                            op_norm: float | None = None) -> torch.Tensor:
    """Pull ``x_prior`` toward data consistency.

    Parameters
    ----------
    y : Tensor ``[B, *operator.out_shape]``
        Measurements (same units as ``operator(x)``).
    operator : LinearOperator
        Linear forward model with an exact adjoint.
    x_prior : Tensor ``[B, *operator.in_shape]``
        Starting point and anchor (e.g. BIRD's reconstruction on the operator's input scale).
    weight : float
        Anchor weight relative to ``||A||^2`` (``w = weight * ||A||^2``); larger stays closer to ``x_prior``
        (the former ``bird+dc`` used 0.002 with 30 iterations; :mod:`ctbird.solvers.dds` replaced it in ``bird``).
    iters : int
        Conjugate-gradient iterations (each one ``A`` and one ``A^T``).
    nonneg : bool
        Clamp the result at 0 (attenuation is non-negative).
    op_norm : float or None
        ``||A||`` if known (else estimated by the power method).

    Returns
    -------
    Tensor ``[B, *operator.in_shape]``
    """
    if not isinstance(operator, LinearOperator):
        raise ConfigError(f"Data-consistency refinement needs a LinearOperator, got {type(operator).__name__}.")
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"weight must be a positive finite number, got {weight!r}.")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ConfigError(f"iters must be an integer >= 0, got {iters!r}.")
    if y.shape[0] != x_prior.shape[0]:
        raise InputError(f"y and x_prior must have the same batch size, got {y.shape[0]} and {x_prior.shape[0]}.")
    norm = operator.norm(dtype=x_prior.dtype, device=x_prior.device) if op_norm is None else op_norm
    w = weight * norm ** 2
    residual = operator.adjoint(y - operator(x_prior))  # b - M x at x = x_prior (the anchor term vanishes)
    x = conjugate_gradient(lambda v: operator.adjoint(operator(v)) + w * v, x_prior, residual, iters)
    return x.clamp_min(0.0) if nonneg else x


@torch.no_grad()
def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, residual: torch.Tensor,
                       iters: int) -> torch.Tensor:
    """``iters`` conjugate-gradient steps on ``M x = b`` for a symmetric positive semi-definite ``M``, per sample.

    Parameters
    ----------
    normal : callable
        ``v -> M v`` on tensors ``[B, ...]`` shaped like ``x`` (e.g. ``A^T A v + w v``).
    x : Tensor ``[B, ...]``
        Starting point ``x_0``; the iterates stay in ``x_0 + K_iters(M, r_0)`` (a Krylov subspace).
    residual : Tensor ``[B, ...]``
        ``r_0 = b - M x_0``.
    iters : int
        Steps (each one ``normal`` call); a sample whose residual vanishes stops moving.

    Returns
    -------
    Tensor ``[B, ...]``: the last iterate (a new tensor).
    """
    x = x.clone()
    r = residual.clone()
    p = r.clone()
    rs = _dot(r, r)
    for _ in range(iters):
        mp = normal(p)
        denom = _dot(p, mp)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * mp
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x
