"""Filtering of sinograms along the detector axis (a data-term weighting for iterative CT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import LinearOperator
from .blur import check_image_shape
from .errors import GeometryError


class SinogramFilter(LinearOperator):
    """``y -> F^-1(|f|^exponent * F(y))`` along the detector axis of ``[B, C, views, detectors]`` sinograms.

    Each view is zero-padded to twice its length, filtered in the Fourier domain with the real, even response
    ``|f|^exponent`` (``f`` in cycles per detector cell, ``|f| <= 1/2``) and cropped back, so the operator is
    symmetric (self-adjoint). ``exponent = 0.5`` is the square root of FBP's ramp: a data term
    ``||F (A x - y)||^2`` then weighs the residual's frequencies as FBP does (``A^T F^T F = A^T R``, the
    filtered backprojection), instead of ``A^T A``'s emphasis on the lowest ones. The zero frequency gets weight 0.

    Parameters
    ----------
    shape : (C, views, detectors)
        Per-sample sinogram shape (output shape is the same).
    exponent : float
        Power of ``|f|`` (> 0).
    """

    def __init__(self, shape: Sequence[int], exponent: float = 0.5) -> None:
        shape = check_image_shape(shape, type(self).__name__)
        if not (isinstance(exponent, (int, float)) and exponent > 0):
            raise GeometryError(f"{type(self).__name__}: exponent must be a number > 0, got {exponent!r}.")
        super().__init__(shape, shape)
        self.exponent = float(exponent)
        detectors = shape[-1]
        self.padded = 2 * detectors
        self.register_buffer("response", torch.fft.rfftfreq(self.padded, dtype=torch.float64).abs() ** self.exponent)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        detectors = x.shape[-1]
        spectrum = torch.fft.rfft(x, n=self.padded, dim=-1) * self.response.to(x.dtype)
        return torch.fft.irfft(spectrum, n=self.padded, dim=-1)[..., :detectors]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._forward(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, exponent={self.exponent:g}"
