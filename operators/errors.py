"""Typed errors of the operator package.

Every message says what was expected, what was received and how to fix it.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base class of all errors raised by :mod:`operators`."""


class ShapeError(OperatorError, ValueError):
    """A tensor's shape does not match what the operator expects."""


class GeometryError(OperatorError, ValueError):
    """An acquisition geometry or operator parameter is invalid."""


class BackendUnavailableError(OperatorError, ImportError):
    """A requested computational backend (ASTRA, CUDA) is not available here."""
