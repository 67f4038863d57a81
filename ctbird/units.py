"""The one place where CT values change units: HU <-> attenuation <-> the prior's [-1, 1] <-> images' [0, 1].

* HU (Hounsfield units): water 0, air -1000.
* Attenuation ``mu`` in 1/mm: ``mu = MU_WATER * (1 + HU / 1000)`` (air 0).
* Prior scale ``[-1, 1]``: ``PRIOR_HU_WINDOW`` mapped linearly onto ``[-1, 1]``; this is the
  scale the diffusion prior is trained on and the scale BIRD's ``x0`` lives on.
* Image scale ``[0, 1]``: the prior scale halved, what :func:`ctbird.restore` takes and returns (a CT slice restored
  as an image).

All functions accept numpy arrays or torch tensors (any shape) and return the same type.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

#: HU range mapped to [-1, 1] by the prior (the training stack's clip range).
PRIOR_HU_WINDOW: tuple[float, float] = (-1024.0, 3071.0)
#: Linear attenuation coefficient of water, 1/mm (about 70 keV effective energy).
MU_WATER: float = 0.0192
#: HU range used as the data range of every CT metric (PSNR/SSIM).
EVAL_HU_RANGE: tuple[float, float] = (-1000.0, 1000.0)
#: Display windows (lo, hi) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-1350.0, 150.0),
    "soft-tissue": (-160.0, 240.0),
    "bone": (-450.0, 1050.0),
    "brain": (0.0, 80.0),
    "wide": (-1000.0, 1000.0),
}
#: HU value every reader clips to at the bottom (outside-FOV padding is -2048 or -3024).
HU_MIN, HU_MAX = PRIOR_HU_WINDOW


def _span() -> float:
    return PRIOR_HU_WINDOW[1] - PRIOR_HU_WINDOW[0]


def hu_to_unit(hu: Array) -> Array:
    """HU -> prior scale: ``PRIOR_HU_WINDOW`` maps to ``[-1, 1]`` (values outside are not clipped)."""
    return (hu - PRIOR_HU_WINDOW[0]) * (2.0 / _span()) - 1.0


def unit_to_hu(unit: Array) -> Array:
    """Prior scale -> HU (inverse of :func:`hu_to_unit`)."""
    return (unit + 1.0) * (_span() / 2.0) + PRIOR_HU_WINDOW[0]


def hu_to_image(hu: Array) -> Array:
    """HU -> image scale ``[0, 1]`` (``PRIOR_HU_WINDOW`` mapped linearly, values outside it clipped)."""
    image = (hu_to_unit(hu) + 1.0) / 2.0
    return image.clamp(0.0, 1.0) if isinstance(image, torch.Tensor) else np.clip(image, 0.0, 1.0)


def image_to_hu(image: Array) -> Array:
    """Image scale ``[0, 1]`` -> HU (inverse of :func:`hu_to_image` inside the window)."""
    return unit_to_hu(2.0 * image - 1.0)


def hu_to_mu(hu: Array) -> Array:
    """HU -> linear attenuation in 1/mm."""
    return MU_WATER * (1.0 + hu / 1000.0)


def mu_to_hu(mu: Array) -> Array:
    """Linear attenuation in 1/mm -> HU."""
    return (mu / MU_WATER - 1.0) * 1000.0


def unit_to_mu(unit: Array) -> Array:
    """Prior scale -> attenuation in 1/mm (affine)."""
    return hu_to_mu(unit_to_hu(unit))


def mu_to_unit(mu: Array) -> Array:
    """Attenuation in 1/mm -> prior scale (affine)."""
    return hu_to_unit(mu_to_hu(mu))


def clip_hu(hu: Array) -> Array:
    """Clip HU to ``PRIOR_HU_WINDOW`` (removes outside-FOV padding such as -2048 or -3024)."""
    if isinstance(hu, torch.Tensor):
        return hu.clamp(HU_MIN, HU_MAX)
    return np.clip(hu, HU_MIN, HU_MAX)
