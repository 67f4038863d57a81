"""Differentiable imaging operators: CT projection, filtered backprojection, blur, downsampling, masks, noise.

Pure physics on torch tensors; this package never imports :mod:`ctbird`. Filtered backprojection is
:func:`operators.fbp.fbp`.
"""

from ._conv import PADDING_MODES
from .base import Adjoint, Composed, ComposedLinear, Identity, LinearOperator, Operator
from .errors import BackendUnavailableError, GeometryError, OperatorError, ShapeError
from .geometry import FanBeam, ParallelBeam, geometry_from_dict
from .blur import Blur, GaussianBlur
from .mask import Mask
from .noise import GaussianNoise, LogPoissonNoise, PoissonNoise, SpeckleGaussianNoise
from .radon import Radon
from .fbp import SinogramFilter
from .resample import Downsample

__all__ = [
    "Operator", "LinearOperator", "Adjoint", "Composed", "ComposedLinear", "Identity",
    "OperatorError", "ShapeError", "GeometryError", "BackendUnavailableError",
    "ParallelBeam", "FanBeam", "geometry_from_dict",
    "Radon", "SinogramFilter",
    "Blur", "GaussianBlur", "Downsample", "Mask", "PADDING_MODES",
    "GaussianNoise", "PoissonNoise", "LogPoissonNoise", "SpeckleGaussianNoise",
]
