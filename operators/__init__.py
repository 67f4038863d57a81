"""Differentiable imaging operators: CT projection, blur, downsampling, masks, noise.

Pure physics on torch tensors; this package never imports :mod:`ctbird`.
"""

from .base import Adjoint, Composed, ComposedLinear, Identity, LinearOperator, Operator
from .errors import BackendUnavailableError, GeometryError, OperatorError, ShapeError
from .geometry import FanBeam, ParallelBeam, geometry_from_dict

__all__ = [
    "Operator", "LinearOperator", "Adjoint", "Composed", "ComposedLinear", "Identity",
    "OperatorError", "ShapeError", "GeometryError", "BackendUnavailableError",
    "ParallelBeam", "FanBeam", "geometry_from_dict",
]
