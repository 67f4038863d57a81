"""Solvers on a diffusion prior: BIRD (+ data-consistency refinement) and the DPS baseline."""

from __future__ import annotations

from .bird import BIRD, BirdResult, EarlyStopping, data_loss, project_to_sphere
from .dps import DPS, DPSResult
from .refine import refine_data_consistency

__all__ = ["BIRD", "BirdResult", "EarlyStopping", "data_loss", "project_to_sphere",
           "DPS", "DPSResult", "refine_data_consistency"]
