"""High-level entry points: :func:`reconstruct` (sparse-view CT) and :func:`restore` (photographs).

``reconstruct`` validates the sinogram, geometry and settings (:mod:`ctbird.config`), builds the one projector
and dispatches to the method's function in :mod:`ctbird.methods`. ``restore`` builds the photograph degradation
and runs BIRD with the task's settings. Both return plain result objects that record the settings used. See
``docs/method.md`` for the algorithm.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import RESTORE_SETUP, RESTORE_TASKS, BirdConfig, RefineConfig, Settings
from .errors import ConfigError, InputError
from .limits import check_run_fits, check_sizes, estimate_run, validate_device
from .methods import REGISTRY, CTProblem, Reconstruction, get_method, resize
from .priors import DiffusionPrior, load_prior
from .solvers.bird import BIRD, BirdResult

#: The CT methods of :func:`reconstruct` (:data:`ctbird.methods.REGISTRY`).
CT_METHODS = tuple(REGISTRY)
#: Reference kernel size at 256 x 256 (BIRD's blind deblurring); scaled with the image for other sizes.
REFERENCE_KERNEL_SIZE, REFERENCE_SIZE = 41, 256


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
    config : BirdConfig
        The settings BIRD ran with.
    refine : RefineConfig or None
        The DDS refinement that ran after BIRD (``None``: off; ``.image`` is then BIRD's).
    noise_sigma : list of float
        Estimated noise std of each observation on [0, 1] (:func:`ctbird.restoration_baselines.estimate_noise_sigma`).
    search_noise_floor : float
        The noise floor BIRD's search ran with, std on [0, 1] at the image's grid (0: none; see :func:`restore`).
    search_misfit : list of float or None
        Per item, the RMS of ``M(x) - y`` on [0, 1] for BIRD's image ``x`` and the operator ``M`` it estimated
        (``None`` without the search).
    warm_start : bool
        Whether BIRD's search started at the DDIM inversion of a classical estimate.
    initial_width : list of float or None
        Per item, the width (px) where the blind Gaussian search started (``None`` for other operators).
    padding : str or None
        The deblurring operator's border model (``None`` for the other tasks).
    solver_result : BirdResult or None
        The raw BIRD output (prior-size ``x0`` in [-1, 1], latent, operator state...); ``transformed`` is BIRD's
        image before the refinement. ``None`` when the search was skipped because nothing of it would be kept (the
        refinement starts from the classical estimate and no operator parameter is estimated); ``iters_run`` is 0.
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
    config: BirdConfig | None = None
    refine: RefineConfig | None = None
    noise_sigma: list[float] | None = None
    search_noise_floor: float = 0.0
    search_misfit: list[float] | None = None
    warm_start: bool = False
    initial_width: list[float] | None = None
    padding: str | None = None


# ---------------------------------------------------------------------- helpers
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` checked.

    One rule for the API and the CLI (:func:`ctbird.limits.validate_device`): any other device
    (``"mps"``, ``"meta"``, ``"tpu"``...), CUDA without a GPU or a CUDA index that does not exist raises
    :class:`ConfigError`.
    """
    return validate_device(device)


