"""Measurement noise models: ``noise(y, generator=None) -> noisy y`` (same shape, dtype, device).

They are plain callables (not operators, no parameters). Randomness comes only from the
``generator`` passed per call (drawn on the generator's device, then moved to ``y``'s), so a
seeded generator gives reproducible noise; without one the global RNG is used.
"""

from __future__ import annotations

import math

import torch

from .errors import GeometryError, ShapeError


def _check_number(value: object, name: str, owner: str, *, positive: bool) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise GeometryError(f"{owner}: {name} must be a finite number {bound}, got {value!r}.")
    return number


def _check_tensor(y: object, owner: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        what = f"dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ShapeError(f"{owner}: expected a floating-point torch.Tensor, got {what}. Convert it with y.float().")
    return y


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _poisson(rate: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else rate.device
    return torch.poisson(rate.detach().to(device), generator=generator).to(rate.device)


class GaussianNoise:
    """Additive white Gaussian noise ``y + sigma * N(0, 1)``.

    Parameters
    ----------
    sigma : float
        Standard deviation (same units as ``y``), ``>= 0``.
    """

    def __init__(self, sigma: float) -> None:
        self.sigma = _check_number(sigma, "sigma", type(self).__name__, positive=False)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _check_tensor(y, type(self).__name__)
        return y + self.sigma * _randn(y, generator)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


class PoissonNoise:
    """Photon-counting noise: ``Poisson(I0 * y) / I0`` (mean ``y``, variance ``y / I0``).

    Parameters
    ----------
    I0 : float
        Photons per unit of ``y`` (higher = less noise), ``> 0``.
    normalize : bool
        If False, return the raw counts ``Poisson(I0 * y)`` instead.

    ``y`` must be non-negative (an expected intensity).
    """

    def __init__(self, I0: float, normalize: bool = True) -> None:  # noqa: N803 - standard CT symbol
        self.I0 = _check_number(I0, "I0", type(self).__name__, positive=True)
        self.normalize = normalize

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _check_tensor(y, type(self).__name__)
        if not bool(torch.isfinite(y).all()) or bool((y < 0).any()):
            raise ValueError(f"{type(self).__name__}: y must be finite and non-negative (a mean intensity), "
                             f"got min {float(y.min()):.4g}.")
        counts = _poisson(self.I0 * y, generator)
        return counts / self.I0 if self.normalize else counts

    def __repr__(self) -> str:
        return f"PoissonNoise(I0={self.I0}, normalize={self.normalize})"


class LogPoissonNoise:
    """Low-dose CT noise on a sinogram of line integrals ``y`` (dimensionless, ``mu * length``).

    ``counts ~ Poisson(I0 * exp(-y))``, clamped to ``>= 1`` (no photon-starved infinities), and the
    result is ``-log(counts / I0)``. As ``I0 -> inf`` it tends to ``y``.

    Parameters
    ----------
    I0 : float
        Incident photons per detector cell (e.g. ``1e4`` low dose, ``1e5`` to ``1e6`` standard), ``> 0``.
    """

    def __init__(self, I0: float) -> None:  # noqa: N803 - standard CT symbol
        self.I0 = _check_number(I0, "I0", type(self).__name__, positive=True)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _check_tensor(y, type(self).__name__)
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{type(self).__name__}: the sinogram y must be finite (line integrals).")
        counts = torch.clamp(_poisson(self.I0 * torch.exp(-y), generator), min=1.0)
        return -torch.log(counts / self.I0)

    def __repr__(self) -> str:
        return f"LogPoissonNoise(I0={self.I0})"


class SpeckleGaussianNoise:
    """BIRD's demo noise on ``[0, 1]`` images: a mix of multiplicative (speckle) and additive Gaussian noise.

    ``y_noisy = speckle_weight * (y + y * N(0, speckle_sigma)) + gaussian_weight * (y + N(0, gaussian_sigma))``,
    two independent normal draws; then clipped to ``[0, 1]`` if ``clip``. Defaults are the reference's
    deblurring / SR / inpainting settings (0.8, 0.12, 0.2, 0.05; it clips for inpainting and denoising only);
    its denoising demo uses ``speckle_sigma=0.4, gaussian_sigma=0.15, clip=True``.

    Parameters
    ----------
    speckle_weight, gaussian_weight : float
        Mixing weights, ``>= 0`` (they sum to 1 in the reference so the mean stays ``y``).
    speckle_sigma, gaussian_sigma : float
        Standard deviations, ``>= 0``.
    clip : bool
        Clip the result to ``[0, 1]``.
    """

    def __init__(self, *, speckle_weight: float = 0.8, speckle_sigma: float = 0.12,
                 gaussian_weight: float = 0.2, gaussian_sigma: float = 0.05, clip: bool = False) -> None:
        owner = type(self).__name__
        self.speckle_weight = _check_number(speckle_weight, "speckle_weight", owner, positive=False)
        self.speckle_sigma = _check_number(speckle_sigma, "speckle_sigma", owner, positive=False)
        self.gaussian_weight = _check_number(gaussian_weight, "gaussian_weight", owner, positive=False)
        self.gaussian_sigma = _check_number(gaussian_sigma, "gaussian_sigma", owner, positive=False)
        self.clip = clip

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = _check_tensor(y, type(self).__name__)
        speckle = self.speckle_sigma * _randn(y, generator)
        gaussian = self.gaussian_sigma * _randn(y, generator)
        noisy = self.speckle_weight * (y + y * speckle) + self.gaussian_weight * (y + gaussian)
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def __repr__(self) -> str:
        return (f"SpeckleGaussianNoise(speckle_weight={self.speckle_weight}, speckle_sigma={self.speckle_sigma}, "
                f"gaussian_weight={self.gaussian_weight}, gaussian_sigma={self.gaussian_sigma}, clip={self.clip})")
