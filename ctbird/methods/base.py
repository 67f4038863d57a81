"""What every CT method receives (:class:`CTProblem`) and returns (:class:`Reconstruction`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..units import mu_to_hu, unit_to_hu, unit_to_mu


@dataclass
class Reconstruction:
    """CT reconstruction.

    Attributes
    ----------
    image : Tensor ``[B, 1, N, N]`` float32
        Reconstruction in HU.
    method : str
        ``"bird"``, ``"bird-raw"``, ``"fbp"``, ``"sirt"``, ``"tv"``, ``"dps"`` or ``"dds"``.
    mu : Tensor ``[B, 1, N, N]``
        The same in attenuation per pixel length (``mu * pixel_spacing_mm``, the sinogram's units).
    uncertainty : Tensor ``[B, 1, N, N]`` or None
        Per-pixel std across BIRD restarts in HU (``n_samples > 1``).
    seconds : float
        Wall-clock time of the method (the prior already loaded).
    nfe : int
        UNet evaluations (0 for classical methods).
    loss_history : list of float
        Per-iteration data loss (prior-based methods).
    grad_mode, delta_t : str or None, int or None
        BIRD/DPS/DDS settings (None for classical methods; DDS: ``grad_mode`` None).
    pixel_spacing_mm : float
        Pixel size assumed for the units.
    solver_result : BirdResult or DPSResult or None
        The raw solver output (None for DDS and the classical methods).
    config : ctbird.config.Settings or None
        The settings the method ran with (:meth:`~ctbird.config.Settings.to_dict` for the record).
    info : dict
        Method-specific extras (iterations run, final data loss...).
    geometry : operators.ParallelBeam or operators.FanBeam or None
        The geometry the method reconstructed with (the calibrated one when ``calibrate`` was asked).
    calibration : ctbird.solvers.calibrate.CalibrationResult or None
        The geometry estimates of ``reconstruct(..., calibrate=...)`` (``.summary()`` for the record).
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
    config: Any = None
    info: dict = field(default_factory=dict)
    geometry: Any = None
    calibration: Any = None

    @property
    def hu(self) -> torch.Tensor:
        """Alias of :attr:`image` (HU)."""
        return self.image


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Differentiable bilinear resampling ``[B, C, h, w] -> [B, C, *size]`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


@dataclass(frozen=True)
class CTProblem:
    """One CT reconstruction problem, validated by :func:`ctbird.reconstruct`.

    Attributes
    ----------
    sinogram : Tensor ``[B, 1, views, detectors]`` float32 on the device
        Line integrals of ``mu`` (1/mm) with lengths in mm.
    radon : operators.radon.Radon
        The projector of ``geometry`` on the ``image_size`` grid (pixel units; the one Radon of the run).
    geometry : operators.ParallelBeam or operators.FanBeam
    image_size : int
    pixel_spacing_mm : float
    prior : DiffusionPrior or None
        1-channel CT prior on the device (prior-based methods).
    seed : int or tuple of int
        Seed of the initial noise (and DPS noise), or one seed per batch item; latents are drawn on the CPU, so a seed
        starts alike on every device.
    callback : callable or None
        Per-iteration progress callback of the iterative solvers.
    """

    sinogram: torch.Tensor
    radon: Any
    geometry: Any
    image_size: int
    pixel_spacing_mm: float
    prior: Any = None
    seed: int | tuple[int, ...] = 0
    callback: Callable[[dict], None] | None = None

    def generator(self) -> torch.Generator | list[torch.Generator]:
        """A fresh CPU generator seeded with :attr:`seed`, or one per batch item when :attr:`seed` is a tuple
        (the solvers then draw item ``b``'s noise from ``generator()[b]``)."""
        if isinstance(self.seed, tuple):
            return [torch.Generator().manual_seed(s) for s in self.seed]
        return torch.Generator().manual_seed(self.seed)

    def prior_to_measured(self, x0: torch.Tensor) -> torch.Tensor:
        """Prior scale ``[-1, 1]`` at the prior's size -> attenuation per pixel length on the ``N x N`` grid."""
        return unit_to_mu(resize(x0, (self.image_size, self.image_size))) * self.pixel_spacing_mm

    def prior_to_hu(self, x0: torch.Tensor) -> torch.Tensor:
        """Prior scale ``[-1, 1]`` -> HU on the ``N x N`` grid (float32)."""
        return unit_to_hu(resize(x0, (self.image_size, self.image_size))).to(torch.float32)

    def measurement_norm(self) -> float:
        """``d(mu * px) / d(unit) * ||A||``: the Lipschitz constant of ``x0 -> A(prior_to_measured(x0))`` when the
        prior's size is the grid's (the step-size scale of the prior-based baselines, whatever the pixel spacing and
        geometry)."""
        from ..baselines import operator_norm

        slope = float(unit_to_mu(torch.tensor(1.0)) - unit_to_mu(torch.tensor(0.0))) * self.pixel_spacing_mm
        return slope * operator_norm(self.radon)

    def measured_to_hu(self, mu_pixels: torch.Tensor) -> torch.Tensor:
        """Attenuation per pixel length -> HU."""
        return mu_to_hu(mu_pixels / self.pixel_spacing_mm)

    def classical(self, method: str, mu_pixels: torch.Tensor, config: Any, info: dict) -> Reconstruction:
        """The :class:`Reconstruction` of a classical method from its attenuation per pixel length."""
        mu_pixels = mu_pixels.detach().to(torch.float32)
        return Reconstruction(image=self.measured_to_hu(mu_pixels), method=method, mu=mu_pixels, uncertainty=None,
                              seconds=0.0, nfe=0, loss_history=[], grad_mode=None, delta_t=None,
                              pixel_spacing_mm=self.pixel_spacing_mm, config=config, info=info)
