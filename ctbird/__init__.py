"""ctbird: sparse-view CT reconstruction and blind image restoration with diffusion priors (BIRD).

Where things live: settings and their defaults in :mod:`ctbird.config`, simulated acquisitions in
:mod:`ctbird.simulate` (:func:`ctbird.simulate.simulate`), scoring in :mod:`ctbird.metrics` (:func:`score_ct`), unit conversions in :mod:`ctbird.units`,
the CT methods in :mod:`ctbird.methods` (dispatched by :func:`reconstruct`), solvers in :mod:`ctbird.solvers`,
whole volumes (batched, resumable, sharded under torchrun) in :mod:`ctbird.volume` (:func:`reconstruct_volume`).

Importing :mod:`ctbird` is cheap; torch/diffusers-heavy modules load on first use of these names:
:func:`reconstruct`, :func:`restore`, :class:`DiffusionPrior`, :class:`BIRD`, :class:`DPS`...
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
    "DPS": "ctbird.solvers",
    "DPSResult": "ctbird.solvers",
    "Acquisition": "ctbird.simulate",
    "score_ct": "ctbird.metrics",
    "BirdConfig": "ctbird.config",
    "DPSConfig": "ctbird.config",
    "FBPConfig": "ctbird.config",
    "SIRTConfig": "ctbird.config",
    "TVConfig": "ctbird.config",
    "RefineConfig": "ctbird.config",
    "PRESETS": "ctbird.config",
    "reconstruct_volume": "ctbird.volume",
    "VolumeResult": "ctbird.volume",
    "write_volume_outputs": "ctbird.volume",
    "read_volume": "ctbird.io.series",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctbird' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["reconstruct", "restore", "Reconstruction", "Restoration", "Acquisition", "score_ct",
           "BirdConfig", "DPSConfig", "FBPConfig", "SIRTConfig", "TVConfig", "RefineConfig", "PRESETS",
           "DiffusionPrior",
           "default_prior_path", "BIRD", "BirdResult", "EarlyStopping", "DPS", "DPSResult", "CtbirdError",
           "InputError", "ConfigError", "PriorError", "OutputError", "__version__",
           "reconstruct_volume", "VolumeResult", "write_volume_outputs", "read_volume"]
