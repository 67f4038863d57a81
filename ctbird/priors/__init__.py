"""Diffusion priors: :class:`DiffusionPrior`, the noise schedule (:mod:`.schedule`) and the shipped default CT prior."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PriorError
from ..shipped import shipped_path
from .diffusion import GRAD_MODES, DiffusionPrior
from .schedule import SCHEDULER_CONFIG, NoiseSchedule

#: Environment variable that overrides :func:`default_prior_path`.
DEFAULT_PRIOR_ENV = "CTBIRD_DEFAULT_PRIOR"
DEFAULT_PRIOR_NAME = "ctbird-ct-256"


def default_prior_path(must_exist: bool = True) -> Path:
    """Folder of the default CT prior: ``$CTBIRD_DEFAULT_PRIOR`` or the shipped ``priors/ctbird-ct-256``
    (:func:`ctbird.shipped.shipped_path`: ``data/priors/ctbird-ct-256`` in the repository, inside the package
    once installed).

    Raises
    ------
    PriorError
        If ``must_exist`` and the folder is missing.
    """
    override = os.environ.get(DEFAULT_PRIOR_ENV)
    path = Path(override).expanduser() if override else shipped_path("priors", DEFAULT_PRIOR_NAME)
    if must_exist and not path.is_dir():
        raise PriorError(
            f"The default CT prior was not found at {path}. Pass prior= (CLI: --prior) a diffusers folder "
            f"(unet/ + scheduler/), set {DEFAULT_PRIOR_ENV}, or train one with `ctbird train-prior`."
        )
    return path


def load_prior(prior: DiffusionPrior | str | os.PathLike | None, device: str | None = None) -> DiffusionPrior:
    """A :class:`DiffusionPrior` from an instance (returned as is, moved to ``device``), a path/hub id, or ``None``
    (the default CT prior)."""
    if isinstance(prior, DiffusionPrior):
        return prior.to(device) if device is not None else prior
    source = default_prior_path() if prior is None else prior
    return DiffusionPrior.from_pretrained(source, device=device)


__all__ = ["DiffusionPrior", "NoiseSchedule", "SCHEDULER_CONFIG", "GRAD_MODES", "default_prior_path", "load_prior"]
