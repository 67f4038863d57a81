"""Classical CT reconstructions: FBP, SIRT and TV (Chambolle-Pock), in pure torch.

All three map a sinogram ``[B, C, views, detectors]`` to images ``[B, C, N, N]`` on
the sinogram's device and dtype, batched, without gradients. Units follow
:class:`operators.radon.Radon`: the sinogram holds line integrals in *pixel length
units* (a pixel has side 1), so the reconstruction has the image's own unit
(e.g. attenuation per pixel length, or the ``[0, 1]`` of a phantom). FBP itself,
its ramp filter and the geometry conventions live in :mod:`operators.fbp`.

Each optional ``callback(iteration, x)`` is called after every iteration (1-based)
with the current estimate ``[B, C, N, N]``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from operators import fbp as filtered_backprojection
from operators.base import LinearOperator, check_shape
from operators.geometry import FanBeam, ParallelBeam

from .errors import ConfigError, ShapeError

FilterName = Literal["ram-lak", "shepp-logan", "cosine", "hann", "hamming"]
Callback = Callable[[int, torch.Tensor], object]

#: Default TV weight relative to the data: ``lam = TV_WEIGHT * ||A||^2 * s`` (see :func:`tv`).
TV_WEIGHT: float = 0.002


# --------------------------------------------------------------------------- FBP
@torch.no_grad()
def fbp(sinogram: torch.Tensor, geometry: ParallelBeam | FanBeam, image_size: int,
        filter: FilterName = "ram-lak") -> torch.Tensor:
    """Filtered backprojection without gradients: :func:`operators.fbp.fbp` (parameters and errors there).

    ``filter`` is a window of ``operators.fbp.FILTERS`` multiplying the ramp; returns ``[B, C, image_size, image_size]``.
    """
    return filtered_backprojection.fbp(sinogram, geometry, image_size, filter)


# -------------------------------------------------------------------- iterative
def _check_problem(sinogram: torch.Tensor, radon: LinearOperator, x0: torch.Tensor | None, who: str) -> None:
    if not isinstance(radon, LinearOperator):
        raise ConfigError(f"{who}: radon must be an operators.LinearOperator (e.g. operators.Radon), got {type(radon).__name__}.")
    check_shape(sinogram, radon.out_shape, "sinogram", who)
    if x0 is not None:
        check_shape(x0, radon.in_shape, "x0", who)
        if x0.shape[0] != sinogram.shape[0]:
            raise ShapeError(f"{who}: x0 has batch size {x0.shape[0]} but the sinogram {sinogram.shape[0]}; they must match.")


def _check_iters(iters: int, who: str) -> int:
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ConfigError(f"{who}: iters must be a non-negative integer, got {iters!r}.")
    return int(iters)


def _initial(sinogram: torch.Tensor, radon: LinearOperator, x0: torch.Tensor | None, nonneg: bool) -> torch.Tensor:
    if x0 is None:
        return sinogram.new_zeros((sinogram.shape[0], *radon.in_shape))
    x = x0.detach().to(device=sinogram.device, dtype=sinogram.dtype).clone()
    return x.clamp_(min=0) if nonneg else x


@torch.no_grad()
def sirt(sinogram: torch.Tensor, radon: LinearOperator, iters: int = 100, nonneg: bool = True,
         x0: torch.Tensor | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Simultaneous iterative reconstruction technique.

    ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)`` (inverse row sums) and
    ``C = 1 / (A^T 1)`` (inverse column sums), zero where a sum vanishes; then
    ``x <- max(x, 0)`` when ``nonneg``.

    Parameters
    ----------
    sinogram : torch.Tensor
        ``[B, *radon.out_shape]``, i.e. ``[B, C, views, detectors]``.
    radon : operators.LinearOperator
        The forward projector ``A`` (e.g. ``operators.Radon``), on the sinogram's device.
    iters : int
        Number of iterations.
    nonneg : bool
        Clamp the estimate to ``>= 0`` after every iteration (and ``x0``).
    x0 : torch.Tensor, optional
        ``[B, *radon.in_shape]`` start; zeros by default.
    callback : callable, optional
        ``callback(iteration, x)`` after every iteration.

    Returns
    -------
    torch.Tensor
        ``[B, *radon.in_shape]``.
    """
    _check_problem(sinogram, radon, x0, "sirt")
    iters = _check_iters(iters, "sirt")
    ones_image = sinogram.new_ones((1, *radon.in_shape))
    ones_sino = sinogram.new_ones((1, *radon.out_shape))
    row_sums, col_sums = radon(ones_image), radon.adjoint(ones_sino)
    tiny = torch.finfo(sinogram.dtype).tiny
    inv_rows = torch.where(row_sums > tiny, 1.0 / row_sums.clamp(min=tiny), torch.zeros_like(row_sums))
    inv_cols = torch.where(col_sums > tiny, 1.0 / col_sums.clamp(min=tiny), torch.zeros_like(col_sums))
    x = _initial(sinogram, radon, x0, nonneg)
    for iteration in range(1, iters + 1):
        x = x + inv_cols * radon.adjoint(inv_rows * (sinogram - radon(x)))
        if nonneg:
            x.clamp_(min=0)
        if callback is not None:
            callback(iteration, x)
    return x


