"""Full-reference image metrics: PSNR, SSIM and RMSE.

Every metric takes the reconstruction ``x`` and the reference ``ref`` as NumPy
arrays or torch tensors of identical shape ``[H, W]``, ``[C, H, W]`` (one image)
or ``[B, C, H, W]`` (a batch of ``B`` images). Computation is in float64 on the
CPU. With ``reduction="mean"`` (default) a Python float is returned: the mean of
the per-image values; ``reduction="none"`` returns the list of ``B`` per-image
values.

``data_range`` is required for PSNR and SSIM; there is no default, because the
data range *is* the convention (see ``ctbird.units.EVAL_HU_RANGE`` for CT in HU).
It is either

* a positive float: the span of the data (e.g. ``1.0`` for images in ``[0, 1]``;
  ``2000.0`` for HU evaluated over ``[-1000, 1000]``), images used as given; or
* a ``(lo, hi)`` tuple: both images are clipped to ``[lo, hi]`` first and the
  span is ``hi - lo`` (e.g. ``ctbird.units.EVAL_HU_RANGE``).

RMSE is in the images' own unit; on HU images it is the RMSE in HU (:func:`rmse_hu`,
optionally restricted to the scanner's circular field of view). :func:`score_ct` is the one scoring of a CT
reconstruction against ground truth (PSNR, SSIM and RMSE in HU).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from .errors import ConfigError, InputError

ArrayLike = np.ndarray | torch.Tensor
DataRange = float | tuple[float, float]
Reduction = Literal["mean", "none"]

#: Standard SSIM settings of Wang et al. (2004): 11x11 Gaussian window (sigma 1.5),
#: population covariances, K1 = 0.01, K2 = 0.03.
SSIM_SETTINGS: dict = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "K1": 0.01, "K2": 0.03}


def _to_numpy(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    if isinstance(a, np.ndarray):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{name} must be a numeric array, got dtype {a.dtype}.")
        return a.astype(np.float64, copy=False)
    raise InputError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}.")


def _as_batch(x: ArrayLike, ref: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 ``[B, C, H, W]`` after shape and finiteness checks."""
    xa, ra = _to_numpy(x, "x"), _to_numpy(ref, "ref")
    if xa.shape != ra.shape:
        raise InputError(
            f"x and ref must have the same shape, got x {list(xa.shape)} and ref {list(ra.shape)}. "
            "Resample or crop one of them so that both are [H, W], [C, H, W] or [B, C, H, W] alike."
        )
    if xa.ndim not in (2, 3, 4):
        raise InputError(f"Expected images of shape [H, W], [C, H, W] or [B, C, H, W], got {list(xa.shape)}.")
    if xa.size == 0:
        raise InputError(f"Images must not be empty, got shape {list(xa.shape)}.")
    for name, arr in (("x", xa), ("ref", ra)):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} contains NaN or infinite values; metrics need finite images.")
    while xa.ndim < 4:
        xa, ra = xa[None], ra[None]
    return xa, ra


