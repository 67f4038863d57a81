"""ctbird: sparse-view CT reconstruction and blind image restoration with diffusion priors (BIRD).

Importing :mod:`ctbird` is cheap; torch/diffusers-heavy modules load on first use of these names:
:func:`reconstruct`, :func:`restore`, :class:`DiffusionPrior`, :class:`BIRD`, :class:`BirdResult`, :class:`DPS`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import ConfigError, CtbirdError, InputError, OutputError, PriorError

__version__ = "0.1.0"

_LAZY = {
    "reconstruct": "ctbird.api",
    "restore": "ctbird.api",
    "Reconstruction": "ctbird.api",
    "Restoration": "ctbird.api",
    "DiffusionPrior": "ctbird.priors",
    "default_prior_path": "ctbird.priors",
    "BIRD": "ctbird.solvers",
    "BirdResult": "ctbird.solvers",
    "EarlyStopping": "ctbird.solvers",
    "TASK_DEFAULTS": "ctbird.solvers",
    "DPS": "ctbird.solvers",
    "DPSResult": "ctbird.solvers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctbird' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["reconstruct", "restore", "Reconstruction", "Restoration", "DiffusionPrior", "default_prior_path", "BIRD",
           "BirdResult", "EarlyStopping", "TASK_DEFAULTS", "DPS", "DPSResult", "CtbirdError", "InputError",
           "ConfigError", "PriorError", "OutputError", "__version__"]
