"""High-level entry points: :func:`reconstruct` (sparse-view CT) and :func:`restore` (photographs).

Both build the forward operator, the measurement model (prior scale -> operator input scale) and the
solver, run it, and return plain result objects. See ``docs/method.md`` for the algorithm and defaults.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import baselines
from .errors import ConfigError, InputError
from .priors import DiffusionPrior, load_prior
from .solvers.bird import BIRD, TASK_DEFAULTS, BirdResult
from .units import mu_to_hu, unit_to_hu, unit_to_mu

CT_METHODS = ("bird", "bird+dc", "fbp", "sirt", "tv", "dps")
RESTORE_TASKS = ("gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint")
#: Defaults of the non-BIRD methods (iterations; DPS steps and relative step size; DC refinement).
METHOD_DEFAULTS: dict[str, dict] = {
    "sirt": {"iters": 100},
    "tv": {"iters": 300},
    "dps": {"iters": 100, "zeta": 10.0},  # measured on training slices: docs/tuning_dps_cpu-train.md
    "dc": {"weight": 0.002, "iters": 30},
}
#: Reference kernel size at 256 x 256 (BIRD's blind deblurring); scaled with the image for other sizes.
REFERENCE_KERNEL_SIZE, REFERENCE_SIZE = 41, 256


@dataclass
class Reconstruction:
    """CT reconstruction.

    Attributes
    ----------
    image : Tensor ``[B, 1, N, N]`` float32
        Reconstruction in HU.
    method : str
        ``"bird"``, ``"bird+dc"``, ``"fbp"``, ``"sirt"``, ``"tv"`` or ``"dps"``.
    mu : Tensor ``[B, 1, N, N]``
        The same in attenuation per pixel length (``mu * pixel_spacing_mm``, the sinogram's units).
    uncertainty : Tensor ``[B, 1, N, N]`` or None
        Per-pixel std across BIRD restarts in HU (``n_samples > 1``).
    seconds : float
        Wall-clock time.
    nfe : int
        UNet evaluations (0 for classical methods).
    loss_history : list of float
        Per-iteration data loss (prior-based methods).
    grad_mode, delta_t : str or None, int or None
        BIRD/DPS settings (None for classical methods).
    pixel_spacing_mm : float
        Pixel size assumed for the units.
    solver_result : BirdResult or DPSResult or None
        The raw solver output.
    """

    image: torch.Tensor
    method: str
    mu: torch.Tensor
    uncertainty: torch.Tensor | None
    seconds: float
    nfe: int
    loss_history: list[float]
    grad_mode: str | None
    delta_t: int | None
    pixel_spacing_mm: float
    solver_result: Any = None
    info: dict = field(default_factory=dict)

    @property
    def hu(self) -> torch.Tensor:
        """Alias of :attr:`image` (HU)."""
        return self.image


@dataclass
class Restoration:
    """Photograph restoration.

    Attributes
    ----------
    image : Tensor ``[B, C, H, W]`` in [0, 1]
        Restored image: the input's size, or for ``task="sr"`` the high-resolution size (input times ``sr_factor``).
    kernel : Tensor ``[B, k, k]`` or None
        Estimated blur / downsampling kernel (blind tasks), or the fixed one.
    uncertainty : Tensor ``[B, C, H, W]`` or None
        Per-pixel std across restarts on the [0, 1] scale (``n_samples > 1``).
    task, blind, seconds, nfe, loss_history, grad_mode, delta_t, iters_run
        Run record.
    solver_result : BirdResult
        The raw BIRD output (prior-size ``x0`` in [-1, 1], latent, operator state...).
    """

    image: torch.Tensor
    kernel: torch.Tensor | None
    uncertainty: torch.Tensor | None
    task: str
    blind: bool
    seconds: float
    nfe: int
    loss_history: list[float]
    grad_mode: str
    delta_t: int
    iters_run: int
    solver_result: BirdResult | None = None
    method: str = "bird"


# ---------------------------------------------------------------------- helpers
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; raises :class:`ConfigError` for unavailable CUDA."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available; use device='cpu' or 'auto'.")
    return dev


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Differentiable bilinear resampling ``[B, C, h, w] -> [B, C, *size]`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _generator(seed: int) -> torch.Generator:
    # latents are drawn on the CPU and moved, so a seed gives the same start on every device
    return torch.Generator().manual_seed(_check_int("seed", seed, 0))


def _prior_on(prior: DiffusionPrior | str | os.PathLike | None, device: torch.device) -> DiffusionPrior:
    loaded = load_prior(prior, device=str(device))
    return loaded.to(device)


# ---------------------------------------------------------------------- CT
def _ct_sinogram(sinogram: Any, radon_out: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(sinogram, torch.Tensor):
        try:
            sinogram = torch.as_tensor(sinogram)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"sinogram must be a tensor or array, got {type(sinogram).__name__}.") from exc
    if sinogram.dim() == 2:
        sinogram = sinogram[None, None]
    views, dets = radon_out[1], radon_out[2]
    if sinogram.dim() != 4 or sinogram.shape[1] != 1 or tuple(sinogram.shape[2:]) != (views, dets):
        raise InputError(f"sinogram must be [B, 1, views, detectors] = [B, 1, {views}, {dets}] (or [views, detectors]) "
                         f"for this geometry, got {list(sinogram.shape)}. Check the geometry's views/detectors.")
    if not sinogram.is_floating_point() or not bool(torch.isfinite(sinogram).all()):
        raise InputError("sinogram must hold finite floating-point values (line integrals); found NaN/inf or integers.")
    return sinogram.to(torch.float32)


def reconstruct(sinogram: torch.Tensor, geometry, *, image_size: int, pixel_spacing_mm: float | None = None,
                prior: DiffusionPrior | str | os.PathLike | None = None, method: str = "bird", iters: int | None = None,
                delta_t: int | None = 100, n_samples: int | None = 1, seed: int = 0, device: str | torch.device = "cpu",
                grad_mode: str = "detached", callback: Callable[[dict], None] | None = None,
                radon_backend: str = "matrix", lr_latent: float | None = None, early_stopping: int | None = None,
                dc_weight: float | None = None, dc_iters: int | None = None, dps_zeta: float | None = None,
                latent_optimizer: str | None = None, latent_lr_schedule: str | None = None,
                keep_best: bool | None = None, data_filter: float | None | str = "default") -> Reconstruction:
    """Reconstruct CT slices from a (sparse-view) sinogram.

    Units
    -----
    The sinogram holds **line integrals of the linear attenuation coefficient** ``mu`` (1/mm) along each ray,
    with ray lengths in mm, i.e. ``-log(I / I0)``: ``sinogram = Radon(mu) * pixel_spacing_mm`` where ``Radon``
    is :class:`operators.radon.Radon` (pixel length units). The result is in **HU**
    (:func:`ctbird.units.mu_to_hu`; water ``mu = MU_WATER = 0.0192 / mm``).

    Parameters
    ----------
    sinogram : Tensor ``[B, 1, views, detectors]`` (or ``[views, detectors]``)
        Line integrals as above.
    geometry : operators.ParallelBeam or operators.FanBeam
        Acquisition geometry (pixel units unless ``geometry.pixel_spacing`` is set).
    image_size : int
        Side ``N`` of the square reconstruction grid.
    pixel_spacing_mm : float or None
        Pixel size in mm; default ``geometry.pixel_spacing``, else 1.0 (lengths in pixels are then mm).
    prior : DiffusionPrior, str, path or None
        Diffusion prior for ``bird``/``bird+dc``/``dps``; ``None`` = the shipped default
        (:func:`ctbird.priors.default_prior_path`). A 1-channel prior trained on
        :func:`ctbird.units.hu_to_unit` images. If its size differs from ``image_size``, ``x0`` is resampled
        bilinearly to ``N x N`` (inside the measurement model, so gradients flow through it).
    method : {"bird", "bird+dc", "fbp", "sirt", "tv", "dps"}
        ``bird+dc`` is BIRD followed by conjugate-gradient data-consistency steps (:mod:`ctbird.solvers.refine`).
    iters : int or None
        BIRD iterations / SIRT or TV iterations / DPS steps; ``None`` = the method's default
        (``TASK_DEFAULTS["ct"]`` for BIRD, :data:`METHOD_DEFAULTS` otherwise).
    delta_t, n_samples, grad_mode, lr_latent, early_stopping, latent_optimizer, latent_lr_schedule, keep_best
        BIRD settings (``None`` = default: 100, 1, ..., ``TASK_DEFAULTS["ct"]``) (see :class:`ctbird.solvers.BIRD`);
        ``n_samples > 1`` gives ``uncertainty``.
    seed : int
        Seed of the initial noise (and DPS noise).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    callback : callable or None
        ``callback(dict(iteration, iters, loss, ...))`` after each BIRD/DPS iteration.
    radon_backend : {"matrix", "astra", "torch"}
        Projector backend of :class:`operators.radon.Radon`.
    data_filter : float, None or "default"
        BIRD's data term is ``||F (A x - y)||^2`` with ``F`` = :class:`operators.SinogramFilter` of this exponent
        (0.5: the square root of FBP's ramp); ``None`` = the plain ``||A x - y||^2`` of the reference;
        ``"default"`` = ``TASK_DEFAULTS["ct"]["data_filter"]``.
    dc_weight, dc_iters : float, int or None
        ``bird+dc`` anchor weight (relative to ``||A||^2``) and CG iterations.
    dps_zeta : float or None
        DPS step relative to the Lipschitz constant of the measurement model.

    Returns
    -------
    Reconstruction
        ``.image`` in HU ``[B, 1, N, N]`` float32, plus the run record.
    """
    from operators.radon import Radon

    delta_t = 100 if delta_t is None else delta_t
    n_samples = 1 if n_samples is None else n_samples
    if method not in CT_METHODS:
        raise ConfigError(f"method must be one of {CT_METHODS}, got {method!r}.")
    image_size = _check_int("image_size", image_size, 2)
    if iters is not None:
        _check_int("iters", iters)
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else (getattr(geometry, "pixel_spacing", None) or 1.0)
    if not (isinstance(spacing, (int, float)) and math.isfinite(spacing) and spacing > 0):
        raise ConfigError(f"pixel_spacing_mm must be a positive number (mm), got {spacing!r}.")
    spacing = float(spacing)
    dev = resolve_device(device)
    radon = Radon(geometry, image_size, backend=radon_backend, channels=1, device=dev)
    y = _ct_sinogram(sinogram, radon.out_shape).to(dev)
    start = time.perf_counter()

    def classical(mu_pixels: torch.Tensor, info: dict) -> Reconstruction:
        mu_pixels = mu_pixels.detach().to(torch.float32)
        return Reconstruction(image=mu_to_hu(mu_pixels / spacing), method=method, mu=mu_pixels, uncertainty=None,
                              seconds=time.perf_counter() - start, nfe=0, loss_history=[], grad_mode=None,
                              delta_t=None, pixel_spacing_mm=spacing, info=info)

    if method in ("fbp", "sirt", "tv"):
        if method == "fbp":
            return classical(baselines.fbp(y, geometry, image_size), {})
        n = iters or METHOD_DEFAULTS[method]["iters"]
        if method == "sirt":
            return classical(baselines.sirt(y, radon, iters=n, nonneg=True), {"iters": n})
        return classical(baselines.tv(y, radon, iters=n, nonneg=True), {"iters": n})

    model = _prior_on(prior, dev)
    if model.channels != 1:
        raise ConfigError(f"CT needs a 1-channel prior, but this prior has {model.channels} channels "
                          "(a photograph prior?). Pass a CT prior trained on HU slices.")

    def measurement_input(x0: torch.Tensor) -> torch.Tensor:
        """Prior scale [-1, 1] at the prior's size -> attenuation per pixel length at N x N."""
        return unit_to_mu(resize(x0, (image_size, image_size))) * spacing

    def to_hu(x0: torch.Tensor) -> torch.Tensor:
        return unit_to_hu(resize(x0, (image_size, image_size))).to(torch.float32)

    generator = _generator(seed)
    if method == "dps":
        from .solvers.dps import DPS

        slope = float(unit_to_mu(torch.tensor(1.0)) - unit_to_mu(torch.tensor(0.0))) * spacing  # d(mu*px)/d(unit)
        relative_zeta = dps_zeta if dps_zeta is not None else METHOD_DEFAULTS["dps"]["zeta"]
        zeta = relative_zeta / (slope * baselines.operator_norm(radon))
        steps = iters or METHOD_DEFAULTS["dps"]["iters"]
        out = DPS(model, radon, steps=steps, zeta=zeta, input_transform=measurement_input, callback=callback).run(
            y, generator=generator)
        return Reconstruction(image=to_hu(out.image), method=method, mu=out.transformed, uncertainty=None,
                              seconds=time.perf_counter() - start, nfe=out.nfe, loss_history=out.loss_history,
                              grad_mode="exact", delta_t=model.num_train_timesteps // steps, pixel_spacing_mm=spacing,
                              solver_result=out, info={"zeta": zeta, "steps": steps})

    defaults = TASK_DEFAULTS["ct"]
    exponent = defaults["data_filter"] if data_filter == "default" else data_filter
    fitted, y_fitted = radon, y
    if exponent is not None:
        from operators import SinogramFilter

        sinogram_filter = SinogramFilter(radon.out_shape, exponent=exponent).to(dev)
        fitted, y_fitted = sinogram_filter @ radon, sinogram_filter(y)
    bird = BIRD(model, fitted, iters=iters or defaults["iters"], lr_latent=lr_latent or defaults["lr_latent"],
                latent_optimizer=latent_optimizer or defaults["latent_optimizer"],
                latent_lr_schedule=latent_lr_schedule or defaults["latent_lr_schedule"],
                lr_operator=defaults["lr_operator"], delta_t=delta_t, grad_mode=grad_mode, n_samples=n_samples,
                input_transform=measurement_input, early_stopping=early_stopping, callback=callback,
                keep_best=defaults["keep_best"] if keep_best is None else keep_best)
    out = bird.run(y_fitted, generator=generator)
    hu = to_hu(out.image)
    mu = out.transformed
    info: dict = {}
    if method == "bird+dc":
        from .solvers.refine import refine_data_consistency

        weight = dc_weight if dc_weight is not None else METHOD_DEFAULTS["dc"]["weight"]
        n_dc = dc_iters if dc_iters is not None else METHOD_DEFAULTS["dc"]["iters"]
        mu = refine_data_consistency(y, radon, mu, weight=weight, iters=n_dc, nonneg=True, op_norm=baselines.operator_norm(radon))
        hu = mu_to_hu(mu / spacing)
        info = {"dc_weight": weight, "dc_iters": n_dc}
    hu_per_unit = float(unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0)))
    uncertainty = resize(out.uncertainty, (image_size, image_size)) * hu_per_unit if out.uncertainty is not None else None
    return Reconstruction(image=hu.to(torch.float32), method=method, mu=mu.detach(), uncertainty=uncertainty,
                          seconds=time.perf_counter() - start, nfe=out.nfe, loss_history=out.loss_history,
                          grad_mode=out.grad_mode, delta_t=out.delta_t, pixel_spacing_mm=spacing, solver_result=out,
                          info={**info, "iters_run": out.iters_run, "final_loss": out.final_loss.tolist(),
                                "latent_optimizer": bird.latent_optimizer, "lr_latent": bird.lr_latent,
                                "latent_lr_schedule": bird.latent_lr_schedule, "keep_best": bird.keep_best,
                                "data_filter": exponent})


