"""Classical restoration baselines for the tasks of :func:`ctbird.restore` (scikit-image where it has them).

* ``wiener``: unsupervised Wiener–Hunt deconvolution (``skimage.restoration.unsupervised_wiener``; the noise and
  image regularization are estimated by its Gibbs sampler) with the given kernel, else a Gaussian of width
  :func:`estimate_gaussian_sigma`.
* ``richardson-lucy``: Richardson–Lucy deconvolution (:func:`richardson_lucy`, symmetric borders, the blur of :mod:`operators.blur`; scikit-image 0.26's
  ``richardson_lucy`` moved away from the truth on noiseless test scenes) with the same kernel choice (e.g. the
  kernel BIRD estimated).
* ``l0-blind`` (motion deblurring): a fully classical blind method, independent of BIRD: the kernel of
  :func:`estimate_blur_kernel` (L0-gradient alternation, coarse to fine) from the observation alone, then
  Richardson–Lucy with it.
* ``tv``: TV denoising (``skimage.restoration.denoise_tv_chambolle``) with weight ``TV_WEIGHT_PER_SIGMA`` times the noise level
  :func:`estimate_noise_sigma`.
* ``biharmonic``: biharmonic inpainting of the unobserved pixels (``inpaint_biharmonic``).
* ``bicubic``: bicubic upsampling (super-resolution).

Images are ``[B, C, H, W]`` tensors in [0, 1] (as :func:`ctbird.restore` takes); results are clipped to [0, 1].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, InputError

#: The baselines that apply to each restoration task (first = the task's default baseline).
TASK_BASELINES = {"gaussian-deblur": ("wiener", "richardson-lucy"),
                  "motion-deblur": ("wiener", "richardson-lucy", "l0-blind"),
                  "sr": ("bicubic",), "denoise": ("tv",), "inpaint": ("biharmonic",)}
BASELINES = ("wiener", "richardson-lucy", "l0-blind", "tv", "biharmonic", "bicubic")
#: TV weight of ``denoise_tv_chambolle`` per unit of estimated noise std (best of 0.4-3.0 on 4 CT training slices at
#: 256² with the denoising benchmark noise: 33.4 dB at 1.3, 30.8 dB at 0.6).
TV_WEIGHT_PER_SIGMA = 1.3
#: Block side (in diagonal Haar coefficients, i.e. twice as many pixels) of :func:`estimate_noise_sigma`.
NOISE_BLOCK = 8
#: FISTA iterations of :func:`fit_blur_kernel`.
KERNEL_FIT_ITERS = 300
#: Pre-smoothing width (px at 256 px) of :func:`fit_blur_kernel` (CT training slices, true image: motion-kernel error
#: 0.73 unsmoothed, 0.38-0.43 at 1.5 px, 0.42-0.46 at 2 px).
KERNEL_FIT_SMOOTHING_256 = 1.5
#: Richardson–Lucy iterations.
RL_ITERS = 30
#: :func:`estimate_blur_kernel`: L0 weight on [0, 1] images, alternations per scale (the weight decays by
#: ``L0_WEIGHT_DECAY`` per alternation down to ``L0_WEIGHT_MIN``) and kernel FISTA steps per alternation (chosen on 8
#: CT training slices with the motion benchmark's degradation; exploratory runs, 1e-3 and 4e-3 did no better).
L0_WEIGHT = 2e-3
L0_WEIGHT_DECAY = 0.9
L0_WEIGHT_MIN = 1e-4
L0_ALTERNATIONS = 5
L0_KERNEL_STEPS = 100
#: Smallest kernel side of the coarse-to-fine pyramid (sides shrink by sqrt(2) per level).
L0_COARSEST_KERNEL = 7


@dataclass
class BaselineRestoration:
    """A classical restoration: ``image`` ``[B, C, H', W']`` in [0, 1], the ``kernel`` ``[k, k]`` it deconvolved
    with (deblurring), the estimated noise std ``sigma`` (denoising) and the run time."""

    image: torch.Tensor
    method: str
    seconds: float
    kernel: torch.Tensor | None = None
    sigma: float | None = None


def task_baselines(task: str) -> tuple[str, ...]:
    """The baselines of ``task`` (:data:`TASK_BASELINES`)."""
    if task not in TASK_BASELINES:
        raise ConfigError(f"Unknown task {task!r}; use one of {', '.join(TASK_BASELINES)}.")
    return TASK_BASELINES[task]


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Noise std of a ``[H, W]`` or ``[C, H, W]`` image from its finest diagonal Haar detail ``HH`` (orthonormal: white
    noise of std ``s`` gives ``HH`` of std ``s``), averaged over the channels.

    ``HH`` is cut into blocks of ``NOISE_BLOCK`` x ``NOISE_BLOCK`` coefficients; each block's level is Donoho's MAD,
    ``median(|HH|) / 0.6745`` (robust to the few edge coefficients a block holds), and the estimate is the root mean
    square of the block levels. Signal-dependent noise (speckle) is thus read at its average power, where one MAD over
    the whole image reads the median pixel's: 40 % low on speckled CT training slices, within 7 % this way.
    """
    planes = image if image.ndim == 3 else image[None]
    h, w = planes.shape[-2] // 2 * 2, planes.shape[-1] // 2 * 2
    p = planes[:, :h, :w].astype(np.float64)
    detail = (p[:, 0::2, 0::2] - p[:, 0::2, 1::2] - p[:, 1::2, 0::2] + p[:, 1::2, 1::2]) / 2.0
    b = min(NOISE_BLOCK, *detail.shape[-2:])
    rows, cols = detail.shape[-2] // b * b, detail.shape[-1] // b * b
    sigmas = []
    for d in detail:
        blocks = d[:rows, :cols].reshape(rows // b, b, cols // b, b).transpose(0, 2, 1, 3).reshape(-1, b * b)
        levels = np.median(np.abs(blocks), axis=1) / 0.6745
        sigmas.append(float(np.sqrt(np.mean(levels ** 2))))
    return float(np.mean(sigmas))


def estimate_gaussian_sigma(image: np.ndarray, max_sigma: float | None = None) -> float:
    """Width (pixels) of a Gaussian blur from the decay of the radial power spectrum of ``[H, W]`` ``image``.

    A natural image's power falls as ``f^-2``; a Gaussian blur multiplies it by ``exp(-4 pi^2 sigma^2 f^2)``. The
    slope of ``log(P(f) f^2)`` against ``f^2`` over the frequencies whose power is above ten times the white-noise
    floor (:func:`estimate_noise_sigma`) gives ``-4 pi^2 sigma^2``. Clipped to ``[0.3, max_sigma]``.
    """
    h, w = image.shape
    max_sigma = max_sigma or min(h, w) / 8
    x = image - image.mean()
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2(x * window))) ** 2 / (window ** 2).sum()
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    radius = np.hypot(fy, fx)
    edges = np.linspace(0.02, 0.5, 25)
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        ring = (radius >= lo) & (radius < hi)
        if ring.any():
            centres.append((lo + hi) / 2)
            means.append(power[ring].mean())
    centres, means = np.array(centres), np.array(means)
    floor = estimate_noise_sigma(image) ** 2
    keep = means > 10 * floor
    if keep.sum() < 3:
        keep = np.arange(len(means)) < 3
    slope = np.polyfit(centres[keep] ** 2, np.log(means[keep] * centres[keep] ** 2), 1)[0]
    return float(np.clip(math.sqrt(max(-slope, 0.0)) / (2 * math.pi), 0.3, max_sigma))