_NORM_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def operator_norm(radon: LinearOperator) -> float:
    """``||A||`` by :meth:`LinearOperator.norm` (power method), cached per operator.

    The cache is invalidated when any of the operator's dense parameters or
    buffers changes (e.g. a learnable geometry being calibrated).
    """
    tensors = [t for t in list(radon.parameters()) + list(radon.buffers()) if t.layout == torch.strided]
    key = tuple((id(t), t._version, t.device) for t in tensors)
    cached = _NORM_CACHE.get(radon)
    if cached is not None and cached[0] == key:
        return cached[1]
    generator = torch.Generator().manual_seed(0)
    value = radon.norm(n_iter=100, generator=generator)
    _NORM_CACHE[radon] = (key, value)
    return value


def _gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with Neumann boundary: ``[B, C, H, W] -> [B, C, 2, H, W]`` (d/drow, d/dcol)."""
    grad = x.new_zeros((*x.shape[:2], 2, *x.shape[2:]))
    grad[:, :, 0, :-1, :] = x[:, :, 1:, :] - x[:, :, :-1, :]
    grad[:, :, 1, :, :-1] = x[:, :, :, 1:] - x[:, :, :, :-1]
    return grad


def _gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_gradient` (minus the divergence): ``[B, C, 2, H, W] -> [B, C, H, W]``."""
    out = g.new_zeros((*g.shape[:2], *g.shape[3:]))
    out[:, :, :-1, :] -= g[:, :, 0, :-1, :]
    out[:, :, 1:, :] += g[:, :, 0, :-1, :]
    out[:, :, :, :-1] -= g[:, :, 1, :, :-1]
    out[:, :, :, 1:] += g[:, :, 1, :, :-1]
    return out


def default_tv_weight(sinogram: torch.Tensor, radon: LinearOperator, op_norm: float | None = None) -> torch.Tensor:
    """The default ``lam`` of :func:`tv`, per sample ``[B, 1, 1, 1]``: ``TV_WEIGHT * ||A||^2 * s``.

    ``s`` is the value of the constant image that best fits the data,
    ``s = <A 1, y> / ||A 1||^2``, which makes the default scale with the data
    (doubling ``y`` doubles ``lam`` and hence the reconstruction).
    """
    op_norm = operator_norm(radon) if op_norm is None else float(op_norm)
    ones_projection = radon(sinogram.new_ones((1, *radon.in_shape)))
    dims = tuple(range(1, sinogram.dim()))
    scale = (ones_projection * sinogram).sum(dim=dims).abs() / ones_projection.pow(2).sum().clamp(min=1e-30)
    return (TV_WEIGHT * op_norm**2 * scale).reshape(-1, 1, 1, 1)


