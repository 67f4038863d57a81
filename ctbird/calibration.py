"""Centre-of-rotation searches on the sinogram alone (no prior): a classical sharpness finder and a consistency search.

Both search the detector ``center_offset`` ``c`` (detector cells, :mod:`operators.geometry`'s convention: the ray
through the rotation axis hits cell ``(D - 1)/2 + c``) coarse to fine. The consistency search never rebuilds a projector: for the
detector-shift model of both geometries, the sinogram measured with offset ``c`` equals the nominal sinogram moved
by ``c`` cells, so the consistency search scores each candidate on the measurement moved back by ``-c``
(:func:`shift_sinogram`, band-limited) with the nominal geometry, all candidates of a stage in one batch.

* :func:`find_center_sharpness` -- the classical baseline (as tomopy's ``find_center``, written anew): the filtered
  backprojection with each candidate geometry, scored by the entropy of its histogram (lowest = sharpest). It
  needs dense angular sampling; at 30 views FBP's streaks blur the criterion.
* :func:`find_center_consistency` -- the data misfit ``||A x_c - y_c||^2`` of a short SIRT reconstruction ``x_c``
  of each candidate ``y_c``: the measurement is only consistent with a projector of the right geometry, so the
  misfit is lowest there. Stage 1 of :func:`ctbird.solvers.calibrate.calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from operators import BackendUnavailableError, FanBeam, ParallelBeam, Radon, SinogramFilter

from . import baselines
from .errors import ConfigError, InputError

#: Default half-width of the centre search (detector cells).
SEARCH_RADIUS = 8.0


@dataclass(frozen=True)
class CenterSearch:
    """Outcome of a centre search.

    Attributes
    ----------
    center_offset : float
        Estimated ``center_offset`` in detector cells.
    candidates, scores : numpy arrays ``[K]``
        Every offset scored (all stages) and its score (lower is better), sorted by offset.
    method : str
        ``"sharpness"`` or ``"consistency"``.
    """

    center_offset: float
    candidates: np.ndarray
    scores: np.ndarray
    method: str


def shift_sinogram(sinogram: torch.Tensor, cells: float | torch.Tensor) -> torch.Tensor:
    """Move ``sinogram`` ``[..., views, detectors]`` by ``cells`` detector cells towards higher indices.

    Band-limited (Fourier) interpolation with zero padding to at least ``4 D`` (nothing wraps around for shifts
    up to ``1.5 D``). ``cells`` may be a tensor ``[B]`` shifting each batch item ``sinogram[b]`` by its own amount.
    """
    d = sinogram.shape[-1]
    padded = 1 << math.ceil(math.log2(4 * d))
    spectrum = torch.fft.rfft(sinogram.double(), n=padded, dim=-1)
    freq = torch.fft.rfftfreq(padded, dtype=torch.float64, device=sinogram.device)
    amount = torch.as_tensor(cells, dtype=torch.float64, device=sinogram.device)
    if amount.dim() == 1:
        amount = amount.reshape(-1, *([1] * (sinogram.dim() - 1)))
    moved = torch.fft.irfft(spectrum * torch.exp(-2j * math.pi * freq * amount), n=padded, dim=-1)
    return moved[..., :d].to(sinogram.dtype)


def smooth_sinogram(sinogram: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing (standard deviation ``sigma`` detector cells) along the detector axis, by FFT."""
    if sigma <= 0:
        return sinogram
    d = sinogram.shape[-1]
    padded = 1 << math.ceil(math.log2(2 * d + 8 * sigma))
    freq = torch.fft.rfftfreq(padded, dtype=torch.float64, device=sinogram.device)
    spectrum = torch.fft.rfft(sinogram.double(), n=padded, dim=-1) * torch.exp(-2 * (math.pi * sigma * freq) ** 2)
    return torch.fft.irfft(spectrum, n=padded, dim=-1)[..., :d].to(sinogram.dtype)