def _check_run_fits(geometry, image_size: int, *, method: str, batch: int, backend: str, device: torch.device,
                    prior_size: int | None = None) -> None:
    """Refuse sizes beyond ctbird's caps and runs that cannot fit in memory, before any allocation.

    ``geometry`` may still be malformed (the projector reports that); only its sizes are read here.
    """
    views = getattr(geometry, "views", None)
    detector_count = getattr(geometry, "detector_count", None)
    if detector_count is None or isinstance(views, bool) or not isinstance(views, int):
        return
    estimate = estimate_run(views=views, detectors=int(detector_count(image_size)), image_size=image_size,
                            method=method, batch=batch, backend=backend, prior_size=prior_size)
    check_run_fits(estimate, device=device)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_float(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {value!r}.")
    return float(value)


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
                prior: DiffusionPrior | str | os.PathLike | None = None, method: str = "bird",
                config: Settings | None = None, seed: int | Sequence[int] = 0, device: str | torch.device = "cpu",
                callback: Callable[[dict], None] | None = None, radon_backend: str = "matrix",
                calibrate: str | tuple[str, ...] | None = None, **settings: Any) -> Reconstruction:
    """Reconstruct CT slices from a (sparse-view) sinogram.

    Units
    -----
    The sinogram holds **line integrals of the linear attenuation coefficient** ``mu`` (1/mm) along each ray,
    with ray lengths in mm, i.e. ``-log(I / I0)``: ``sinogram = Radon(mu) * pixel_spacing_mm`` where ``Radon``
    is :class:`operators.radon.Radon` (pixel length units). The result is in **HU**
    (:func:`ctbird.units.mu_to_hu`; water ``mu = MU_WATER = 0.0192 / mm``). :func:`ctbird.simulate.simulate` makes
    such a sinogram from an HU image.

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
        Diffusion prior for ``bird``/``bird-raw``/``dps``/``dds``; ``None`` = the shipped default
        (:func:`ctbird.priors.default_prior_path`). A 1-channel prior trained on
        :func:`ctbird.units.hu_to_unit` images. If its size differs from ``image_size``, ``x0`` is resampled
        bilinearly to ``N x N`` (inside the measurement model, so gradients flow through it).
    method : {"bird", "bird-raw", "fbp", "sirt", "tv", "dps", "dds"}
        ``bird`` is BIRD followed by the DDS refinement of its image (:mod:`ctbird.solvers.dds`); ``bird-raw`` is
        BIRD's decode alone. Each is one function of :mod:`ctbird.methods`.
    config : Settings or None
        The method's settings (:mod:`ctbird.config`): :class:`~ctbird.config.BirdConfig` for ``bird`` and
        ``bird-raw``, :class:`~ctbird.config.DDSConfig`, :class:`~ctbird.config.DPSConfig`,
        :class:`~ctbird.config.FBPConfig`, :class:`~ctbird.config.SIRTConfig`, :class:`~ctbird.config.TVConfig`;
        ``None`` = its defaults (e.g. ``BirdConfig.preset("cpu-fast")`` for a quick CPU run).
    **settings
        Single settings of that class overriding ``config`` (``iters=50, delta_t=333, n_samples=4,
        data_filter=None...``). ``None`` means "not given" unless ``None`` is one of the setting's values
        (``data_filter``, ``early_stopping``, TV's ``lam``). A name the method does not have, given a value, raises
        :class:`~ctbird.errors.ConfigError` listing the valid ones.
    seed : int or sequence of int
        Seed of the initial noise (and DPS noise). A sequence gives one seed per batch item (``B`` of them): item
        ``b`` then starts from the noise it would get alone with ``seed=seed[b]``, whatever else is in the batch
        (:func:`ctbird.reconstruct_volume` seeds slice ``i`` with ``seed + i`` this way).
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    callback : callable or None
        ``callback(dict(iteration, iters, loss, ...))`` after each BIRD/DPS iteration.
    radon_backend : {"matrix", "astra", "torch"}
        Projector backend of :class:`operators.radon.Radon`.
    calibrate : None, ``("center",)``, ``("center", "angles")`` (or ``"center,angles"``)
        Estimate the geometry's errors first (:func:`ctbird.solvers.calibrate.calibrate` without a prior: the
        rotation-centre consistency search, then per-view angle offsets by projection matching), then run
        ``method`` with the calibrated geometry on a projector rebuilt for it. One sinogram (``B = 1``) at a time.

    Returns
    -------
    Reconstruction
        ``.image`` in HU ``[B, 1, N, N]`` float32, plus the run record (``.config``: the settings used;
        ``.geometry``: the geometry used; ``.calibration``: the estimates, when asked; ``.seconds`` includes the
        calibration).
    """
    from operators.radon import Radon

    from .solvers.calibrate import parse_estimate

    entry = get_method(method)
    config = entry.configure(config, **settings)
    estimate = parse_estimate(calibrate)
    image_size = _check_int("image_size", image_size, 2)
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        seed = tuple(_check_int("seed", s, 0) for s in seed)
    else:
        _check_int("seed", seed, 0)
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else (getattr(geometry, "pixel_spacing", None) or 1.0)
    if isinstance(spacing, bool) or not (isinstance(spacing, (int, float)) and math.isfinite(spacing) and spacing > 0):
        raise ConfigError(f"pixel_spacing_mm must be a positive number (mm), got {spacing!r}.")
    dev = resolve_device(device)
    batch = int(sinogram.shape[0]) if getattr(sinogram, "ndim", 0) == 4 else 1
    check_sizes(image_size=image_size, batch=max(batch, 1))
    _check_run_fits(geometry, image_size, method=method, batch=max(batch, 1), backend=radon_backend, device=dev)
    radon = Radon(geometry, image_size, backend=radon_backend, channels=1, device=dev)
    y = _ct_sinogram(sinogram, radon.out_shape).to(dev)
    if isinstance(seed, tuple) and len(seed) != y.shape[0]:
        raise ConfigError(f"seed holds {len(seed)} seeds for a batch of {y.shape[0]} sinograms; pass one per item "
                          "or a single int.")
    calibration = None
    if estimate is not None:
        calibration = _calibrate(y, geometry, radon, image_size, estimate)
        geometry = calibration.geometry
        radon = Radon(geometry, image_size, backend=radon_backend, channels=1, device=dev)
    model = None
    if entry.needs_prior:
        model = _prior_on(prior, dev)
        if model.channels != 1:
            raise ConfigError(f"CT needs a 1-channel prior, but this prior has {model.channels} channels "
                              "(a photograph prior?). Pass a CT prior trained on HU slices.")
    problem = CTProblem(sinogram=y, radon=radon, geometry=geometry, image_size=image_size,
                        pixel_spacing_mm=float(spacing), prior=model, seed=seed, callback=callback)
    start = time.perf_counter()
    result = entry.run(problem, config)
    seconds = time.perf_counter() - start + (calibration.seconds if calibration is not None else 0.0)
    return replace(result, seconds=seconds, geometry=geometry, calibration=calibration)


