"""Synthetic test images: the Shepp-Logan head phantom and a uniform disk.

Both return float tensors ``[1, 1, N, N]`` (batch and channel axes included, ready
for the operators) with values in ``[0, value]``.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ConfigError(f"size must be an integer >= 2 (image side in pixels), got {size!r}.")
    return int(size)


def shepp_logan(size: int = 256, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The modified (Toft) Shepp-Logan phantom of scikit-image, resized to ``size x size``.

    ``skimage.data.shepp_logan_phantom()`` (400 x 400, values in ``[0, 1]``) is
    resized with anti-aliasing and clipped to ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        ``[1, 1, size, size]``, values in ``[0, 1]``.
    """
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    size = _check_size(size)
    image = shepp_logan_phantom()
    if image.shape != (size, size):
        image = resize(image, (size, size), order=1, anti_aliasing=size < image.shape[0], mode="reflect")
    return torch.from_numpy(np.clip(image, 0.0, 1.0)).to(dtype)[None, None]


def disk(size: int = 64, *, radius: float | None = None, value: float = 1.0, supersample: int = 4,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A centred uniform disk, edge pixels anti-aliased by ``supersample^2`` sub-samples.

    Parameters
    ----------
    size : int
        Image side ``N`` in pixels.
    radius : float, optional
        Disk radius in pixels; default ``0.35 * N``.
    value : float
        Value inside the disk (0 outside).

    Returns
    -------
    torch.Tensor
        ``[1, 1, size, size]``; pixel values are ``value`` times the covered fraction.
    """
    size = _check_size(size)
    radius = 0.35 * size if radius is None else float(radius)
    if not radius > 0:
        raise ConfigError(f"radius must be positive (pixels), got {radius!r}.")
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise ConfigError(f"supersample must be a positive integer, got {supersample!r}.")
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    centres = np.arange(size) - (size - 1) / 2.0
    coords = (centres[:, None] + offsets[None, :]).reshape(-1)
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2
    covered = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return torch.from_numpy(value * covered).to(dtype)[None, None]


__all__ = ["shepp_logan", "disk"]
