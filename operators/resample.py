"""Downsampling (super-resolution forward model): anti-aliasing filter, then decimation."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import nn

from ._conv import check_padding, convolve, convolve_adjoint
from .base import LinearOperator
from .blur import check_image_shape, simplex_logits
from .errors import GeometryError

FILTERS = ("box", "bicubic")


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB ``imresize``'s ``"bicubic"``)."""
    ax = x.abs()
    inner = 1.5 * ax**3 - 2.5 * ax**2 + 1.0
    outer = -0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0
    return torch.where(ax <= 1, inner, torch.where(ax < 2, outer, torch.zeros_like(ax)))


def antialias_kernel(factor: int, filter: str, size: int | None = None) -> torch.Tensor:
    """Separable anti-aliasing kernel of a ``factor``-fold downsampling, float64 ``[L, L]``, sum 1.

    ``"box"``: ``L = factor``, uniform (average pooling). ``"bicubic"``: the cubic kernel stretched by
    ``factor`` (MATLAB's antialiased ``imresize(x, 1/factor)``), ``L = 4 factor`` (+1 for odd factors).
    ``size`` (same parity as ``factor``) crops or zero-pads the kernel symmetrically.
    """
    natural = factor if filter == "box" else 4 * factor + factor % 2
    size = natural if size is None else size
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    if filter == "box":
        taps = (offsets.abs() < factor / 2).to(torch.float64)
    else:
        taps = cubic(offsets / factor)
    taps = taps / taps.sum()
    return torch.outer(taps, taps)


class Downsample(LinearOperator):
    """Anti-aliasing filter followed by keeping every ``factor``-th pixel.

    Output pixel ``(i, j)`` is the filter centred on the centre of the input block
    ``[f i, f i + f) x [f j, f j + f)``; ``"box"`` is exactly average pooling (BIRD's 8x SR operator,
    ``AdaptiveAvgPool2d``), whose adjoint spreads each value over its block divided by ``f^2``.
    The adjoint in general is the transposed strided convolution, then the adjoint of the padding.

    Parameters
    ----------
    factor : int
        Decimation factor ``f >= 1``; ``H`` and ``W`` must be divisible by it.
    image_shape : (C, H, W)
        Per-sample input shape; the output is ``(C, H // f, W // f)``.
    filter : {"box", "bicubic"}
        Anti-aliasing filter (bicubic: :func:`antialias_kernel`, which has small negative lobes).
    learnable : bool
        If True the filter is a free non-negative kernel ``softmax(kernel_logits)`` (blind SR),
        initialized from ``filter`` with its negative lobes clipped.
    kernel_size : int or None
        Side of the learnable kernel (same parity as ``factor`` so that it is centred on each block);
        default the filter's own size. Fixed filters have their own size.
    padding : {"symmetric", "reflect", "circular", "zeros"}
        Border handling for filters wider than ``factor`` (default: MATLAB's ``"symmetric"``).
    """

    def __init__(
        self,
        factor: int,
        image_shape: Sequence[int],
        filter: str = "box",
        learnable: bool = False,
        kernel_size: int | None = None,
        padding: str = "symmetric",
    ) -> None:
        name = type(self).__name__
        image_shape = check_image_shape(image_shape, name)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise GeometryError(f"{name}: factor must be a positive int, got {factor!r}.")
        channels, height, width = image_shape
        if height % factor or width % factor:
            raise GeometryError(
                f"{name}: image height and width {height}x{width} must be divisible by factor={factor}. "
                f"Crop or pad the image to a multiple of {factor} (e.g. {height - height % factor}x{width - width % factor})."
            )
        if filter not in FILTERS:
            raise GeometryError(f"{name}: filter must be one of {FILTERS}, got {filter!r}.")
        if kernel_size is not None:
            if not learnable:
                raise GeometryError(f"{name}: kernel_size only applies to learnable=True; fixed filters have their own size.")
            try:
                kernel_size = operator.index(kernel_size)
            except TypeError:
                kernel_size = 0
            if kernel_size < 1 or (kernel_size - factor) % 2:
                raise GeometryError(
                    f"{name}: kernel_size must be a positive int with the parity of factor={factor} (so that the "
                    f"kernel is centred on each {factor}x{factor} block), got {kernel_size!r}."
                )
        super().__init__(image_shape, (channels, height // factor, width // factor))
        self.factor = factor
        self.filter = filter
        self.learnable = learnable
        self.padding = check_padding(padding, name)
        init = antialias_kernel(factor, filter, kernel_size).to(torch.get_default_dtype())
        self.kernel_size = init.shape[0]
        half = (self.kernel_size - factor) // 2
        self._pad = (half, half, half, half)
        if learnable:
            self.kernel_logits = nn.Parameter(simplex_logits(init.clamp(min=0), name))
        else:
            self.register_buffer("fixed_kernel", init)

    @property
    def kernel(self) -> torch.Tensor:
        """The anti-aliasing kernel ``[L, L]`` (sums to 1; on the simplex when learnable)."""
        if not self.learnable:
            return self.fixed_kernel
        k = self.kernel_size
        return torch.softmax(self.kernel_logits.reshape(-1), dim=0).reshape(k, k)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return convolve(x, self.kernel, self._pad, self.padding, stride=self.factor)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return convolve_adjoint(y, self.kernel, self._pad, self.padding, stride=self.factor)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, factor={self.factor}, filter={self.filter!r}, "
                f"kernel_size={self.kernel_size}, learnable={self.learnable}")