def _calibrate(y: torch.Tensor, geometry, radon, image_size: int, estimate: tuple[str, ...]):
    """The geometry estimates of one sinogram ``y`` ``[1, 1, views, detectors]`` (``radon``: the given geometry's)."""
    from .solvers.calibrate import calibrate

    if y.shape[0] != 1:
        raise ConfigError(f"calibrate estimates the geometry of one sinogram; got a batch of {y.shape[0]}. "
                          "Reconstruct one slice at a time, or calibrate one and pass its geometry to all.")
    nominal_radon = radon if not geometry.is_calibrated else None  # the centre search scores on a nominal projector
    return calibrate(y, geometry, image_size, estimate=estimate, radon=nominal_radon)


# ---------------------------------------------------------------------- photographs
def default_kernel_size(size: int) -> int:
    """The blur-kernel side :func:`restore` estimates on an image of side ``size`` when none is given: the
    reference's 41 px at 256 px, scaled with the image, odd and at least 3."""
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
            blind: bool = True, sr_factor: int = 8, kernel_size: int | None = None,
            kernel: torch.Tensor | float | None = None, mask: torch.Tensor | None = None,
            kernel_model: str | None = None, padding: str | None = None, warm_start: bool | None = None,
            search_noise_floor: float | None = None, width_start_fraction: float | None = None,
            config: BirdConfig | None = None,
            refine: RefineConfig | bool | None = None, seed: int = 0,
            device: str | torch.device = "cpu", callback: Callable[[dict], None] | None = None, **settings: Any) -> Restoration:
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
    sr_factor : int
        Super-resolution factor.
    kernel_size : int or None
        Odd blind-kernel side; default 41 at 256 px, scaled with the image size (at least 3).
    kernel : Tensor ``[k, k]``, float or None
        Known blur kernel (non-blind deblurring), or a Gaussian sigma in pixels.
    mask : Tensor ``[H, W]`` or None
        Observed-pixel mask (required for ``inpaint``).
    kernel_model : {"gaussian", "mlp", "logits"} or None
        Blind deblurring kernel: ``"gaussian"`` a Gaussian learnt through its log-sigma (starting at
        ``INITIAL_SIGMA_PX``), ``"mlp"`` BIRD's kernel MLP, ``"logits"`` a free kernel ``softmax(logits)`` starting
        uniform. ``None``: the task's, :data:`ctbird.config.RESTORE_SETUP`.
    padding : {"reflect", "symmetric", "zeros", "circular"} or None
        What the deblurring operator (blind or known kernel) assumes beyond the image's border
        (:mod:`operators._conv`). ``None``: the task's, :data:`ctbird.config.RESTORE_SETUP` (``"reflect"``).
    warm_start : bool or None
        Start ``x_T`` at the DDIM inversion (:func:`ddim_invert`) of a classical estimate (the observation; bicubic
        upsampling for SR) instead of random noise; costs one extra chain. ``None``: the task's,
        :data:`ctbird.config.RESTORE_SETUP`.
    search_noise_floor : float or None
        Noise std (on [0, 1], at the prior's grid; scaled by ``sqrt(H W) / prior size`` on the image's) below which
        BIRD's search sees the observation with seeded Gaussian noise added up to it (the refinement and the scores
        keep the observation as it is); ``0`` turns it off. ``None``: the task's, :data:`ctbird.config.RESTORE_SETUP`.
    width_start_fraction : float or None
        Blind Gaussian deblurring: each item's width starts at this fraction of the observation's classical width
        estimate (:func:`ctbird.restoration_baselines.estimate_gaussian_sigma`), never below ``INITIAL_SIGMA_PX``;
        ``0`` starts every item at ``INITIAL_SIGMA_PX``. ``None``: the task's, :data:`ctbird.config.RESTORE_SETUP`,
        on images larger than the prior's grid, and ``0`` on the others.
    config : BirdConfig or None
        BIRD's settings; ``None`` = the task's, ``BirdConfig.for_task(task)``. ``data_filter`` must be ``None``.
    refine : RefineConfig, bool or None
        The DDS refinement after BIRD (:class:`~ctbird.config.RefineConfig`: BIRD's ``x0`` renoised to ``t0`` and
        sampled back with the estimated operator frozen and CG data-consistency steps). ``None`` or ``True``: the
        task's, ``RefineConfig.for_task(task)``; ``False`` (or ``t0=0``): BIRD's image as it is.
    **settings
        Single BIRD settings overriding ``config`` (``iters=50, n_samples=4...``; ``None`` keeps a setting).
    seed, device, callback
        Seed of the initial noise, ``"cpu"``/``"cuda"``/``"auto"``, per-iteration callback.

    Returns
    -------
    Restoration
        ``.image`` ``[B, C, H, W]`` in [0, 1] with the input's spatial size (``sr``: ``H * sr_factor``);
        ``.kernel`` for deblurring. The prior works at its own size; ``x0`` is resampled bilinearly to the
        working size inside the measurement model when the sizes differ. Denoising or inpainting an image larger
        than the prior puts back the observed detail its grid cannot hold, where it stands above the noise
        (:func:`ctbird.restoration_baselines.residual_wiener`; inpainting: on the observed pixels).
    """
    if task not in RESTORE_TASKS:
        raise ConfigError(f"task must be one of {RESTORE_TASKS}, got {task!r}.")
    if config is None:
        config = BirdConfig.for_task(task)
    elif not isinstance(config, BirdConfig):
        raise ConfigError(f"restore() takes a BirdConfig, got {type(config).__name__}.")
    config = config.with_overrides(**settings)
    if config.data_filter is not None:
        raise ConfigError("data_filter weighs CT sinograms; restore() needs data_filter=None.")
    refine = _refine_settings(task, refine)
    if width_start_fraction is not None:
        _check_float("width_start_fraction", width_start_fraction, 0.0)
    if prior is None:
        raise ConfigError("restore() needs prior=: a diffusers folder or hub id holding a photograph UNet2DModel.")
    y = _photo(image)
    dev = resolve_device(device)
    batch, channels, height, width = y.shape
    side = max(height, width) * (_check_int("sr_factor", sr_factor, 2) if task == "sr" else 1)
    check_sizes(image_size=side, batch=batch)
    model = _prior_on(prior, dev)
    check_run_fits(estimate_run(views=1, detectors=1, image_size=side, method="bird", batch=batch, backend="none",
                                prior_size=model.image_size), device=dev)
    if channels != model.channels:
        raise InputError(f"The image has {channels} channels but the prior expects {model.channels}; convert it "
                         "(e.g. grayscale -> repeat to RGB) or use a matching prior.")
    out_h, out_w = height, width
    if task == "sr":
        _check_int("sr_factor", sr_factor, 2)
        out_h, out_w = height * sr_factor, width * sr_factor
    operator = restoration_operator(task, (channels, out_h, out_w), blind=blind, sr_factor=sr_factor,
                                     kernel_size=kernel_size, kernel=kernel, mask=mask, kernel_model=kernel_model,
                                     padding=padding)
    learnable = any(p.requires_grad for p in operator.parameters())
    if not learnable:
        config = config.replace(lr_operator=0.0)

    def measurement_input(x0: torch.Tensor) -> torch.Tensor:
        return resize((x0 + 1.0) / 2.0, (out_h, out_w))

    searched = bird_search_is_kept(refine, operator)
    if warm_start is None:
        warm_start = RESTORE_SETUP[task].get("warm_start", False)
    if search_noise_floor is None:
        search_noise_floor = RESTORE_SETUP[task].get("search_noise_floor", 0.0)
    noise_sigma = _noise_sigma(y)
    floor = _check_float("search_noise_floor", search_noise_floor, 0.0) * math.sqrt(height * width) / model.image_size
    y_search = _raise_noise(y, noise_sigma, floor, seed) if searched else y
    if width_start_fraction is None:
        larger = max(out_h, out_w) > model.image_size
        width_start_fraction = RESTORE_SETUP[task].get("width_start_fraction", 0.0) if larger else 0.0
    initial_width = _initial_widths(operator, y, width_start_fraction) if learnable else None
    estimate = None
    if (warm_start and searched and y_search is y) or (refine is not None and refine.start == "estimate"):
        estimate = classical_estimate(y, task, model.shape[1:]).to(dev)  # warm-starts too unless the search is noisier
    fixed_kernel = getattr(operator, "kernel", None)  # the result's kernel when BIRD does not estimate one
    kernel = None if fixed_kernel is None else fixed_kernel.detach().expand(batch, *fixed_kernel.shape[-2:])
    out, image, nfe, seconds, states, misfit = None, None, 0, 0.0, [{} for _ in range(batch)], None
    if searched:
        bird = BIRD(model, operator, config, input_transform=measurement_input, callback=callback)
        init_latent, warm_nfe = None, 0
        if warm_start:
            nfe0 = model.nfe
            warm = estimate if y_search is y else classical_estimate(y_search, task, model.shape[1:]).to(dev)
            init_latent = ddim_invert(model, warm, config.delta_t).repeat_interleave(config.n_samples, dim=0)
            warm_nfe = model.nfe - nfe0
        out = bird.run(y_search.to(dev), generator=_generator(seed), init_latent=init_latent,
                       init_operator_state=None if initial_width is None else
                       [{"log_sigma": torch.tensor([math.log(w)])} for w in initial_width])
        out.nfe += warm_nfe
        image, nfe, seconds, kernel, states = out.transformed, out.nfe, out.seconds, out.kernel, out.operator_state
        misfit = search_misfit(operator, states, image, y.to(dev))
    if refine is not None:
        nfe0, start = model.nfe, time.perf_counter()
        start_x0 = out.image if refine.start == "bird" else estimate
        refined, refitted = refine_restoration(model, start_x0, y.to(dev), operator, states, refine,
                                               transform=measurement_input,
                                               noise_sigma=anchor_noise(refine, noise_sigma, misfit),
                                               generator=_generator(seed))
        kernel = refitted if refitted is not None else kernel
        image = measurement_input(refined)
        if task in ("denoise", "inpaint") and max(out_h, out_w) > model.image_size:
            image = _restore_fine_detail(image, y.to(image.device), noise_sigma, getattr(operator, "mask", None))
        nfe, seconds = nfe + model.nfe - nfe0, seconds + time.perf_counter() - start
    uncertainty = resize(out.uncertainty, (out_h, out_w)) / 2.0 if out is not None and out.uncertainty is not None else None
    return Restoration(image=image.clamp(0.0, 1.0), kernel=kernel, uncertainty=uncertainty, task=task,
                       blind=blind and learnable, seconds=seconds, nfe=nfe,
                       loss_history=out.loss_history if out is not None else [],
                       grad_mode=out.grad_mode if out is not None else config.grad_mode,
                       delta_t=out.delta_t if out is not None else config.delta_t,
                       iters_run=out.iters_run if out is not None else 0, solver_result=out,
                       config=config, refine=refine, noise_sigma=noise_sigma,
                       search_noise_floor=floor if searched else 0.0, search_misfit=misfit,
                       warm_start=bool(warm_start and searched), initial_width=initial_width if searched else None,
                       padding=getattr(operator, "padding", None))


def search_misfit(operator, states: list[dict], images: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per item, the RMS of ``operator(images[b]) - y[b]`` (``[B, C, H, W]`` on [0, 1]) with ``operator`` holding
    ``states[b]`` (BIRD's estimate)."""
    import copy

    frozen = copy.deepcopy(operator).to(images.device)
    misfits = []
    with torch.no_grad():
        for image, observed, state in zip(images, y, states):
            if state:
                frozen.load_state_dict(state)
            misfits.append(float((frozen(image[None]) - observed[None]).square().mean().sqrt()))
    return misfits


