"""Errors of the ctbird package (the operator package's errors are re-exported).

Every message says what was expected, what came and how to fix it. The CLI turns
these into one-line messages with a non-zero exit code.
"""

from __future__ import annotations

from operators.errors import BackendUnavailableError, GeometryError, OperatorError, ShapeError


class CtbirdError(Exception):
    """Base class of ctbird's own errors."""


class InputError(CtbirdError, ValueError):
    """An input file or array cannot be used (unreadable, wrong modality, wrong shape...)."""


class ConfigError(CtbirdError, ValueError):
    """An option or configuration value is invalid."""


class PriorError(CtbirdError):
    """A diffusion prior cannot be found or loaded."""


class OutputError(CtbirdError):
    """Results cannot be written (existing output without --force, output over the input...)."""


__all__ = [
    "CtbirdError", "InputError", "ConfigError", "PriorError", "OutputError",
    "OperatorError", "ShapeError", "GeometryError", "BackendUnavailableError",
]