# ---------------------------------------------------------------------- photographs
def _default_kernel_size(size: int) -> int:
    k = round(REFERENCE_KERNEL_SIZE * size / REFERENCE_SIZE)
    return max(3, k if k % 2 else k + 1)


def _photo(image: Any) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a torch.Tensor [B, C, H, W] in [0, 1], got {type(image).__name__}.")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or not image.is_floating_point():
        raise InputError(f"image must be a float tensor [B, C, H, W] (or [C, H, W]) in [0, 1], got "
                         f"{list(image.shape)} {image.dtype}.")
    if not bool(torch.isfinite(image).all()):
        raise InputError("image contains NaN or infinite values.")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]. Divide 8-bit data by 255.")
    return image.clamp(0.0, 1.0).to(torch.float32)


def restore(image: torch.Tensor, task: str = "gaussian-deblur", *, prior: DiffusionPrior | str | os.PathLike,
            blind: bool = True, iters: int | None = None, sr_factor: int = 8, kernel_size: int | None = None,
            kernel: torch.Tensor | float | None = None, mask: torch.Tensor | None = None, seed: int = 0,
            device: str | torch.device = "cpu", grad_mode: str = "detached",
            callback: Callable[[dict], None] | None = None, n_samples: int | None = 1, delta_t: int | None = 100,
            lr_latent: float | None = None, lr_operator: float | None = None,
            early_stopping: int | None = None, latent_optimizer: str | None = None,
            latent_lr_schedule: str | None = None, keep_best: bool | None = None) -> Restoration:
    """Restore photographs with BIRD.

    Parameters
    ----------
    image : Tensor ``[B, C, H, W]`` (or ``[C, H, W]``) in [0, 1]
        The degraded observation. For ``task="sr"`` it is the **low-resolution** image.
    task : {"gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint"}
        ``gaussian-deblur``: blind kernel from BIRD's kernel MLP (reference); ``motion-deblur``: blind free kernel
        (softmax logits; the reference fits ``x0`` to ``y`` without any operator, we estimate a kernel instead);
        ``sr``: box downsampling by ``sr_factor`` (blind: a learnable filter initialized to the box);
        ``denoise``: identity; ``inpaint``: ``mask`` (1 = observed).
    prior : DiffusionPrior, str or path
        Diffusers folder / hub id with a UNet2DModel (+ scheduler config) whose channels match the image.
    blind : bool
        Estimate the degradation (deblurring, SR). ``False`` needs ``kernel`` for deblurring.
    iters : int or None
        BIRD iterations (default ``TASK_DEFAULTS[task]``).
    sr_factor : int
        Super-resolution factor.
    kernel_size : int or None
        Odd blind-kernel side; default 41 at 256 px, scaled with the image size (at least 3).
    kernel : Tensor ``[k, k]``, float or None
        Known blur kernel (non-blind deblurring), or a Gaussian sigma in pixels.
    mask : Tensor ``[H, W]`` or None
        Observed-pixel mask (required for ``inpaint``).
    seed, device, grad_mode, callback, n_samples, delta_t, lr_latent, lr_operator, early_stopping, latent_optimizer,
    latent_lr_schedule, keep_best
        As for :class:`ctbird.solvers.BIRD` (``None``: ``TASK_DEFAULTS[task]``).

    Returns
    -------
    Restoration
        ``.image`` ``[B, C, H, W]`` in [0, 1] with the input's spatial size (``sr``: ``H * sr_factor``);
        ``.kernel`` for deblurring. The prior works at its own size; ``x0`` is resampled bilinearly to the
        working size inside the measurement model when the sizes differ.
    """
    from operators import Identity
    from operators.blur import Blur, GaussianBlur
    from operators.mask import Mask
    from operators.resample import Downsample

    delta_t = 100 if delta_t is None else delta_t
    n_samples = 1 if n_samples is None else n_samples
    if task not in RESTORE_TASKS:
        raise ConfigError(f"task must be one of {RESTORE_TASKS}, got {task!r}.")
    if prior is None:
        raise ConfigError("restore() needs prior=: a diffusers folder or hub id holding a photograph UNet2DModel.")
    if iters is not None:
        _check_int("iters", iters)
    y = _photo(image)
    dev = resolve_device(device)
    model = _prior_on(prior, dev)
    batch, channels, height, width = y.shape
    if channels != model.channels:
        raise InputError(f"The image has {channels} channels but the prior expects {model.channels}; convert it "
                         "(e.g. grayscale -> repeat to RGB) or use a matching prior.")
    out_h, out_w = height, width
    if task == "sr":
        _check_int("sr_factor", sr_factor, 2)
        out_h, out_w = height * sr_factor, width * sr_factor
    shape = (channels, out_h, out_w)
    defaults = dict(TASK_DEFAULTS[task])

    if task in ("gaussian-deblur", "motion-deblur"):
        if blind:
            k = _default_kernel_size(min(out_h, out_w)) if kernel_size is None else _check_int("kernel_size", kernel_size, 1)
            if k % 2 == 0 or k > min(out_h, out_w):
                raise ConfigError(f"kernel_size must be odd and at most the image side {min(out_h, out_w)}, got {k}.")
            parametrization = "mlp" if task == "gaussian-deblur" else "logits"
            operator = Blur(kernel_size=k, image_shape=shape, learnable=True, parametrization=parametrization,
                            padding="zeros" if task == "gaussian-deblur" else "reflect")
        elif isinstance(kernel, torch.Tensor):
            operator = Blur(kernel.to(torch.float32), image_shape=shape)
        elif isinstance(kernel, (int, float)) and not isinstance(kernel, bool):
            operator = GaussianBlur(float(kernel), image_shape=shape)
        else:
            raise ConfigError("Non-blind deblurring needs kernel=: a [k, k] tensor or a Gaussian sigma in pixels.")
    elif task == "sr":
        operator = Downsample(sr_factor, shape, filter="box", learnable=blind)
    elif task == "denoise":
        operator = Identity(shape)
    else:
        if mask is None:
            raise ConfigError("task='inpaint' needs mask=: an [H, W] tensor with 1 where pixels are observed.")
        operator = Mask(torch.as_tensor(mask), shape)
    learnable = any(p.requires_grad for p in operator.parameters())

    def measurement_input(x0: torch.Tensor) -> torch.Tensor:
        return resize((x0 + 1.0) / 2.0, (out_h, out_w))

    bird = BIRD(model, operator, iters=iters or defaults["iters"], lr_latent=lr_latent or defaults["lr_latent"],
                latent_optimizer=latent_optimizer or defaults["latent_optimizer"],
                latent_lr_schedule=latent_lr_schedule or defaults["latent_lr_schedule"],
                lr_operator=(lr_operator if lr_operator is not None else defaults["lr_operator"]) if learnable else 0.0,
                delta_t=delta_t, grad_mode=grad_mode, n_samples=n_samples, input_transform=measurement_input,
                early_stopping=early_stopping, callback=callback,
                keep_best=defaults["keep_best"] if keep_best is None else keep_best)
    out = bird.run(y.to(dev), generator=_generator(seed))
    kernel_out = out.kernel
    uncertainty = resize(out.uncertainty, (out_h, out_w)) / 2.0 if out.uncertainty is not None else None
    return Restoration(image=out.transformed.clamp(0.0, 1.0), kernel=kernel_out, uncertainty=uncertainty, task=task,
                       blind=blind and learnable, seconds=out.seconds, nfe=out.nfe, loss_history=out.loss_history,
                       grad_mode=out.grad_mode, delta_t=out.delta_t, iters_run=out.iters_run, solver_result=out)
