"""The CT reconstruction methods: one function per method and :data:`REGISTRY` (name -> :class:`Method`).

Each method is ``run(problem: CTProblem, config) -> Reconstruction``; its settings class (:mod:`ctbird.config`)
holds every default. :func:`ctbird.reconstruct` validates the input, builds the :class:`CTProblem` (one Radon) and
dispatches here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..config import METHOD_CONFIGS, Settings
from ..errors import ConfigError
from .base import CTProblem, Reconstruction, resize
from .bird import bird, bird_raw
from .classical import fbp, sirt, tv
from .dds import dds
from .dps import dps


@dataclass(frozen=True)
class Method:
    """A CT method: its name, its settings class, whether it needs a diffusion prior, and its function."""

    name: str
    config: type[Settings]
    needs_prior: bool
    run: Callable[[CTProblem, Any], Reconstruction]

    def progress_steps(self, config: Settings) -> int | None:
        """How many times the method calls its progress callback under ``config`` (``None``: not iterative)."""
        steps = getattr(config, "iters", None)
        if self.name == "bird" and steps is not None and config.refine_from_t > 0:
            steps += config.refine_from_t // config.refine_delta_t + 1
        return steps

    def configure(self, config: Settings | None = None, **overrides: Any) -> Settings:
        """The method's settings: ``config`` (default: its class's defaults) with ``overrides`` applied
        (:meth:`~ctbird.config.Settings.with_overrides`: ``None`` keeps a setting). Raises :class:`ConfigError` for
        a config of another method or an unknown setting."""
        if config is None:
            config = self.config()
        elif type(config) is not self.config:
            raise ConfigError(f"method {self.name!r} takes a {self.config.__name__}, got {type(config).__name__}.")
        return config.with_overrides(**overrides)


_FUNCTIONS = {"bird": (bird, True), "bird-raw": (bird_raw, True), "fbp": (fbp, False), "sirt": (sirt, False),
              "tv": (tv, False), "dps": (dps, True), "dds": (dds, True)}
#: Every CT method by name (the names and settings classes of :data:`ctbird.config.METHOD_CONFIGS`).
REGISTRY: Mapping[str, Method] = MappingProxyType({
    name: Method(name, config, _FUNCTIONS[name][1], _FUNCTIONS[name][0]) for name, config in METHOD_CONFIGS.items()
})


def get_method(name: str) -> Method:
    """The registered method ``name``; :class:`ConfigError` naming the valid ones otherwise."""
    if name not in REGISTRY:
        raise ConfigError(f"method must be one of {', '.join(REGISTRY)}, got {name!r}.")
    return REGISTRY[name]


__all__ = ["REGISTRY", "Method", "get_method", "CTProblem", "Reconstruction", "resize"]