#: Radial frequency bins (cycles/px, up to the corner's 0.71) of :func:`residual_wiener`'s power spectrum.
RESIDUAL_WIENER_BINS = 48


def residual_wiener(estimate: np.ndarray, observation: np.ndarray, noise_sigma: float,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """``estimate + W r`` for ``[H, W]`` images, ``r = observation - estimate`` and ``W`` the empirical Wiener filter
    of ``r``: per radial frequency ring, the gain ``max(0, 1 - noise_sigma^2 / P(f))`` with ``P`` the ring's mean
    power of ``r`` (``|FFT r|^2 / (H W)``, so white noise of std ``s`` has ``P = s^2``).

    Detail the estimate lacks (e.g. above the prior's grid, or structure its denoiser smoothed away) stands above the
    noise floor in ``r`` and is kept; rings at the noise floor are dropped. With ``mask`` (``[H, W]``, 1 = observed)
    ``r`` is taken on the observed pixels only (the noise floor scaled by their fraction) and ``W r`` is added there
    only: the unobserved pixels keep the estimate."""
    residual = observation - estimate
    fraction = 1.0
    if mask is not None:
        residual = residual * mask
        fraction = float(mask.mean())
    spectrum = np.fft.fft2(residual)
    h, w = residual.shape
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.minimum((radius / radius.max() * RESIDUAL_WIENER_BINS).astype(int), RESIDUAL_WIENER_BINS - 1)
    counts = np.bincount(ring.ravel(), minlength=RESIDUAL_WIENER_BINS)
    power = np.bincount(ring.ravel(), weights=np.abs(spectrum.ravel()) ** 2 / (h * w),
                        minlength=RESIDUAL_WIENER_BINS) / np.maximum(counts, 1)
    gain = np.clip(1.0 - fraction * noise_sigma ** 2 / np.maximum(power, 1e-30), 0.0, 1.0)
    detail = np.real(np.fft.ifft2(spectrum * gain[ring]))
    return estimate + (detail if mask is None else detail * mask)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalized isotropic Gaussian ``[size, size]`` (float64)."""
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _centred_embedding(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``kernel`` ``[k, k]`` placed in a zero ``shape`` array with its centre tap at the origin: its DFT is the
    transfer function of the periodic true convolution."""
    full = np.zeros(shape)
    side = kernel.shape[0]
    full[:side, :side] = kernel
    return np.roll(full, (-(side // 2), -(side // 2)), axis=(0, 1))


def _kernel_fit_terms(image: np.ndarray, observation: np.ndarray, size: int, smoothing_px: float | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The terms of :func:`fit_blur_kernel`'s objective for a kernel side ``size``: the filtered differences of
    ``image`` and of ``observation`` (``[2, H, W]`` each) and the scored region (``[H, W]``, 1 inside)."""
    from scipy.ndimage import gaussian_filter

    h, w = image.shape
    half = size // 2
    width = KERNEL_FIT_SMOOTHING_256 * h / 256 if smoothing_px is None else smoothing_px

    def differences(a: np.ndarray) -> np.ndarray:
        a = gaussian_filter(a.astype(np.float64), width) if width > 0 else a.astype(np.float64)
        return np.stack([np.diff(a, axis=0, append=a[-1:]), np.diff(a, axis=1, append=a[:, -1:])])

    inside = np.zeros((h, w))
    inside[half + 1:h - half - 1, half + 1:w - half - 1] = 1.0
    return differences(image), differences(observation), inside


def kernel_misfit(image: np.ndarray, observation: np.ndarray, kernel: np.ndarray, *,
                  smoothing_px: float | None = None) -> float:
    """The data term :func:`fit_blur_kernel` minimizes, ``||g * (k * dx - dy)||^2`` over the scored region, for
    ``kernel`` ``[k, k]`` mapping ``image`` to ``observation`` (``[H, W]``; same units squared)."""
    image_differences, target, inside = _kernel_fit_terms(image, observation, kernel.shape[0], smoothing_px)
    transfer = np.fft.rfft2(_centred_embedding(np.asarray(kernel, dtype=np.float64), image.shape))
    predicted = np.fft.irfft2(np.fft.rfft2(image_differences) * transfer, s=image.shape)
    return float((inside * (predicted - target) ** 2).sum())


def fit_blur_kernel(image: np.ndarray, observation: np.ndarray, size: int, *, init: np.ndarray | None = None,
                    iters: int = KERNEL_FIT_ITERS, smoothing_px: float | None = None, smoothness: float = 0.0,
                    support: np.ndarray | None = None) -> np.ndarray:
    """The blur kernel ``[size, size]`` (non-negative, sum 1) that best maps ``image`` to ``observation`` (``[H, W]``).

    Least squares ``min_k ||g * (k * dx - dy)||^2`` over the simplex by FISTA with the exact projection, where ``d``
    are the horizontal and vertical finite differences (edges carry the kernel's information), ``g`` a Gaussian
    pre-smoothing of width ``smoothing_px`` (default ``KERNEL_FIT_SMOOTHING_256 * H / 256``: it damps the noise,
    which dominates the highest frequencies; convolutions commute, so the model stays exact), ``*`` true
    convolution (as :class:`operators.blur.Blur`) computed by FFT, and the residual scored away from the
    borders. Starts from ``init`` (default: uniform).

    ``smoothness`` > 0 adds the Tikhonov term ``smoothness * e * ||grad k||^2`` (``grad`` the kernel's finite
    differences, ``e`` the energy of ``image``'s filtered differences in the scored region, which a tap of ``k``
    sees, so that ``smoothness`` does not depend on the image's contrast or size); ``support`` (bool ``[size,
    size]``) confines the kernel to those pixels.
    """
    h, w = image.shape
    half = size // 2
    image_differences, target, inside = _kernel_fit_terms(image, observation, size, smoothing_px)
    spectrum = np.fft.rfft2(image_differences)
    weight = smoothness * float((inside * image_differences ** 2).sum())
    # the data term's Lipschitz constant, plus the kernel Laplacian's (at most 8)
    step = 1.0 / max(float((np.abs(spectrum) ** 2).sum(axis=0).max()) + 8.0 * weight, 1e-12)
    inner = None if support is None else np.asarray(support, dtype=bool)
    if inner is not None and (inner.shape != (size, size) or not inner.any()):
        raise InputError(f"fit_blur_kernel: support must be a [{size}, {size}] mask with at least one pixel set.")

    def project(k: np.ndarray) -> np.ndarray:
        if inner is None:
            return project_to_simplex(k)
        out = np.zeros_like(k)
        out[inner] = project_to_simplex(k[inner])
        return out

    kernel = project(np.full((size, size), 1.0 / size ** 2) if init is None else init)
    ahead, momentum = kernel.copy(), 1.0
    for _ in range(iters):
        ahead_spectrum = np.fft.rfft2(_centred_embedding(ahead, (h, w)))
        residual = inside * (np.fft.irfft2(spectrum * ahead_spectrum, s=(h, w)) - target)
        grad = np.fft.irfft2(np.conj(spectrum) * np.fft.rfft2(residual), s=(h, w)).sum(axis=0)
        grad = np.roll(grad, (half, half), axis=(0, 1))[:size, :size]
        if weight:
            grad = grad + weight * _kernel_laplacian(ahead)
        new = project(ahead - step * grad)
        next_momentum = (1.0 + math.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
        ahead = new + (momentum - 1.0) / next_momentum * (new - kernel)
        kernel, momentum = new, next_momentum
    return kernel


def _kernel_laplacian(k: np.ndarray) -> np.ndarray:
    """``D^T D k`` for the forward differences ``D`` of ``[k, k]`` along both axes (Neumann borders)."""
    out = np.zeros_like(k)
    for axis in (0, 1):
        d = np.diff(k, axis=axis)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (1, 0)
        out -= np.diff(np.pad(d, pad), axis=axis, append=0.0)
    return out


def project_to_simplex(values: np.ndarray) -> np.ndarray:
    """Euclidean projection of an array onto ``{k >= 0, sum k = 1}`` (same shape)."""
    flat = np.sort(values.ravel())[::-1]
    cumulative = np.cumsum(flat) - 1.0
    index = np.arange(1, flat.size + 1)
    rho = index[flat - cumulative / index > 0][-1]
    return np.maximum(values - cumulative[rho - 1] / rho, 0.0)


def centre_kernel(kernel: np.ndarray) -> np.ndarray:
    """``kernel`` ``[k, k]`` (non-negative) shifted by whole pixels (zero fill) so that its centroid is nearest the
    grid's centre, renormalized to sum 1: deconvolving with it keeps the image registered to the observation (blind
    estimates are defined only up to a shift)."""
    k = np.asarray(kernel, dtype=np.float64)
    side = k.shape[0]
    r = np.arange(side) - (side - 1) / 2
    total = k.sum()
    dy, dx = (int(round(float((k.sum(axis) * r).sum() / total))) for axis in (1, 0))
    out = np.zeros_like(k)
    src = k[max(dy, 0):side + min(dy, 0), max(dx, 0):side + min(dx, 0)]
    out[max(-dy, 0):max(-dy, 0) + src.shape[0], max(-dx, 0):max(-dx, 0) + src.shape[1]] = src
    return out / out.sum()


def l0_gradient_deconvolution(observation: np.ndarray, kernel: np.ndarray, weight: float, *, beta_max: float = 1e5,
                              beta_rate: float = 2.0) -> np.ndarray:
    """``argmin_x ||k * x - y||^2 + weight ||grad x||_0`` for ``[H, W]`` ``observation`` ``y`` (reflect-padded by the
    kernel's side; periodic inside) by half-quadratic splitting (Xu, Zheng and Jia 2013): the auxiliary gradients
    keep ``grad x`` where ``|grad x|^2 >= weight / beta``, the image step is exact in Fourier, ``beta`` grows from
    ``2 weight`` to ``beta_max``. Returns the ``[H, W]`` piecewise-flat estimate that drives kernel estimation."""
    pad = kernel.shape[0]
    y = np.pad(np.asarray(observation, dtype=np.float64), pad, mode="reflect")
    shape = y.shape
    k_hat = np.fft.fft2(_centred_embedding(kernel, shape))
    dx, dy = np.zeros(shape), np.zeros(shape)
    dx[0, 0] = dy[0, 0] = -1.0
    dx[0, -1] = dy[-1, 0] = 1.0  # x[n + 1] - x[n] as a convolution
    dx_hat, dy_hat = np.fft.fft2(dx), np.fft.fft2(dy)
    data = np.conj(k_hat) * np.fft.fft2(y)
    k_power, d_power = np.abs(k_hat) ** 2, np.abs(dx_hat) ** 2 + np.abs(dy_hat) ** 2
    x, beta = y, 2.0 * weight
    while beta < beta_max:
        gx, gy = np.roll(x, -1, 1) - x, np.roll(x, -1, 0) - x
        keep = gx ** 2 + gy ** 2 >= weight / beta
        numerator = data + beta * (np.conj(dx_hat) * np.fft.fft2(gx * keep) + np.conj(dy_hat) * np.fft.fft2(gy * keep))
        x = np.real(np.fft.ifft2(numerator / (k_power + beta * d_power)))
        beta *= beta_rate
    return x[pad:-pad, pad:-pad]


def estimate_blur_kernel(observation: np.ndarray, size: int, *, weight: float = L0_WEIGHT,
                         alternations: int = L0_ALTERNATIONS) -> np.ndarray:
    """Blind blur kernel ``[size, size]`` (non-negative, sum 1, centred by :func:`centre_kernel`) from a blurred
    ``[H, W]`` ``observation`` alone.

    Coarse to fine over kernel sides ``size, size / sqrt(2), ...`` down to :data:`L0_COARSEST_KERNEL` (the image
    resampled by the same factor), starting from a 3-px horizontal bar and upsampling the kernel between levels; at
    each level ``alternations`` rounds of :func:`l0_gradient_deconvolution` (``weight``, decaying by
    :data:`L0_WEIGHT_DECAY` per round) and :func:`fit_blur_kernel` (:data:`L0_KERNEL_STEPS` steps from the current
    kernel). In the family of Xu et al. 2013 and Pan et al. 2014 (L0-regularized blind deblurring)."""
    from skimage.transform import resize as sk_resize

    if size < 3 or size % 2 == 0:
        raise InputError(f"estimate_blur_kernel needs an odd kernel side >= 3; got {size}.")
    y = np.asarray(observation, dtype=np.float64)
    sides = [size]
    while True:
        side = int(round(sides[-1] / math.sqrt(2)))
        side += (side + 1) % 2
        if side < L0_COARSEST_KERNEL or side >= sides[-1]:
            break
        sides.append(side)
    kernel = None
    for side in reversed(sides):
        scale = side / size
        level = y if side == size else sk_resize(y, tuple(max(int(round(n * scale)), 2 * side) for n in y.shape),
                                                 order=1, anti_aliasing=True)
        if kernel is None:
            kernel = np.zeros((side, side))
            kernel[side // 2, side // 2 - 1:side // 2 + 2] = 1.0 / 3.0
        else:
            kernel = np.clip(sk_resize(kernel, (side, side), order=1), 0.0, None)
            kernel /= kernel.sum()
        for _ in range(alternations):
            latent = l0_gradient_deconvolution(level, kernel, weight)
            kernel = fit_blur_kernel(latent, level, side, init=kernel, iters=L0_KERNEL_STEPS)
            weight = max(weight * L0_WEIGHT_DECAY, L0_WEIGHT_MIN)
    return centre_kernel(kernel)


def richardson_lucy(image: np.ndarray, kernel: np.ndarray, iters: int = RL_ITERS) -> np.ndarray:
    """Richardson–Lucy ``x <- x * H^T(y / H x) / H^T 1`` on a non-negative ``[H, W]`` image, ``H`` the convolution with
    ``kernel`` under symmetric borders (:class:`operators.blur.Blur`, through the FFT for large kernels), starting
    from the image's mean."""
    from operators.blur import Blur

    y = torch.from_numpy(np.clip(image, 0.0, None)).to(torch.float64)[None, None]
    blur = Blur(torch.from_numpy(np.ascontiguousarray(kernel)).to(torch.float64), image_shape=(1, *image.shape),
                padding="symmetric")
    with torch.no_grad():
        norm = blur.adjoint(torch.ones_like(y)).clamp_min(1e-12)
        x = torch.full_like(y, max(float(y.mean()), 1e-6))
        for _ in range(iters):
            x = x * blur.adjoint(y / blur(x).clamp_min(1e-12)) / norm
    return x[0, 0].numpy()


def run_baseline(method: str, image: torch.Tensor, task: str, *, sr_factor: int = 8, mask: torch.Tensor | None = None,
                 kernel: torch.Tensor | None = None, kernel_size: int | None = None) -> BaselineRestoration:
    """Restore ``image`` ``[B, C, H, W]`` in [0, 1] (the observation; low resolution for SR) with ``method``.

    ``kernel`` ``[k, k]``: the deconvolution kernel (e.g. BIRD's estimate); else a Gaussian of side ``kernel_size``
    (default ``6 sigma + 1``) and width :func:`estimate_gaussian_sigma`. ``l0-blind`` ignores ``kernel`` and estimates
    its own of side ``kernel_size`` (default :func:`ctbird.api.default_kernel_size`) from the channel mean.
    ``mask`` ``[H, W]``: 1 = observed (inpainting).
    """
    if method not in task_baselines(task):
        raise ConfigError(f"Baseline {method!r} does not apply to {task}; use one of {', '.join(task_baselines(task))}.")
    from skimage import restoration

    start = time.perf_counter()
    array = image.detach().cpu().to(torch.float64).numpy()
    out_kernel, sigma = None, None
    if method in ("wiener", "richardson-lucy", "l0-blind"):
        if method == "l0-blind":
            from .api import default_kernel_size

            side = kernel_size or default_kernel_size(min(array.shape[-2:]))
            psf = estimate_blur_kernel(array[0].mean(axis=0), side + (side + 1) % 2)
        elif kernel is None:
            width = estimate_gaussian_sigma(array[0].mean(axis=0))
            size = kernel_size or 2 * math.ceil(3 * width) + 1
            psf = gaussian_kernel(size, width)
        else:
            psf = (kernel / kernel.sum()).detach().cpu().to(torch.float64).numpy()
        out_kernel = torch.from_numpy(psf).to(torch.float32)
        pad = psf.shape[0]  # reflect-pad so that neither method's border model (zeros / periodic) darkens the edges
        padded = np.pad(array, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        if method == "wiener":
            planes = [[restoration.unsupervised_wiener(plane, psf, rng=0)[0] for plane in item] for item in padded]
        else:
            planes = [[richardson_lucy(plane, psf) for plane in item] for item in padded]  # l0-blind too
        result = np.asarray(planes)[..., pad:-pad, pad:-pad]
    elif method == "tv":
        sigma = estimate_noise_sigma(array[0])
        result = np.asarray([[restoration.denoise_tv_chambolle(plane, weight=TV_WEIGHT_PER_SIGMA * sigma)
                              for plane in item] for item in array])
    elif method == "biharmonic":
        if mask is None:
            raise ConfigError("biharmonic inpainting needs mask= (1 = observed).")
        missing = torch.as_tensor(mask).detach().cpu().numpy() < 0.5
        result = np.asarray([[restoration.inpaint_biharmonic(plane, missing) for plane in item] for item in array])
    else:
        h, w = image.shape[-2:]
        up = torch.nn.functional.interpolate(image.detach().cpu().to(torch.float32), size=(h * sr_factor, w * sr_factor),
                                             mode="bicubic", align_corners=False)
        result = up.numpy()
    restored = torch.from_numpy(np.asarray(result, dtype=np.float32)).clamp(0.0, 1.0)
    return BaselineRestoration(image=restored, method=method, seconds=time.perf_counter() - start, kernel=out_kernel,
                               sigma=sigma)


__all__ = ["BASELINES", "TASK_BASELINES", "BaselineRestoration", "task_baselines", "run_baseline",
           "estimate_noise_sigma", "estimate_gaussian_sigma", "gaussian_kernel", "richardson_lucy", "fit_blur_kernel",
           "kernel_misfit", "project_to_simplex", "centre_kernel", "l0_gradient_deconvolution", "estimate_blur_kernel"]