@torch.no_grad()
def tv(sinogram: torch.Tensor, radon: LinearOperator, lam: float | torch.Tensor | None = None, iters: int = 300,
       nonneg: bool = True, x0: torch.Tensor | None = None, callback: Callback | None = None,
       op_norm: float | None = None, step_ratio: float = 16.0) -> torch.Tensor:
    """Isotropic total-variation reconstruction by Chambolle-Pock (PDHG).

    Minimizes ``0.5 ||A x - y||^2 + lam * TV(x)`` (plus the indicator of ``x >= 0``
    when ``nonneg``), ``TV(x) = sum_pixels sqrt((d_row x)^2 + (d_col x)^2)`` with
    forward differences, per channel. Internally ``A`` is scaled to unit norm
    (``A / ||A||``, ``y / ||A||``, ``lam / ||A||^2``: the same minimizer), so that
    ``K = [A / ||A||; grad]`` has ``||K|| <= 3``; the primal and dual steps are
    ``tau = 0.99 * step_ratio / 3`` and ``sigma = 0.99 / (3 * step_ratio)``, so
    ``tau * sigma * ||K||^2 < 1`` (Chambolle & Pock 2011, Algorithm 1, theta = 1).

    Parameters
    ----------
    sinogram : torch.Tensor
        ``[B, *radon.out_shape]``.
    radon : operators.LinearOperator
        The forward projector ``A``.
    lam : float or torch.Tensor, optional
        TV weight in the objective above (a tensor broadcasts per sample, e.g.
        ``[B, 1, 1, 1]``). Default :func:`default_tv_weight`: ``0.002 * ||A||^2 * s``
        with ``s`` the best constant-image fit of the data, tuned on noiseless
        Shepp-Logan at 30 views; raise it for noisy data.
    iters : int
        PDHG iterations (one ``A`` and one ``A^T`` each).
    nonneg : bool
        Constrain ``x >= 0``.
    x0 : torch.Tensor, optional
        ``[B, *radon.in_shape]`` start (e.g. an FBP); zeros by default.
    callback : callable, optional
        ``callback(iteration, x)`` after every iteration.
    op_norm : float, optional
        ``||A||`` if known; by default :func:`operator_norm` (power method, cached).
    step_ratio : float
        ``tau / sigma`` balance of the primal and dual steps; any positive value
        converges, ``16`` was the fastest on Shepp-Logan 128-256 px / 30 views
        (~300 iterations to converge, against thousands with ``1``).

    Returns
    -------
    torch.Tensor
        ``[B, *radon.in_shape]``.
    """
    _check_problem(sinogram, radon, x0, "tv")
    iters = _check_iters(iters, "tv")
    norm = operator_norm(radon) if op_norm is None else float(op_norm)
    if not (math.isfinite(norm) and norm > 0):
        raise ConfigError(f"tv: the operator norm must be positive and finite, got {norm!r}.")
    if lam is None:
        lam = default_tv_weight(sinogram, radon, norm)
    elif isinstance(lam, torch.Tensor):
        lam = lam.to(device=sinogram.device, dtype=sinogram.dtype)
    elif not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"tv: lam must be a non-negative finite number (or None for the default), got {lam!r}.")
    if isinstance(lam, torch.Tensor) and (lam < 0).any():
        raise ConfigError("tv: lam must be non-negative.")
    if not (isinstance(step_ratio, (int, float)) and math.isfinite(step_ratio) and step_ratio > 0):
        raise ConfigError(f"tv: step_ratio must be a positive finite number, got {step_ratio!r}.")

    norm = norm * 1.01  # margin over the power-method estimate (a lower bound)
    y = sinogram / norm
    lam_scaled = lam / norm**2
    k_norm = math.sqrt(1.0 + 8.0)  # ||grad||^2 <= 8 for 2-D forward differences
    primal_step, dual_step = 0.99 * step_ratio / k_norm, 0.99 / (step_ratio * k_norm)
    x = _initial(sinogram, radon, x0, nonneg)
    x_bar = x.clone()
    dual_data = torch.zeros_like(sinogram)
    dual_tv = x.new_zeros((*x.shape[:2], 2, *x.shape[2:]))
    for iteration in range(1, iters + 1):
        dual_data = (dual_data + dual_step * (radon(x_bar) / norm - y)) / (1.0 + dual_step)
        dual_tv = dual_tv + dual_step * _gradient(x_bar)
        magnitude = dual_tv.pow(2).sum(dim=2, keepdim=True).sqrt()
        if isinstance(lam_scaled, torch.Tensor):
            bound = lam_scaled[..., None].clamp(min=1e-30)
        else:
            bound = max(lam_scaled, 1e-30)
        dual_tv = dual_tv / torch.clamp(magnitude / bound, min=1.0)
        x_new = x - primal_step * (radon.adjoint(dual_data) / norm + _gradient_adjoint(dual_tv))
        if nonneg:
            x_new.clamp_(min=0)
        x_bar = 2.0 * x_new - x
        x = x_new
        if callback is not None:
            callback(iteration, x)
    return x


__all__ = ["fbp", "sirt", "tv", "operator_norm", "default_tv_weight", "TV_WEIGHT"]
