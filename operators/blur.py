"""Blur operators: a fixed or learnable kernel, and a (learnable) Gaussian blur.

Both apply the same 2-D kernel to every channel of a ``[B, C, H, W]`` image and return
an image of the same size. The operation is a **convolution**, not a cross-correlation:
the blur of a centred unit impulse is the kernel itself, in its own orientation
(``torch.nn.functional.conv2d`` alone would return the kernel flipped). Borders are
handled by a padding mode (see :mod:`operators._conv`); the adjoint is exact for every mode.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import nn

from ._conv import check_padding, convolve, convolve_adjoint
from .base import LinearOperator, Shape
from .errors import GeometryError

PARAMETRIZATIONS = ("logits", "mlp")


def check_image_shape(image_shape: Sequence[int], owner: str) -> Shape:
    """Return ``image_shape`` as a tuple ``(C, H, W)`` of positive ints or raise :class:`GeometryError`."""
    try:
        shape = tuple(operator.index(s) for s in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or any(isinstance(s, bool) for s in image_shape):
        raise GeometryError(f"{owner}: image_shape must be (C, H, W) with positive ints, got {image_shape!r}.")
    return shape


def _check_kernel_size(kernel_size: object, owner: str) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise GeometryError(
            f"{owner}: kernel_size must be a positive odd int (the kernel is centred on a pixel), got {kernel_size!r}."
        )
    return kernel_size


def simplex_logits(kernel: torch.Tensor, owner: str) -> torch.Tensor:
    """Logits whose softmax is ``kernel / kernel.sum()`` (entries floored at ``1e-3 * max``)."""
    if bool((kernel < 0).any()) or not float(kernel.sum()) > 0:
        raise GeometryError(
            f"{owner}: a learnable kernel is a softmax (non-negative, sums to 1), so its initial kernel must be "
            f"non-negative with a positive sum; got min {float(kernel.min()):.3g}, sum {float(kernel.sum()):.3g}."
        )
    floored = torch.clamp(kernel, min=1e-3 * float(kernel.max()))
    return torch.log(floored / floored.sum())


class _KernelBlur(LinearOperator):
    """Same-size per-channel convolution with ``self.kernel`` ([k, k], k odd)."""

    def __init__(self, image_shape: Shape, kernel_size: int, padding: str) -> None:
        super().__init__(image_shape, image_shape)
        self.kernel_size = kernel_size
        self.padding = check_padding(padding, type(self).__name__)
        half = kernel_size // 2
        self._pad = (half, half, half, half)

    @property
    def kernel(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return convolve(x, self.kernel, self._pad, self.padding)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return convolve_adjoint(y, self.kernel, self._pad, self.padding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}, padding={self.padding!r}"


class Blur(_KernelBlur):
    """Blur by a fixed or learnable kernel, the same kernel on every channel.

    ``y = k * x`` (true convolution, output the size of the input). The adjoint is the
    correlation with ``k`` followed by the adjoint of the padding.

    Parameters
    ----------
    kernel : Tensor [k, k] or None
        The kernel, ``k`` odd. A fixed kernel may be any finite array (it is not normalized).
        A learnable ``"logits"`` kernel starts from it, so it must be non-negative with a positive
        sum (it is normalized; entries below ``1e-3 * max`` are raised to that floor so that they
        can still learn). ``None`` needs ``learnable=True`` and ``kernel_size``.
    kernel_size : int or None
        Kernel side when ``kernel`` is ``None`` (a learnable kernel then starts uniform, or at the
        MLP's random output).
    image_shape : (C, H, W)
        Per-sample image shape.
    learnable : bool
        If True the kernel is a blind parameter constrained to the simplex (non-negative, sum 1).
    parametrization : {"logits", "mlp"}
        ``"logits"``: ``nn.Parameter`` ``kernel_logits`` [k, k], ``kernel = softmax(logits)``.
        ``"mlp"``: BIRD's / SelfDeblur's kernel generator: a fixed input ``mlp_input`` [mlp_input_size]
        (uniform in [0, 0.1), seeded) fed to ``Linear -> ReLU6 -> Linear(k*k) -> softmax``; the MLP
        weights are the parameters.
    padding : {"reflect", "symmetric", "circular", "zeros"}
        Border handling (BIRD's reference uses ``"zeros"``).
    mlp_input_size, mlp_hidden_size : int
        MLP sizes (BIRD: 200 and 1000).
    seed : int
        Seed of the MLP's fixed input and initial weights (independent of the global RNG).
    """

    def __init__(
        self,
        kernel: torch.Tensor | None = None,
        *,
        kernel_size: int | None = None,
        image_shape: Sequence[int],
        learnable: bool = False,
        parametrization: str = "logits",
        padding: str = "reflect",
        mlp_input_size: int = 200,
        mlp_hidden_size: int = 1000,
        seed: int = 0,
    ) -> None:
        name = type(self).__name__
        image_shape = check_image_shape(image_shape, name)
        if parametrization not in PARAMETRIZATIONS:
            raise GeometryError(f"{name}: parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}.")
        if kernel is not None:
            kernel = self._check_kernel(kernel, kernel_size, name)
            kernel_size = kernel.shape[0]
        elif kernel_size is None:
            raise GeometryError(f"{name}: pass a kernel [k, k], or kernel_size together with learnable=True.")
        elif not learnable:
            raise GeometryError(
                f"{name}: kernel_size={kernel_size} without a kernel only makes sense with learnable=True; "
                "pass the fixed kernel itself (e.g. Blur(torch.ones(5, 5) / 25, image_shape=...))."
            )
        kernel_size = _check_kernel_size(kernel_size, name)
        if not learnable and parametrization != "logits":
            raise GeometryError(f"{name}: parametrization={parametrization!r} only applies to learnable=True kernels.")
        super().__init__(image_shape, kernel_size, padding)
        self.learnable = learnable
        self.parametrization = parametrization

        if not learnable:
            self.register_buffer("fixed_kernel", kernel.clone())
        elif parametrization == "logits":
            init = torch.zeros(kernel_size, kernel_size) if kernel is None else simplex_logits(kernel, name)
            self.kernel_logits = nn.Parameter(init)
        else:
            if kernel is not None:
                raise GeometryError(
                    f"{name}: parametrization='mlp' starts from the MLP's random output; pass kernel_size, not a kernel."
                )
            for what, value in (("mlp_input_size", mlp_input_size), ("mlp_hidden_size", mlp_hidden_size)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise GeometryError(f"{name}: {what} must be a positive int, got {value!r}.")
            generator = torch.Generator().manual_seed(seed)
            self.register_buffer("mlp_input", 0.1 * torch.rand(mlp_input_size, generator=generator))
            self.mlp = nn.Sequential(
                nn.Linear(mlp_input_size, mlp_hidden_size),
                nn.ReLU6(),
                nn.Linear(mlp_hidden_size, kernel_size * kernel_size),
            )
            with torch.no_grad():
                for layer in (self.mlp[0], self.mlp[2]):
                    bound = 1.0 / math.sqrt(layer.in_features)  # nn.Linear's default init, seeded
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    @staticmethod
    def _check_kernel(kernel: object, kernel_size: int | None, name: str) -> torch.Tensor:
        if not isinstance(kernel, torch.Tensor):
            raise GeometryError(f"{name}: kernel must be a torch.Tensor [k, k], got {type(kernel).__name__}.")
        if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise GeometryError(
                f"{name}: kernel must be a square [k, k] tensor with k odd (centred on a pixel), got shape "
                f"{list(kernel.shape)}. Zero-pad it by one row/column to make k odd."
            )
        if kernel_size is not None and kernel_size != kernel.shape[0]:
            raise GeometryError(f"{name}: kernel_size={kernel_size} contradicts the kernel's size {kernel.shape[0]}.")
        if not kernel.is_floating_point() or not bool(torch.isfinite(kernel).all()):
            raise GeometryError(f"{name}: kernel must be a finite floating-point tensor, got dtype {kernel.dtype}.")
        return kernel.detach()

    @property
    def kernel(self) -> torch.Tensor:
        """The current kernel, ``[k, k]``; on the simplex when learnable."""
        if not self.learnable:
            return self.fixed_kernel
        k = self.kernel_size
        if self.parametrization == "logits":
            return torch.softmax(self.kernel_logits.reshape(-1), dim=0).reshape(k, k)
        return torch.softmax(self.mlp(self.mlp_input), dim=0).reshape(k, k)

    def extra_repr(self) -> str:
        mode = f"learnable ({self.parametrization})" if self.learnable else "fixed"
        return f"{super().extra_repr()}, kernel={mode}"


def _check_sigma(sigma: object, name: str) -> tuple[float, float]:
    values = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    try:
        sigma_y, sigma_x = (float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise GeometryError(f"{name}: sigma must be a positive float or a pair (sigma_y, sigma_x), got {sigma!r}.") from None
    if not (math.isfinite(sigma_y) and math.isfinite(sigma_x) and sigma_y > 0 and sigma_x > 0):
        raise GeometryError(f"{name}: sigma values must be positive and finite (pixels), got {sigma!r}.")
    return sigma_y, sigma_x


class GaussianBlur(_KernelBlur):
    """Gaussian blur with a fixed or learnable standard deviation (pixels).

    The kernel ``exp(-u^2 / (2 sigma_x^2) - v^2 / (2 sigma_y^2))``, normalized to sum 1, where
    ``(u, v)`` are the (column, row) offsets rotated by ``angle``, is rebuilt differentiably
    from ``log_sigma`` (and ``angle``) at every call.

    Parameters
    ----------
    sigma : float or (float, float)
        Standard deviation in pixels, or ``(sigma_y, sigma_x)`` (rows, columns).
    image_shape : (C, H, W)
        Per-sample image shape.
    kernel_size : int or None
        Odd kernel side; default ``2 * ceil(3 * max(sigma)) + 1``. It stays fixed when sigma is learnt.
    learnable : bool
        If True, ``log_sigma`` (and ``angle`` when anisotropic) are ``nn.Parameter`` s; else buffers.
    anisotropic : bool
        Two sigmas and a rotation angle instead of one sigma. Implied by a pair of unequal sigmas or
        a non-zero angle.
    angle : float
        Rotation (radians, counter-clockwise from the column axis) of the anisotropic Gaussian.
    padding : {"reflect", "symmetric", "circular", "zeros"}
        Border handling.
    """

    def __init__(
        self,
        sigma: float | tuple[float, float],
        *,
        image_shape: Sequence[int],
        kernel_size: int | None = None,
        learnable: bool = False,
        anisotropic: bool = False,
        angle: float = 0.0,
        padding: str = "reflect",
    ) -> None:
        name = type(self).__name__
        image_shape = check_image_shape(image_shape, name)
        sigma_y, sigma_x = _check_sigma(sigma, name)
        if not math.isfinite(angle):
            raise GeometryError(f"{name}: angle must be a finite number of radians, got {angle!r}.")
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * max(sigma_y, sigma_x)) + 1
        kernel_size = _check_kernel_size(kernel_size, name)
        super().__init__(image_shape, kernel_size, padding)
        self.learnable = learnable
        self.anisotropic = bool(anisotropic or sigma_y != sigma_x or angle != 0.0)
        log_sigma = torch.log(torch.tensor([sigma_y, sigma_x] if self.anisotropic else [sigma_y]))
        angle_tensor = torch.tensor(float(angle))
        if learnable:
            self.log_sigma = nn.Parameter(log_sigma)
            if self.anisotropic:
                self.angle = nn.Parameter(angle_tensor)
        else:
            self.register_buffer("log_sigma", log_sigma)
            if self.anisotropic:
                self.register_buffer("angle", angle_tensor)

    @property
    def sigma(self) -> torch.Tensor:
        """Standard deviations ``[sigma_y, sigma_x]`` in pixels (equal when isotropic), shape ``[2]``."""
        return torch.exp(self.log_sigma).expand(2)

    @property
    def kernel(self) -> torch.Tensor:
        """The normalized Gaussian kernel, ``[k, k]``."""
        sigma_y, sigma_x = self.sigma
        offsets = torch.arange(self.kernel_size, dtype=self.log_sigma.dtype, device=self.log_sigma.device)
        offsets = offsets - self.kernel_size // 2
        rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
        if self.anisotropic:
            cos, sin = torch.cos(self.angle), torch.sin(self.angle)
            cols, rows = cos * cols + sin * rows, cos * rows - sin * cols
        kernel = torch.exp(-0.5 * ((cols / sigma_x) ** 2 + (rows / sigma_y) ** 2))
        return kernel / kernel.sum()

    def extra_repr(self) -> str:
        sigma = [round(float(s), 4) for s in self.sigma]
        return f"{super().extra_repr()}, sigma={sigma}, learnable={self.learnable}"