def _resolve_data_range(data_range: DataRange | None, x: np.ndarray, ref: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Return ``(span, x, ref)``, clipping both images when a ``(lo, hi)`` tuple is given."""
    if data_range is None:
        raise ConfigError(
            "data_range is required: pass data_range=1.0 for images in [0, 1], or a (lo, hi) tuple such as "
            "ctbird.units.EVAL_HU_RANGE to clip both images to [lo, hi] and use hi - lo as the span."
        )
    if isinstance(data_range, (tuple, list)):
        if len(data_range) != 2 or not all(_is_real(v) for v in data_range):
            raise ConfigError(f"data_range as a tuple must be (lo, hi) with two finite numbers, got {data_range!r}.")
        lo, hi = float(data_range[0]), float(data_range[1])
        if not hi > lo:
            raise ConfigError(f"data_range (lo, hi) needs hi > lo, got {data_range!r}.")
        return hi - lo, np.clip(x, lo, hi), np.clip(ref, lo, hi)
    if not _is_real(data_range) or not float(data_range) > 0:
        raise ConfigError(f"data_range must be a positive finite span or a (lo, hi) tuple, got {data_range!r}.")
    return float(data_range), x, ref


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


def _resolve_mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Boolean ``[H, W]`` mask, or ``None``."""
    if mask is None:
        return None
    m = _to_numpy(mask, "mask")
    if m.shape != shape[-2:]:
        raise InputError(f"mask must have the images' spatial shape {list(shape[-2:])}, got {list(m.shape)}.")
    m = m != 0
    if not m.any():
        raise InputError("mask selects no pixel; pass a mask with at least one nonzero entry.")
    return m


def _reduce(values: list[float], reduction: Reduction) -> float | list[float]:
    if reduction == "mean":
        return float(np.mean(values))
    if reduction == "none":
        return values
    raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def _per_image_mse(x: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> list[float]:
    sq = (x - ref) ** 2
    if mask is None:
        return [float(v) for v in sq.mean(axis=(1, 2, 3))]
    return [float(v) for v in sq[:, :, mask].mean(axis=(1, 2))]


def rmse(x: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None,
         reduction: Reduction = "mean") -> float | list[float]:
    """Root-mean-square error, in the images' own unit.

    Parameters
    ----------
    x, ref : array or tensor
        Same shape ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``.
    mask : array or tensor ``[H, W]``, optional
        Nonzero where pixels count (e.g. :func:`fov_mask`); all pixels by default.
    reduction : {"mean", "none"}
        Mean over the batch (a float) or the list of per-image values.
    """
    xa, ra = _as_batch(x, ref)
    per_image = [math.sqrt(v) for v in _per_image_mse(xa, ra, _resolve_mask(mask, xa.shape))]
    return _reduce(per_image, reduction)


def rmse_hu(x_hu: ArrayLike, ref_hu: ArrayLike, *, fov: bool = False,
            reduction: Reduction = "mean") -> float | list[float]:
    """RMSE in HU between two HU images (:func:`rmse` on HU values).

    ``fov=True`` restricts it to the inscribed circle of the image (the scanner's
    field of view, :func:`fov_mask`), excluding the corners outside it.
    """
    xa, _ = _as_batch(x_hu, ref_hu)
    mask = fov_mask(xa.shape[-2:]) if fov else None
    return rmse(x_hu, ref_hu, mask=mask, reduction=reduction)


def psnr(x: ArrayLike, ref: ArrayLike, *, data_range: DataRange | None = None, mask: ArrayLike | None = None,
         reduction: Reduction = "mean") -> float | list[float]:
    """Peak signal-to-noise ratio ``10 log10(span^2 / MSE)`` in dB (``inf`` for identical images).

    Parameters
    ----------
    x, ref : array or tensor
        Same shape ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``.
    data_range : float or (lo, hi)
        Required. A positive span, or a ``(lo, hi)`` tuple: both images are
        clipped to ``[lo, hi]`` and the span is ``hi - lo``. Missing or invalid
        raises :class:`~ctbird.errors.ConfigError`.
    mask : array or tensor ``[H, W]``, optional
        Nonzero where pixels count in the MSE; all pixels by default.
    reduction : {"mean", "none"}
        Mean of the per-image PSNRs (a float), or their list.
    """
    xa, ra = _as_batch(x, ref)
    span, xa, ra = _resolve_data_range(data_range, xa, ra)
    mses = _per_image_mse(xa, ra, _resolve_mask(mask, xa.shape))
    per_image = [math.inf if m == 0.0 else 10.0 * math.log10(span * span / m) for m in mses]
    return _reduce(per_image, reduction)


def ssim(x: ArrayLike, ref: ArrayLike, *, data_range: DataRange | None = None,
         reduction: Reduction = "mean") -> float | list[float]:
    """Structural similarity (Wang et al., 2004), 1 for identical images.

    Computed by :func:`skimage.metrics.structural_similarity` with the standard
    settings of Wang et al.: an 11 x 11 Gaussian window with sigma 1.5
    (``gaussian_weights=True, sigma=1.5``), population covariances
    (``use_sample_covariance=False``), ``K1=0.01, K2=0.03`` and the explicit
    ``data_range`` span. Multi-channel images are averaged over channels. Images
    must be at least 11 x 11.

    Parameters
    ----------
    x, ref : array or tensor
        Same shape ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``.
    data_range : float or (lo, hi)
        Required; as for :func:`psnr` (a tuple clips both images first).
    reduction : {"mean", "none"}
        Mean of the per-image SSIMs (a float), or their list.
    """
    from skimage.metrics import structural_similarity

    xa, ra = _as_batch(x, ref)
    span, xa, ra = _resolve_data_range(data_range, xa, ra)
    if min(xa.shape[-2:]) < 11:
        raise InputError(f"SSIM needs images of at least 11 x 11 pixels (its Gaussian window), got {list(xa.shape[-2:])}.")
    per_image = []
    for xi, ri in zip(xa, ra):
        if xi.shape[0] == 1:
            value = structural_similarity(xi[0], ri[0], data_range=span, **SSIM_SETTINGS)
        else:
            value = structural_similarity(xi, ri, data_range=span, channel_axis=0, **SSIM_SETTINGS)
        per_image.append(float(value))
    return _reduce(per_image, reduction)


def score_ct(image_hu: ArrayLike, truth_hu: ArrayLike, *, data_range: DataRange) -> dict[str, float]:
    """Score a CT reconstruction against its ground truth: ``{"psnr", "ssim", "rmse_hu"}``, the one scoring of the
    project (``ctbird reconstruct`` and every benchmark use it).

    PSNR and SSIM use ``data_range`` (for HU the project's :data:`ctbird.units.EVAL_HU_RANGE` = (-1000, 1000): both
    images clipped to it); SSIM is left out for images under 11 x 11 pixels. RMSE is in HU over the whole grid, of
    the reconstruction clipped to the prior's window :data:`ctbird.units.PRIOR_HU_WINDOW` (-1024, 3071) against the
    truth, which :func:`ctbird.simulate.simulate` clips to the same window. The clip removes only values no CT image
    can hold (the DICOM output is clipped alike) and can only lower the error, since the truth lies inside the
    window. PSNR and SSIM see the reconstruction as given (clipped only by a ``(lo, hi)`` ``data_range``).

    Parameters
    ----------
    image_hu, truth_hu : array or tensor
        Same shape ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``, in HU.
    data_range : float or (lo, hi)
        Required; as for :func:`psnr`.
    """
    from .units import clip_hu

    xa, ra = _as_batch(image_hu, truth_hu)
    scores = {"psnr": psnr(xa, ra, data_range=data_range)}
    if min(xa.shape[-2:]) >= 11:
        scores["ssim"] = ssim(xa, ra, data_range=data_range)
    scores["rmse_hu"] = rmse_hu(clip_hu(xa), ra)
    return scores


def fov_mask(shape: int | tuple[int, ...]) -> np.ndarray:
    """Boolean ``[H, W]`` mask of the inscribed circle (the reconstruction field of view).

    A pixel is inside when its centre lies within ``min(H, W) / 2`` of the image centre.
    """
    h, w = (shape, shape) if isinstance(shape, int) else (int(shape[-2]), int(shape[-1]))
    yy = np.arange(h) - (h - 1) / 2.0
    xx = np.arange(w) - (w - 1) / 2.0
    return (yy[:, None] ** 2 + xx[None, :] ** 2) <= (min(h, w) / 2.0) ** 2


def uncertainty_calibration(mean_hu: ArrayLike, std_hu: ArrayLike, truth_hu: ArrayLike, *,
                            data_range: DataRange) -> dict[str, float | None]:
    """How well a per-pixel std predicts the actual error of a reconstruction (e.g. BIRD's restarts).

    Parameters
    ----------
    mean_hu, std_hu, truth_hu : array or tensor
        Same shape ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``: the reconstruction, its per-pixel standard deviation
        (>= 0) and the ground truth, in HU; every pixel counts.
    data_range : float or (lo, hi)
        Required, as for :func:`psnr`: a ``(lo, hi)`` tuple clips the reconstruction and the truth to it before the
        error ``|mean - truth|`` is taken (the std is used as given).

    Returns
    -------
    dict
        ``"spearman"``: Spearman rank correlation between the std and the absolute error over the pixels (ties
        averaged; ``None`` when either is constant); ``"within_2std"``: the share of pixels whose absolute error is
        at most twice their std (about 0.95 for Gaussian errors of that std).
    """
    from scipy.stats import spearmanr

    xa, ra = _as_batch(mean_hu, truth_hu)
    std, _ = _as_batch(std_hu, truth_hu)
    if np.any(std < 0):
        raise InputError("std_hu must be >= 0 everywhere.")
    _, xa, ra = _resolve_data_range(data_range, xa, ra)
    error, std = np.abs(xa - ra).ravel(), std.ravel()
    constant = np.ptp(error) == 0 or np.ptp(std) == 0
    return {"spearman": None if constant else float(spearmanr(std, error).statistic),
            "within_2std": float(np.mean(error <= 2.0 * std))}


def kernel_error(estimate: ArrayLike, truth: ArrayLike) -> float:
    """Relative error of a blur-kernel estimate ``[k, k]``: ``min_shift ||shift(est) - truth||_2 / ||truth||_2``, both
    normalized to sum 1, over integer shifts ``|dy|, |dx| <= k // 4`` (zero fill; blind deconvolution is
    shift-ambiguous). 0 is exact; a flat kernel against a narrow one is near 1."""
    est, ref = (_to_numpy(a, name).astype(np.float64) for a, name in ((estimate, "estimate"), (truth, "truth")))
    if est.ndim != 2 or est.shape != ref.shape:
        raise InputError(f"kernel_error needs two [k, k] kernels of one shape; got {est.shape} and {ref.shape}.")
    est, ref = est / est.sum(), ref / ref.sum()
    k = ref.shape[-1]
    reach = k // 4
    padded = np.pad(est, reach)
    norm = np.linalg.norm(ref)
    return min(float(np.linalg.norm(padded[reach + dy:reach + dy + k, reach + dx:reach + dx + k] - ref) / norm)
               for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1))


def kernel_sigma(kernel: ArrayLike) -> float:
    """Width (px) of a blur kernel ``[k, k]``: ``sqrt(trace(covariance) / 2)``, the sigma of the Gaussian with its
    second moment."""
    k = _to_numpy(kernel, "kernel").astype(np.float64)
    k = k / k.sum()
    r = np.arange(k.shape[-1], dtype=np.float64) - (k.shape[-1] - 1) / 2
    rows, cols = k.sum(1), k.sum(0)
    cy, cx = (rows * r).sum(), (cols * r).sum()
    return float(np.sqrt(((rows * (r - cy) ** 2).sum() + (cols * (r - cx) ** 2).sum()) / 2))


__all__ = ["psnr", "ssim", "rmse", "rmse_hu", "score_ct", "fov_mask", "uncertainty_calibration", "kernel_error",
           "kernel_sigma", "SSIM_SETTINGS"]