def histogram_entropy(images: torch.Tensor, low: float, high: float, bins: int = 128) -> np.ndarray:
    """Shannon entropy (nats) of each image's grey-level histogram on ``[low, high]``, ``[B, ...]`` -> ``[B]``.

    Values outside the range are clipped into the end bins, so every image counts all its pixels.
    """
    flat = images.detach().flatten(1).double().clamp(low, high)
    out = []
    for row in flat:
        counts = torch.histc(row, bins=bins, min=low, max=high)
        p = counts[counts > 0] / counts.sum()
        out.append(float(-(p * p.log()).sum()))
    return np.asarray(out)


def _check(sinogram: torch.Tensor, geometry: ParallelBeam | FanBeam, image_size: int, who: str
           ) -> tuple[torch.Tensor, ParallelBeam | FanBeam]:
    if not isinstance(geometry, (ParallelBeam, FanBeam)):
        raise ConfigError(f"{who}: geometry must be a ParallelBeam or FanBeam, got {type(geometry).__name__}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 2:
        raise ConfigError(f"{who}: image_size must be an integer >= 2, got {image_size!r}.")
    resolved = geometry.in_pixels().resolved(int(image_size))
    if not isinstance(sinogram, torch.Tensor) or not sinogram.is_floating_point():
        raise InputError(f"{who}: the sinogram must be a floating-point torch.Tensor.")
    if sinogram.dim() == 2:
        sinogram = sinogram[None, None]
    if sinogram.dim() != 4 or sinogram.shape[:2] != (1, 1) or tuple(sinogram.shape[2:]) != (resolved.views, resolved.detectors):
        raise InputError(f"{who}: expected one sinogram [views, detectors] or [1, 1, views, detectors] with "
                         f"{resolved.views} views x {resolved.detectors} detectors, got {list(sinogram.shape)}.")
    if not torch.isfinite(sinogram).all():
        raise InputError(f"{who}: the sinogram contains NaN or infinite values.")
    return sinogram, resolved


def coarse_to_fine(score: Callable[[np.ndarray], np.ndarray], radius: float, steps: tuple[float, ...] = (1.0, 0.25, 0.05)
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Minimize a 1-D ``score`` (batched: offsets ``[K]`` -> scores ``[K]``) on grids of shrinking ``steps``.

    The first grid spans ``[-radius, radius]``; each next one spans two steps of the previous grid around its best
    point. The result is the vertex of the parabola through the last grid's best point and its neighbours (the
    best point itself where that is not a minimum). Returns ``(estimate, all offsets, their scores)`` sorted.
    """
    seen: dict[float, float] = {}
    center, half = 0.0, float(radius)
    for step in steps:
        count = int(round(half / step))
        grid = np.round(center + step * np.arange(-count, count + 1), 10)
        todo = np.asarray([g for g in grid if g not in seen])
        if todo.size:
            seen.update(zip(todo.tolist(), np.asarray(score(todo), dtype=np.float64).tolist()))
        values = np.asarray([seen[g] for g in grid])
        best = int(values.argmin())
        center, half = float(grid[best]), 2 * step
    estimate = center
    if 0 < best < len(grid) - 1:
        left, mid, right = values[best - 1:best + 2]
        curvature = left - 2 * mid + right
        if curvature > 0:
            estimate = center + 0.5 * steps[-1] * (left - right) / curvature
    offsets = np.asarray(sorted(seen))
    return float(estimate), offsets, np.asarray([seen[o] for o in offsets])


def find_center_sharpness(sinogram: torch.Tensor, geometry: ParallelBeam | FanBeam, image_size: int, *,
                          radius: float = SEARCH_RADIUS, bins: int = 128, smoothing: float = 1.0) -> CenterSearch:
    """Classical centre finder: the offset whose filtered backprojection has the lowest histogram entropy.

    Each candidate's image is the ramp-filtered (:class:`operators.SinogramFilter`, exponent 1) measurement
    backprojected with the candidate geometry (ASTRA's CPU backprojector, or the torch one without ASTRA): the
    shift lives in the backprojector's interpolation, not in a resampled sinogram, whose fractional-shift ringing
    would otherwise favour whole-cell offsets. Fan beams get no FBP weights (a sharpness criterion needs none).

    Parameters
    ----------
    sinogram : Tensor ``[views, detectors]`` or ``[1, 1, views, detectors]``
        Line integrals measured with an unknown ``center_offset``.
    geometry : ParallelBeam or FanBeam
        The nominal geometry (any centre offset it carries is replaced by the candidates).
    image_size : int
        Side ``N`` of the images.
    radius : float
        Search half-width in detector cells.
    bins : int
        Histogram bins of the entropy.
    smoothing : float
        Gaussian standard deviation (detector cells) applied to the sinogram first: without it the backprojector's
        interpolation blurs fractional offsets more than whole-cell ones and the entropy favours the latter.
    """
    y, nominal = _check(sinogram, geometry, image_size, "find_center_sharpness")
    filtered = SinogramFilter(y.shape[1:], exponent=1.0)(smooth_sinogram(y, smoothing))

    def backproject(offset: float) -> torch.Tensor:
        candidate = replace(nominal, center_offset=offset)
        try:
            radon = Radon(candidate, int(image_size), backend="astra", device=y.device)
        except BackendUnavailableError:
            radon = Radon(candidate, int(image_size), backend="torch", device=y.device)
        with torch.no_grad():
            return radon.adjoint(filtered)

    reference = backproject(0.0)  # one histogram range for every candidate, so all stages' scores compare
    low, high = float(reference.min()), float(reference.max())
    high = high if high > low else low + 1.0

    def score(offsets: np.ndarray) -> np.ndarray:
        return histogram_entropy(torch.cat([backproject(float(c)) for c in offsets]), low, high, bins=bins)

    estimate, offsets, scores = coarse_to_fine(score, radius)
    return CenterSearch(estimate, offsets, scores, "sharpness")


def find_center_consistency(sinogram: torch.Tensor, geometry: ParallelBeam | FanBeam, image_size: int, *,
                            radius: float = SEARCH_RADIUS, sirt_iters: int = 30, radon: Radon | None = None
                            ) -> CenterSearch:
    """The offset whose moved measurement a nominal-geometry SIRT reconstruction explains best.

    For each candidate ``c`` the measurement moved by ``-c`` cells is reconstructed by ``sirt_iters`` iterations of
    non-negative SIRT with the nominal projector and scored by its squared residual. Parameters as for
    :func:`find_center_sharpness`; ``radon`` may pass a ready nominal projector (``Radon(nominal, N)``, any
    backend) to reuse.
    """
    y, nominal = _check(sinogram, geometry, image_size, "find_center_consistency")
    nominal = nominal.calibrated()
    if radon is None:
        radon = Radon(nominal, int(image_size), device=y.device)
    elif tuple(radon.out_shape) != (1, nominal.views, nominal.detectors) or radon.image_size != image_size:
        raise ConfigError("find_center_consistency: radon does not match the geometry and image_size.")
    if isinstance(sirt_iters, bool) or not isinstance(sirt_iters, int) or sirt_iters < 1:
        raise ConfigError(f"find_center_consistency: sirt_iters must be a positive integer, got {sirt_iters!r}.")

    def score(offsets: np.ndarray) -> np.ndarray:
        moved = shift_sinogram(y.expand(len(offsets), -1, -1, -1), torch.as_tensor(-offsets))
        with torch.no_grad():
            x = baselines.sirt(moved, radon, iters=sirt_iters, nonneg=True)
            return (radon(x) - moved).square().flatten(1).sum(1).double().cpu().numpy()

    estimate, offsets, scores = coarse_to_fine(score, radius)
    return CenterSearch(estimate, offsets, scores, "consistency")
