"""Simulated CT acquisitions: an HU image -> the sinogram a scanner would measure (the one place this is done).

``simulate`` brings the image to the ``N x N`` working grid by the prior's one pre-processing
(:func:`ctbird.stacks.working_slices`: clip to the prior's HU window, pad to a square with air, resample),
converts HU to attenuation (:mod:`ctbird.units`), projects it with :class:`operators.radon.Radon` (on the CPU or
the given device) and optionally adds log-Poisson dose noise. The sinogram holds line integrals of
``mu`` (1/mm) with ray lengths in mm, the units :func:`ctbird.reconstruct` expects.

:func:`degrade_image` is the same for the restoration tasks: a clean image on [0, 1] -> the observation of a
blur, downsampling, noise or mask (``ctbird restore --simulate`` and the restoration benchmarks).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, InputError
from .limits import check_run_fits, check_sizes, estimate_run

#: Simulated beam geometries (:func:`simulation_geometry`).
GEOMETRY_KINDS = ("parallel", "fan")


@dataclass(frozen=True)
class Acquisition:
    """A simulated acquisition.

    Attributes
    ----------
    sinogram : Tensor ``[1, 1, views, detectors]`` float32 (on the ``device`` it was simulated on)
        Line integrals of ``mu`` (1/mm), lengths in mm (``-log(I / I0)``; noisy when ``dose`` is set).
    geometry : operators.ParallelBeam or operators.FanBeam
        The geometry the sinogram was simulated with, resolved for the ``image_size`` grid (pixel units); it carries
        the simulated scanner errors (``center_offset``, ``angle_offsets``) when any were set.
    truth_hu : ndarray ``[N, N]`` float32
        The ground truth on the working grid, in HU clipped to :data:`ctbird.units.PRIOR_HU_WINDOW`.
    pixel_spacing_mm : float
        Pixel size of the working grid (mm).
    image_size : int
        ``N``.
    dose : float or None
        Incident photons ``I0`` per detector cell (None: noiseless).
    seed : int
        Seed of the noise.
    """

    sinogram: torch.Tensor
    geometry: Any
    truth_hu: np.ndarray
    pixel_spacing_mm: float
    image_size: int
    dose: float | None
    seed: int

    @property
    def nominal_geometry(self):
        """The geometry without the simulated errors: what a reconstruction is told (``geometry`` when it has none)."""
        return self.geometry.calibrated() if self.geometry.is_calibrated else self.geometry

    def settings(self) -> dict[str, Any]:
        """The acquisition's record: views, nominal geometry dict, grid, spacing, dose and seed (JSON-ready), and the
        simulated geometry errors (``geometry_errors``: ``center_offset`` cells, ``angle_offsets_deg``) when set."""
        record = {"views": int(self.geometry.views), "geometry": self.nominal_geometry.to_dict(),
                  "image_size": self.image_size, "pixel_spacing_mm": self.pixel_spacing_mm, "dose_I0": self.dose,
                  "seed": self.seed}
        if self.geometry.is_calibrated:
            errors = self.geometry.to_dict()
            record["geometry_errors"] = {k: errors[k] for k in ("center_offset", "angle_offsets_deg") if k in errors}
        return record


def simulation_geometry(kind: str, views: int, size: int, *, center_offset: float = 0.0,
                        angle_jitter_deg: float = 0.0, seed: int = 0):
    """The standard simulated geometry on an ``size x size`` grid: ``"parallel"`` over 180 degrees, or ``"fan"``
    (flat detector, 360 degrees) with the source at ``2 size`` and the detector at ``size`` from the axis (pixel
    units): a clinical-like fan of about 29 degrees half-angle.

    Scanner errors to simulate (a calibration test): ``center_offset`` (detector cells, the geometry's
    ``center_offset``) and ``angle_jitter_deg``, the standard deviation of mean-free Gaussian per-view angle offsets
    (degrees, drawn from ``seed``). Reconstruct such an acquisition with the nominal geometry
    (:attr:`Acquisition.nominal_geometry`) to see the errors' effect, or calibrate it.
    """
    from operators.geometry import FanBeam, ParallelBeam

    if kind == "parallel":
        geometry = ParallelBeam(views=views).resolved(size)
    elif kind == "fan":
        geometry = FanBeam(views=views, source_distance=2.0 * size, detector_distance=1.0 * size).resolved(size)
    else:
        raise ConfigError(f"geometry must be one of {', '.join(GEOMETRY_KINDS)}, got {kind!r}.")
    for name, value in (("center_offset", center_offset), ("angle_jitter_deg", angle_jitter_deg)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    if angle_jitter_deg < 0:
        raise ConfigError(f"angle_jitter_deg must be >= 0 (a standard deviation in degrees), got {angle_jitter_deg!r}.")
    if angle_jitter_deg == 0 and center_offset == 0:
        return geometry
    offsets = None
    if angle_jitter_deg > 0:
        jitter = np.random.default_rng(seed).standard_normal(views)
        offsets = np.deg2rad(angle_jitter_deg * (jitter - jitter.mean())).tolist()
    return geometry.calibrated(float(center_offset), offsets)


@functools.lru_cache(maxsize=8)
def _projector(geometry, size: int, backend: str, device: str):
    from operators.radon import Radon

    return Radon(geometry, size, backend=backend, device=torch.device(device))


def simulate(hu: np.ndarray | torch.Tensor, *, views: int | None = None, image_size: int,
             pixel_spacing_mm: float | tuple[float, float] = 1.0, geometry: str | Any = "parallel",
             dose: float | None = None, seed: int = 0, radon_backend: str = "matrix",
             device: str | torch.device = "cpu") -> Acquisition:
    """Simulate a CT acquisition of an HU image.

    Parameters
    ----------
    hu : array or tensor ``[H, W]``
        The slice in HU (any size; padding such as -2048 or -3024 is clipped away).
    views : int or None
        Projection count; required with a geometry kind, optional (must match) with a geometry object.
    image_size : int
        Side ``N`` of the working grid; non-square images are padded with air to a square first.
    pixel_spacing_mm : float or (row, col)
        Pixel size of ``hu`` in mm (the working grid's spacing follows from the resampling).
    geometry : {"parallel", "fan"} or operators.ParallelBeam / FanBeam
        A kind for :func:`simulation_geometry`, or a geometry in pixel units (``resolved`` for the grid when it has
        no detector count).
    dose : float or None
        Incident photons ``I0`` per detector cell for log-Poisson noise (:class:`operators.noise.LogPoissonNoise`);
        ``None`` = noiseless.
    seed : int
        Seed of the noise.
    radon_backend : str
        Projector backend (``"matrix"``: ASTRA's exact system matrix).
    device : str or torch.device
        Where the projection runs and the sinogram lives (e.g. the device the reconstruction will run on). The
        dose noise is always drawn on the CPU from ``seed``, so a seed gives the same noise on every device.

    Returns
    -------
    Acquisition
    """
    from operators.noise import LogPoissonNoise

    from .io import working_pixel_spacing
    from .stacks import working_slices
    from .units import hu_to_mu

    array = hu.detach().cpu().numpy() if isinstance(hu, torch.Tensor) else np.asarray(hu)
    array = np.squeeze(array)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or min(array.shape) < 1:
        raise InputError(f"simulate needs an HU image [H, W], got {array.dtype} {list(np.shape(hu))}.")
    if not np.isfinite(array).all():
        raise InputError("the HU image contains NaN or infinite values.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2:
        raise ConfigError(f"image_size must be an integer >= 2, got {image_size!r}.")
    spacing = (pixel_spacing_mm, pixel_spacing_mm) if np.isscalar(pixel_spacing_mm) else tuple(pixel_spacing_mm)
    if len(spacing) != 2 or not all(isinstance(s, (int, float, np.floating)) and math.isfinite(s) and s > 0
                                    for s in spacing):
        raise ConfigError(f"pixel_spacing_mm must be a positive number or a (row, col) pair, got {pixel_spacing_mm!r}.")
    if dose is not None and not (isinstance(dose, (int, float)) and math.isfinite(dose) and dose > 0):
        raise ConfigError(f"dose must be a positive photon count I0 or None, got {dose!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
    if isinstance(geometry, str):
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ConfigError(f"views must be an integer >= 1, got {views!r}.")
        check_sizes(views=views, image_size=image_size)
        geometry = simulation_geometry(geometry, views, image_size)
    else:
        if views is not None and views != geometry.views:
            raise ConfigError(f"views={views} disagrees with the geometry's {geometry.views} views.")
        geometry = geometry if geometry.detectors else geometry.resolved(image_size)
    # sizes beyond the caps or a system matrix that cannot fit: a ConfigError before any allocation
    check_sizes(views=geometry.views, detectors=geometry.detectors, image_size=image_size)
    check_run_fits(estimate_run(views=geometry.views, detectors=geometry.detectors, image_size=image_size,
                                backend=radon_backend, outputs_per_slice=0))

    truth, _ = working_slices(array, image_size)
    pixel_mm = working_pixel_spacing(spacing, array.shape, image_size)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from exc
    mu_pixels = torch.from_numpy(np.asarray(hu_to_mu(truth) * pixel_mm, dtype=np.float32))[None, None].to(device)
    with torch.no_grad():
        sinogram = _projector(geometry, image_size, radon_backend, str(device))(mu_pixels)
    if dose is not None:
        sinogram = LogPoissonNoise(float(dose))(sinogram, generator=torch.Generator().manual_seed(seed))
    return Acquisition(sinogram=sinogram, geometry=geometry, truth_hu=truth, pixel_spacing_mm=pixel_mm,
                       image_size=image_size, dose=None if dose is None else float(dose), seed=seed)



# ------------------------------------------------------------------------------ restoration degradations
#: Reference (256 px) Gaussian blur sigma and inpainting hole side of the restoration tasks (BIRD's settings).
GAUSSIAN_SIGMA_256, HOLE_256 = 3.0, 80


def motion_kernel(size: int, seed: int, steps: int | None = None) -> torch.Tensor:
    """Synthetic motion blur ``[size, size]``: a smoothed 2-D random walk (camera shake) rasterized bilinearly.

    The velocity follows ``v <- 0.7 v + 0.5 n`` (``n`` standard normal, unit-speed steps); the path is centred
    and scaled to span 80 % of the grid; each point splats its unit mass bilinearly; the sum is 1.
    """
    rng = np.random.default_rng(seed)
    steps = steps or 6 * size
    velocity = rng.normal(size=2)
    points = np.zeros((steps, 2))
    position = np.zeros(2)
    for i in range(steps):
        velocity = 0.7 * velocity + 0.5 * rng.normal(size=2)
        position = position + velocity / max(np.linalg.norm(velocity), 1e-8)
        points[i] = position
    points -= (points.max(axis=0) + points.min(axis=0)) / 2.0
    extent = np.abs(points).max()
    points *= 0.4 * (size - 1) / max(extent, 1e-8)
    points += (size - 1) / 2.0
    kernel = np.zeros((size, size))
    for y, x in points:
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    kernel[y0 + dy, x0 + dx] += wy * wx
    return torch.from_numpy(kernel / kernel.sum()).to(torch.float32)


def inpaint_mask(height: int, width: int | None = None) -> torch.Tensor:
    """``[height, width]`` (default square), 1 = observed: a centred square hole of side ``80 min(H, W) / 256``."""
    width = height if width is None else width
    hole = max(1, round(HOLE_256 * min(height, width) / 256))
    top, left = (height - hole) // 2, (width - hole) // 2
    mask = torch.ones(height, width)
    mask[top:top + hole, left:left + hole] = 0.0
    return mask


def degrade_image(task: str, image: torch.Tensor, *, sr_factor: int = 8, kernel_size: int | None = None,
                  seed: int = 0, noise_std: float | None = None) -> dict[str, torch.Tensor]:
    """The observation of a clean image ``[C, H, W]`` on [0, 1] under a restoration task (BIRD's settings at 256 px,
    scaled to ``H``): ``{"y": [1, C, h, w] on [0, 1]}`` plus the true ``"kernel"`` ``[k, k]`` (deblurring; ``k`` defaults to what :func:`ctbird.restore` estimates) or
    ``"mask"`` ``[H, W]`` (inpainting, 1 = observed).

    * ``gaussian-deblur``: Gaussian of sigma ``3 min(H, W) / 256`` px on ``kernel_size``² (default
      :func:`ctbird.api.default_kernel_size`); ``motion-deblur``: :func:`motion_kernel` (seed ``seed``); both
      blur with reflect padding, as :func:`ctbird.restore` models them (the reference pads its Gaussian blur with
      zeros, which no camera or scanner does); ``sr``: ``sr_factor`` box downsampling; ``inpaint``: :func:`inpaint_mask`.
    * Noise (seeded by ``seed``): :class:`operators.noise.SpeckleGaussianNoise` defaults (0.8 speckle 0.12 + 0.2
      Gaussian 0.05) for deblurring, SR and inpainting; speckle 0.4 + Gaussian 0.15 for ``denoise``; or, with
      ``noise_std``, white Gaussian noise of that std for every task; then clipped to [0, 1].
    """
    from operators.blur import Blur
    from operators.noise import GaussianNoise, SpeckleGaussianNoise
    from operators.resample import Downsample

    from .config import RESTORE_TASKS
    from .restoration_baselines import gaussian_kernel

    if task not in RESTORE_TASKS:
        raise ConfigError(f"Unknown task {task!r}; use one of {', '.join(RESTORE_TASKS)}.")
    if noise_std is not None:
        from .api import _check_float

        noise_std = _check_float("noise_std", noise_std)
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.dim() != 3:
        raise InputError(f"degrade_image takes an image [C, H, W]; got shape {tuple(image.shape)}.")
    shape = tuple(image.shape)
    if kernel_size is None:
        from .api import default_kernel_size

        kernel_size = default_kernel_size(min(shape[-2:]))
    x = image[None]
    generator = torch.Generator().manual_seed(seed)
    noise = SpeckleGaussianNoise()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if task == "gaussian-deblur":
            sigma = GAUSSIAN_SIGMA_256 * min(shape[-2:]) / 256.0
            out["kernel"] = torch.from_numpy(gaussian_kernel(kernel_size, sigma)).to(torch.float32)
            clean = Blur(out["kernel"], image_shape=shape, padding="reflect")(x)
        elif task == "motion-deblur":
            out["kernel"] = motion_kernel(kernel_size, seed)
            clean = Blur(out["kernel"], image_shape=shape, padding="reflect")(x)
        elif task == "sr":
            if shape[-1] % sr_factor or shape[-2] % sr_factor:
                raise InputError(f"The {shape[-2]}x{shape[-1]} image is not divisible by the SR factor {sr_factor}.")
            clean = Downsample(sr_factor, shape, filter="box")(x)
        elif task == "denoise":
            clean, noise = x, SpeckleGaussianNoise(speckle_sigma=0.4, gaussian_sigma=0.15, clip=True)
        else:
            out["mask"] = inpaint_mask(shape[-2], shape[-1])
            clean = x
        if noise_std is not None:
            noise = GaussianNoise(noise_std)
        y = noise(clean, generator=generator).clamp(0.0, 1.0)
        if task == "inpaint":
            y = y * out["mask"]
    out["y"] = y
    return out


__all__ = ["Acquisition", "simulate", "simulation_geometry", "GEOMETRY_KINDS", "degrade_image", "motion_kernel",
           "inpaint_mask", "GAUSSIAN_SIGMA_256", "HOLE_256"]