def anchor_noise(refine: RefineConfig, noise_sigma: Sequence[float], misfit: Sequence[float] | None) -> list[float]:
    """The noise level per item of the refinement's anchor: ``noise_sigma``, or with ``refine.anchor_misfit`` at
    least the search's ``misfit`` (:func:`search_misfit`)."""
    if not refine.anchor_misfit or misfit is None:
        return list(noise_sigma)
    return [max(s, m) for s, m in zip(noise_sigma, misfit)]


def bird_search_is_kept(refine: RefineConfig | None, operator) -> bool:
    """Whether :func:`restore` runs BIRD's search: not when nothing of it would be kept, i.e. the refinement starts
    from the classical estimate and ``operator`` has no parameter to estimate (denoising)."""
    return refine is None or refine.start == "bird" or any(p.requires_grad for p in operator.parameters())


def classical_estimate(y: torch.Tensor, task: str, size: tuple[int, int]) -> torch.Tensor:
    """The classical estimate ``[B, C, *size]`` in [-1, 1] that warm starts (and may start the refinement) from: the
    observation ``y`` ``[B, C, H, W]`` in [0, 1] resampled to ``size``, bicubic upsampling for ``task="sr"``."""
    up = resize(y, size) if task != "sr" else F.interpolate(y, size=size, mode="bicubic")
    return up.clamp(0.0, 1.0) * 2.0 - 1.0


