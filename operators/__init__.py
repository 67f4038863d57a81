"""Differentiable imaging operators: CT projection and sinogram filtering, blur, downsampling, masks, noise.

Pure physics on torch tensors; this package never imports :mod:`ctbird`.
"""

from .base import Adjoint, Composed, ComposedLinear, Identity, LinearOperator, Operator
from .errors import BackendUnavailableError, GeometryError, OperatorError, ShapeError
from .geometry import FanBeam, ParallelBeam, geometry_from_dict
from .blur import Blur, GaussianBlur
from .mask import Mask
from .noise import GaussianNoise, LogPoissonNoise, PoissonNoise, SpeckleGaussianNoise
from .radon import Radon
from .resample import Downsample
from .sinogram_filter import SinogramFilter

__all__ = [
    "Operator", "LinearOperator", "Adjoint", "Composed", "ComposedLinear", "Identity",
    "OperatorError", "ShapeError", "GeometryError", "BackendUnavailableError",
    "ParallelBeam", "FanBeam", "geometry_from_dict",
    "Radon", "SinogramFilter",
    "Blur", "GaussianBlur", "Downsample", "Mask",
    "GaussianNoise", "PoissonNoise", "LogPoissonNoise", "SpeckleGaussianNoise",
]
