"""Operator base classes: shape-checked, differentiable ``torch.nn.Module`` s.

Conventions
-----------
* Images are ``[B, C, H, W]``; sinograms are ``[B, C, views, detectors]``.
* ``in_shape`` / ``out_shape`` are per-sample shapes ``(C, H, W)``; the batch
  dimension is free.
* The inner product is the plain Euclidean one, ``sum(a * b)``: physical
  spacings belong in an operator's scaling, never in the inner product.
* Blind (learnable) parameters are ``nn.Parameter`` s of the operator, so
  ``operator.parameters()`` lists exactly what a blind solver may optimize.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ShapeError

Shape = tuple[int, ...]


def check_shape(x: torch.Tensor, expected: Shape, what: str, owner: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` is ``[B, *expected]`` with ``B >= 1``."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{owner}: {what} must be a torch.Tensor of shape [B, {_fmt(expected)}], got {type(x).__name__}.")
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != tuple(expected) or x.shape[0] < 1:
        raise ShapeError(
            f"{owner}: expected {what} of shape [B, {_fmt(expected)}], got {list(x.shape)}. "
            f"Pass a batched tensor (add a batch axis with x[None]) whose per-sample shape is {tuple(expected)}."
        )
    if not x.is_floating_point():
        raise ShapeError(f"{owner}: {what} must be a floating-point tensor, got dtype {x.dtype}. Convert it with x.float().")


def _fmt(shape: Shape) -> str:
    return ", ".join(str(s) for s in shape)


class Operator(nn.Module):
    """A differentiable forward model ``x -> A(x)`` with fixed per-sample shapes.

    Subclasses implement :meth:`_forward`; :meth:`forward` validates the input first.

    Parameters
    ----------
    in_shape, out_shape : tuple of int
        Per-sample input and output shapes, e.g. ``(1, 256, 256)``.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        super().__init__()
        self._in_shape = tuple(int(s) for s in in_shape)
        self._out_shape = tuple(int(s) for s in out_shape)

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def out_shape(self) -> Shape:
        return self._out_shape

    @property
    def is_linear(self) -> bool:
        return isinstance(self, LinearOperator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, self.in_shape, "input", type(self).__name__)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The operator on a validated ``[B, *in_shape]`` tensor (named so as not to clash with ``nn.Module._apply``)."""
        raise NotImplementedError

    def __matmul__(self, other: Operator) -> Operator:
        if not isinstance(other, Operator):
            return NotImplemented
        if isinstance(self, LinearOperator) and isinstance(other, LinearOperator):
            return ComposedLinear(self, other)
        return Composed(self, other)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class LinearOperator(Operator):
    """A linear operator with an exact adjoint.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint`.
    """

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint ``A^T y``; ``y`` is ``[B, *out_shape]``, the result ``[B, *in_shape]``."""
        check_shape(y, self.out_shape, "adjoint input", type(self).__name__)
        return self._adjoint(y)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def T(self) -> LinearOperator:
        """The adjoint as an operator (shares this operator's parameters)."""
        return Adjoint(self)

    def _reference_tensor(self) -> torch.Tensor | None:
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t
        return None

    def _random(self, shape: Shape, generator: torch.Generator | None, dtype, device) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randn((1, *shape), generator=generator, dtype=dtype, device=gen_device).to(device)

    @torch.no_grad()
    def norm(
        self,
        n_iter: int = 50,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        rtol: float = 1e-6,
    ) -> float:
        """Operator 2-norm ``||A||`` estimated by the power method on ``A^T A``."""
        ref = self._reference_tensor()
        dtype = dtype or (ref.dtype if ref is not None else torch.float32)
        device = device or (ref.device if ref is not None else "cpu")
        x = self._random(self.in_shape, generator, dtype, device)
        x = x / x.norm()
        estimate = 0.0
        for _ in range(n_iter):
            z = self.adjoint(self(x))
            new_estimate = float(z.norm())
            if new_estimate == 0.0:
                return 0.0
            x = z / new_estimate
            if abs(new_estimate - estimate) <= rtol * new_estimate:
                estimate = new_estimate
                break
            estimate = new_estimate
        return math.sqrt(estimate)

    @torch.no_grad()
    def adjointness_error(self, x: torch.Tensor, y: torch.Tensor, op_norm: float | None = None) -> float:
        """Normalized adjointness error ``|<Ax, y> - <x, A^T y>| / (||A|| ||x|| ||y||)``.

        ``x`` is ``[B, *in_shape]`` and ``y`` ``[B, *out_shape]``; ``op_norm`` defaults to :meth:`norm`.
        """
        lhs = torch.sum(self(x) * y)
        rhs = torch.sum(x * self.adjoint(y))
        if op_norm is None:
            op_norm = self.norm(dtype=x.dtype, device=x.device)
        denom = op_norm * float(x.norm()) * float(y.norm())
        return float(abs(lhs - rhs)) / denom if denom > 0 else float(abs(lhs - rhs))


class Adjoint(LinearOperator):
    """The adjoint ``A^T`` of a linear operator, as an operator of its own."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.out_shape, op.in_shape)
        self.op = op

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._forward(y)

    @property
    def T(self) -> LinearOperator:
        return self.op


def _check_composable(outer: Operator, inner: Operator) -> None:
    if tuple(inner.out_shape) != tuple(outer.in_shape):
        raise ShapeError(
            f"Cannot compose {type(outer).__name__} @ {type(inner).__name__}: the inner operator outputs "
            f"{tuple(inner.out_shape)} per sample but the outer one expects {tuple(outer.in_shape)}. "
            "Build the operators for matching image sizes."
        )


class Composed(Operator):
    """``(outer @ inner)(x) = outer(inner(x))``."""

    def __init__(self, outer: Operator, inner: Operator) -> None:
        _check_composable(outer, inner)
        super().__init__(inner.in_shape, outer.out_shape)
        self.outer = outer
        self.inner = inner

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer._forward(self.inner._forward(x))


class ComposedLinear(Composed, LinearOperator):
    """Composition of two linear operators; its adjoint is ``inner^T outer^T``."""

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner._adjoint(self.outer._adjoint(y))


class Identity(LinearOperator):
    """The identity on ``shape`` (per sample), e.g. for denoising."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape, shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
