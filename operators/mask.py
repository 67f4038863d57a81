"""Pixel mask (inpainting forward model)."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from .base import LinearOperator
from .blur import check_image_shape
from .errors import GeometryError


class Mask(LinearOperator):
    """``y = mask * x``: keeps the pixels where the mask is 1 and zeroes the others (self-adjoint).

    Parameters
    ----------
    mask : Tensor [H, W] or [C, H, W] (or [1, H, W])
        Boolean or 0/1 tensor; 1 = observed pixel. An ``[H, W]`` mask applies to every channel.
    image_shape : (C, H, W)
        Per-sample image shape (output shape is the same).
    """

    def __init__(self, mask: torch.Tensor, image_shape: Sequence[int]) -> None:
        name = type(self).__name__
        image_shape = check_image_shape(image_shape, name)
        channels, height, width = image_shape
        if not isinstance(mask, torch.Tensor):
            raise GeometryError(f"{name}: mask must be a torch.Tensor [H, W], got {type(mask).__name__}.")
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3 or tuple(mask.shape[1:]) != (height, width) or mask.shape[0] not in (1, channels):
            raise GeometryError(
                f"{name}: mask must be [H, W] = [{height}, {width}] (or [C or 1, H, W]) for image_shape "
                f"{image_shape}, got {list(mask.shape)}."
            )
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise GeometryError(f"{name}: mask values must be 0 or 1 (or bool); threshold it first, e.g. mask > 0.5.")
            mask = mask != 0
        super().__init__(image_shape, image_shape)
        self.register_buffer("mask", mask.detach().clone())

    @classmethod
    def central_hole(cls, image_shape: Sequence[int], size: int | tuple[int, int]) -> Mask:
        """A mask that hides a centred ``size x size`` (or ``(h, w)``) box, e.g. BIRD's 80x80 hole at 256^2.

        The hole spans rows ``(H - h) // 2`` to ``(H - h) // 2 + h - 1`` (88..167 for 80 in 256).
        """
        image_shape = check_image_shape(image_shape, cls.__name__)
        _, height, width = image_shape
        try:
            hole_h, hole_w = (operator.index(size),) * 2 if not isinstance(size, tuple) else map(operator.index, size)
        except (TypeError, ValueError):
            raise GeometryError(f"{cls.__name__}.central_hole: size must be an int or (h, w), got {size!r}.") from None
        if not (0 <= hole_h <= height and 0 <= hole_w <= width):
            raise GeometryError(
                f"{cls.__name__}.central_hole: hole {hole_h}x{hole_w} must fit in the {height}x{width} image."
            )
        mask = torch.ones(height, width, dtype=torch.bool)
        top, left = (height - hole_h) // 2, (width - hole_w) // 2
        mask[top:top + hole_h, left:left + hole_w] = False
        return cls(mask, image_shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(dtype=x.dtype)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask.to(dtype=y.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, observed={float(self.mask.float().mean()):.3f}"