def _refine_settings(task: str, refine: RefineConfig | bool | None) -> RefineConfig | None:
    if refine is None or refine is True:
        refine = RefineConfig.for_task(task)
    elif refine is False:
        return None
    elif not isinstance(refine, RefineConfig):
        raise ConfigError(f"refine must be a RefineConfig, True, False or None, got {type(refine).__name__}.")
    return refine if refine.enabled else None


#: FISTA steps of a free kernel's refit to a restored image, from a flat start: early stopping is the regularizer
#: (a restored image keeps some blur, which longer fits push into a kernel too compact; CT training slices
#: 700, 1320, 100, 900: docs/results/tuning/refine_cpu-train256-motion-refit.md).
KERNEL_REFIT_ITERS = 60


def _fit_kernels(operator, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per item, the blur kernel ``[k, k]`` that best maps ``images`` to ``y`` (``[B, C, H, W]`` in [0, 1]) in the blind
    ``operator``'s family: a Gaussian's width (:func:`_fit_gaussian_width`) for an isotropic ``GaussianBlur``, else a
    free kernel of the operator's side (:func:`ctbird.restoration_baselines.fit_blur_kernel` from a flat start,
    stopped after :data:`KERNEL_REFIT_ITERS` steps; channel means). ``[B, k, k]``."""
    from operators.blur import GaussianBlur

    from .restoration_baselines import fit_blur_kernel

    fitted = []
    for x, obs in zip(images, y):
        if isinstance(operator, GaussianBlur) and not operator.anisotropic:
            fitted.append(_fit_gaussian_width(operator, x[None], obs[None]))
        else:
            fitted.append(torch.from_numpy(fit_blur_kernel(
                x.mean(0).detach().cpu().numpy(), obs.mean(0).detach().cpu().numpy(), operator.kernel_size,
                iters=KERNEL_REFIT_ITERS)).to(torch.float32))
    return torch.stack(fitted)


def _fit_gaussian_width(operator, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The kernel ``[k, k]`` of the width minimizing ``||G_sigma image - y||^2`` (bounded search on ``log sigma``
    between 0.2 px and half the kernel side), ``G`` a copy of the isotropic ``GaussianBlur`` ``operator``."""
    import copy

    from scipy.optimize import minimize_scalar

    blur = copy.deepcopy(operator).to(image.device)

    def misfit(log_sigma: float) -> float:
        with torch.no_grad():
            blur.log_sigma.fill_(log_sigma)
            return float((blur(image) - y.to(image.device)).square().mean())

    best = minimize_scalar(misfit, bounds=(math.log(0.2), math.log(blur.kernel_size / 2)), method="bounded",
                           options={"xatol": 1e-3})
    with torch.no_grad():
        blur.log_sigma.fill_(float(best.x))
        return blur.kernel.detach().cpu().to(torch.float32)


def _restore_fine_detail(image: torch.Tensor, y: torch.Tensor, noise_sigma: Sequence[float],
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """A restored ``image`` ``[B, C, H, W]`` on [0, 1] (the prior's estimate, resampled from its coarser grid) with the
    detail of the observation ``y`` that stands above its noise (``noise_sigma`` per item) put back, on the observed
    pixels of ``mask`` (``[H, W]``, 1 = observed; all when None): :func:`ctbird.restoration_baselines.residual_wiener`
    per channel."""
    from .restoration_baselines import residual_wiener

    est, obs = image.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    masks = [None] * est.shape[1]
    if mask is not None:  # [H, W], [1, H, W] or [C, H, W]
        observed = mask.detach().cpu().double().numpy().reshape(-1, *est.shape[-2:])
        masks = [observed[c % observed.shape[0]] for c in range(est.shape[1])]
    out = np.stack([np.stack([residual_wiener(e, o, sigma, m) for e, o, m in zip(item, observed_item, masks)])
                    for item, observed_item, sigma in zip(est, obs, noise_sigma)])
    return torch.from_numpy(out).to(image)


def _raise_noise(y: torch.Tensor, noise_sigma: Sequence[float], floor: float, seed: int) -> torch.Tensor:
    """``y`` ``[B, C, H, W]`` with seeded Gaussian noise of std ``sqrt(floor^2 - s^2)`` added to each item whose
    estimated noise std ``s`` (``noise_sigma``) is below ``floor``; ``y`` itself when none is."""
    extra = torch.tensor([math.sqrt(max(floor ** 2 - s ** 2, 0.0)) for s in noise_sigma], dtype=y.dtype)
    if not bool((extra > 0).any()):
        return y
    generator = torch.Generator().manual_seed(_check_int("seed", seed, 0) + 1)
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    return y + (extra.view(-1, 1, 1, 1) * noise).to(y.device)


def _noise_sigma(y: torch.Tensor) -> list[float]:
    from .restoration_baselines import estimate_noise_sigma

    return [estimate_noise_sigma(item) for item in y.detach().cpu().numpy()]


@torch.no_grad()
def refine_restoration(prior: DiffusionPrior, x0: torch.Tensor, y: torch.Tensor, operator, operator_state: list[dict],
                       refine: RefineConfig, *, transform: Callable[[torch.Tensor], torch.Tensor],
                       noise_sigma: Sequence[float], generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The DDS refinement of :class:`~ctbird.config.RefineConfig` on restorations ``x0`` ``[B, C, h, w]`` in [-1, 1].

    Item ``b`` is renoised to ``refine.t0`` (``refine.match_noise``: counting the noise it carries) and sampled back by :func:`ctbird.solvers.dds.dds_chain` with the
    measurement model ``operator(transform(x0))``, the operator holding ``operator_state[b]`` (BIRD's estimate,
    frozen), against ``y[b]`` (``refine.samples`` renoisings in one batch, averaged; all items in one chain); the
    anchor weight is ``refine.anchor * noise_sigma[b]**2 * ||A||^2`` (``A``: the model's linear part). With
    ``refine.kernel_refits`` and a learnable blur, each round fits the kernel to the refined image (a Gaussian's width,
    or a free kernel: :func:`ctbird.restoration_baselines.fit_blur_kernel`) and refines ``x0`` again with it, renoised
    with the same noise (``generator``'s state is restored). Returns the refined ``x0`` ``[B, C, h, w]`` and the
    refitted kernels ``[B, k, k]`` (None without refits).
    """
    import copy

    frozen = copy.deepcopy(operator).to(x0.device)
    for p in frozen.parameters():
        p.requires_grad_(False)
    states = list(operator_state) if operator_state else [{}] * x0.shape[0]
    state = generator.get_state() if generator is not None else None
    refined = _dds_refine(prior, x0, y, frozen, states, refine, transform, noise_sigma, generator)
    refit = (refine.kernel_refits > 0 and hasattr(operator, "kernel")
             and any(p.requires_grad for p in operator.parameters()))
    if not refit:
        return refined, None
    from operators.blur import Blur

    kernels = []
    for item_state in states:
        if item_state:
            frozen.load_state_dict(item_state)
        kernels.append(frozen.kernel.detach().reshape(frozen.kernel.shape[-2:]).cpu())
    kernels = torch.stack(kernels)
    fixed = Blur(kernels[0], image_shape=tuple(operator.in_shape), padding=operator.padding).to(x0.device)
    for _ in range(refine.kernel_refits):
        kernels = _fit_kernels(frozen, transform(refined), y)
        if state is not None:
            generator.set_state(state)
        refined = _dds_refine(prior, x0, y, fixed, [{"fixed_kernel": k.to(x0.device)} for k in kernels], refine,
                              transform, noise_sigma, generator)
    return refined, kernels


def _dds_refine(prior, x0, y, frozen, states, refine, transform, noise_sigma, generator) -> torch.Tensor:
    """One renoise-and-sample pass of :func:`refine_restoration`: every item's ``refine.samples`` renoisings in one
    chain (item ``b``'s measurement model ``frozen`` loaded with ``states[b]``), averaged per item."""
    import copy

    from .solvers.dds import refine_by_dds

    batch, k = x0.shape[0], refine.samples
    ops = []
    for state in states:
        op = copy.deepcopy(frozen)
        if state:
            op.load_state_dict(state)
        ops.append(op)

    def measure(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([op(transform(part)) for op, part in zip(ops, v.split(k))], dim=0)

    t_start, start_noise = refine.t0, 0.0
    if refine.match_noise:
        levels = [2.0 * sigma for sigma in _noise_sigma((x0 + 1.0) / 2.0)]  # [0, 1] -> the prior's [-1, 1]
        t_start = max(t_start, *(prior.schedule.timestep_of_noise(refine.noise_scale * level) for level in levels))
        start_noise = torch.tensor(levels, dtype=x0.dtype, device=x0.device).repeat_interleave(k)
    weight: float | torch.Tensor = 0.0
    if refine.anchor > 0:  # per sample, broadcast in the CG normal operator
        weight = torch.tensor([refine.anchor * sigma ** 2 * _squared_norm(lambda v, op=op: op(transform(v)), x0[:1])
                               for op, sigma in zip(ops, noise_sigma)], dtype=x0.dtype, device=x0.device)
        weight = weight.repeat_interleave(k).view(-1, *([1] * (x0.dim() - 1)))
    refined = refine_by_dds(prior, x0.repeat_interleave(k, dim=0), t_start=t_start, delta_t=refine.step,
                            measure=measure, y=y.repeat_interleave(k, dim=0), cg_iters=refine.cg_iters, eta=0.0,
                            generator=generator, weight=weight, start_noise=start_noise)
    return refined.view(batch, k, *x0.shape[1:]).mean(dim=1)


def _squared_norm(measure: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, iters: int = 10) -> float:
    """``||A||^2`` of the linear part ``A`` of the affine ``measure`` by power iteration on ``A^T A`` (seeded)."""
    offset = measure(torch.zeros_like(like))
    v = torch.randn(like.shape, generator=torch.Generator().manual_seed(0)).to(like)
    value = 0.0
    for _ in range(iters):
        v = v / v.norm()
        with torch.enable_grad():
            d = v.clone().requires_grad_(True)
            out = measure(d) - offset
            v, = torch.autograd.grad(out, d, grad_outputs=out)
        value = float(v.norm())
    return value


@torch.no_grad()
def ddim_invert(prior: DiffusionPrior, x0: torch.Tensor, delta_t: int) -> torch.Tensor:
    """``x_T`` whose DDIM decode (step ``delta_t``) approximately returns ``x0`` ``[B, C, H, W]`` in [-1, 1].

    The eta=0 DDIM step run forward: at each ``(t, t_prev)`` of :meth:`DiffusionPrior.timestep_pairs`, from the last
    to the first, ``eps`` is the UNet's noise estimate at ``x_{t_prev}`` and timestep ``t``, and
    ``x_t = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps`` with ``x0_hat = (x_{t_prev} - sqrt(1 - a_prev) eps) / sqrt(a_prev)``.
    """
    schedule = prior.schedule
    x = x0
    for t, t_prev in reversed(prior.timestep_pairs(delta_t)):
        a_t, a_prev = schedule.alpha(t), schedule.alpha(t_prev)
        out = prior._model_output(x, t)
        prior.nfe += 1
        if prior.prediction_type == "epsilon":
            eps = out
        elif prior.prediction_type == "v_prediction":
            eps = math.sqrt(a_t) * out + math.sqrt(1.0 - a_t) * x
        else:
            eps = (x - math.sqrt(a_t) * out) / math.sqrt(1.0 - a_t)
        start = ((x - math.sqrt(1.0 - a_prev) * eps) / math.sqrt(a_prev)).clamp(-1.0, 1.0) if t_prev >= 0 else x
        x = math.sqrt(a_t) * start + math.sqrt(1.0 - a_t) * eps
    return x


#: Smallest starting sigma (pixels) of ``kernel_model="gaussian"`` (:func:`restore`'s ``width_start_fraction``).
INITIAL_SIGMA_PX = 1.0


def _initial_widths(operator, y: torch.Tensor, fraction: float) -> list[float] | None:
    """Per item of ``y`` ``[B, C, H, W]``, where a learnable isotropic ``GaussianBlur`` ``operator``'s width starts:
    ``max(INITIAL_SIGMA_PX, fraction * estimate_gaussian_sigma(channel mean))``; ``None`` for any other operator."""
    from operators.blur import GaussianBlur

    from .restoration_baselines import estimate_gaussian_sigma

    if not isinstance(operator, GaussianBlur) or operator.anisotropic:
        return None
    if fraction == 0:
        return [INITIAL_SIGMA_PX] * y.shape[0]
    return [max(INITIAL_SIGMA_PX, fraction * estimate_gaussian_sigma(item.mean(0).detach().cpu().double().numpy()))
            for item in y]


def restoration_operator(task: str, shape: tuple[int, int, int], *, blind: bool, sr_factor: int,
                          kernel_size: int | None, kernel: torch.Tensor | float | None, mask: torch.Tensor | None,
                          kernel_model: str | None = None, padding: str | None = None):
    """The degradation of ``task`` on images ``shape = (C, H, W)`` (learnable parameters when ``blind``);
    ``kernel_model`` and the blurs' ``padding``: :func:`restore`'s."""
    from operators import Identity
    from operators.blur import Blur, GaussianBlur
    from operators.mask import Mask
    from operators.resample import Downsample

    side = min(shape[1:])
    if task in ("gaussian-deblur", "motion-deblur"):
        padding = RESTORE_SETUP[task]["padding"] if padding is None else padding
        if blind:
            k = default_kernel_size(side) if kernel_size is None else _check_int("kernel_size", kernel_size, 1)
            if k % 2 == 0 or k > side:
                raise ConfigError(f"kernel_size must be odd and at most the image side {side}, got {k}.")
            model = RESTORE_SETUP[task]["kernel_model"] if kernel_model is None else kernel_model
            if model == "gaussian":
                return GaussianBlur(INITIAL_SIGMA_PX, image_shape=shape, kernel_size=k, learnable=True, padding=padding)
            if model not in ("mlp", "logits"):
                raise ConfigError(f"kernel_model must be gaussian, mlp or logits, got {model!r}.")
            return Blur(kernel_size=k, image_shape=shape, learnable=True, parametrization=model, padding=padding)
        if isinstance(kernel, torch.Tensor):
            return Blur(kernel.to(torch.float32), image_shape=shape, padding=padding)
        if isinstance(kernel, (int, float)) and not isinstance(kernel, bool):
            return GaussianBlur(float(kernel), image_shape=shape, padding=padding)
        raise ConfigError("Non-blind deblurring needs kernel=: a [k, k] tensor or a Gaussian sigma in pixels.")
    if task == "sr":
        return Downsample(sr_factor, shape, filter="box", learnable=blind)
    if task == "denoise":
        return Identity(shape)
    if mask is None:
        raise ConfigError("task='inpaint' needs mask=: an [H, W] tensor with 1 where pixels are observed.")
    return Mask(torch.as_tensor(mask), shape)
