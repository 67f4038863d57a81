"""Geometry calibration in ``ctbird reconstruct``: its options, the one estimate per run, and its outputs.

``--calibrate center[,angles]`` estimates the geometry's errors once (:func:`ctbird.solvers.calibrate.calibrate`,
no prior), before any method runs; every method of the run then reconstructs with the calibrated geometry.
``--center-offset PX`` and ``--angle-jitter DEG`` make a simulated acquisition (image inputs) with those scanner
errors (:func:`ctbird.simulate.simulation_geometry`) while the methods are given the nominal geometry, so the
calibration can be tried on any slice. Outputs: ``geometry_calibrated.json`` (a valid ``--geometry-file``) and
``metrics.json``'s ``calibration`` section (with the true values and errors when simulated); docs/formats.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from .errors import ConfigError

#: The calibrated geometry file written next to the results.
CALIBRATED_GEOMETRY_FILE = "geometry_calibrated.json"


def calibration_options(command: Callable) -> Callable:
    """The ``reconstruct`` options of this module (one group of click decorators)."""
    options = [
        click.option("--calibrate", default=None, metavar="center[,angles]",
                     help="Estimate the geometry's errors (rotation centre, per-view angles) once, then run every method "
                          "with the calibrated geometry; writes geometry_calibrated.json."),
        click.option("--center-offset", type=float, default=0.0, show_default=True, metavar="PX",
                     help="Simulate a rotation-centre error of PX detector cells (image inputs; the methods get the "
                          "nominal geometry)."),
        click.option("--angle-jitter", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="DEG",
                     help="Simulate mean-free per-view angle errors of this standard deviation in degrees (image "
                          "inputs; drawn from --seed)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_calibration_options(params: dict[str, Any]) -> tuple[str, ...] | None:
    """Validate the options before any work; returns what to estimate (``None``: no calibration)."""
    from .solvers.calibrate import parse_estimate

    estimate = parse_estimate(params.get("calibrate"))
    simulated_errors = params.get("center_offset") or params.get("angle_jitter")
    if simulated_errors and params.get("geometry_file"):
        raise ConfigError("--center-offset/--angle-jitter simulate scanner errors for image inputs; a measured "
                          "sinogram (--geometry-file) carries its own.")
    return estimate


def simulated_errors(params: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`ctbird.simulate.simulation_geometry` for the simulated scanner errors."""
    return {"center_offset": float(params.get("center_offset") or 0.0),
            "angle_jitter_deg": float(params.get("angle_jitter") or 0.0), "seed": params["seed"]}


def calibrate_acquisition(acquisition, estimate: tuple[str, ...] | None, *, device: str = "cpu"):
    """Estimate the geometry of ``acquisition`` (the CLI's ``_Acquisition``) once.

    Returns ``(acquisition, record)``: the acquisition with the calibrated geometry and the ``calibration`` section
    of metrics.json (``None`` and the acquisition unchanged without ``estimate``).
    """
    if estimate is None:
        return acquisition, None
    import torch

    from .solvers.calibrate import calibrate

    sinogram = torch.as_tensor(acquisition.sinogram)[:1].to(device=device, dtype=torch.float32)
    result = calibrate(sinogram, acquisition.geometry, acquisition.image_size, estimate=estimate)
    record = {**result.summary(), "geometry_file": CALIBRATED_GEOMETRY_FILE}
    truth = acquisition.settings.get("geometry_errors")
    if acquisition.truth_hu is not None:
        record.update(_errors(result, truth or {}, acquisition.geometry.views))
    return replace(acquisition, geometry=result.geometry), record


def _errors(result, truth: dict[str, Any], views: int) -> dict[str, Any]:
    """The simulated errors and the estimates' errors (estimate minus truth)."""
    true_center = float(truth.get("center_offset", 0.0))
    true_angles = np.asarray(truth.get("angle_offsets_deg", np.zeros(views)), dtype=np.float64)
    found_angles = np.zeros(views) if result.angle_offsets_deg is None else np.asarray(result.angle_offsets_deg)
    residual = found_angles - (true_angles - true_angles.mean())  # estimates are mean-free (a rotation is no error)
    return {"truth": {"center_offset": true_center, "angle_offsets_deg": true_angles.tolist(),
                      "angle_offsets_rms_deg": float(np.sqrt(np.mean(true_angles ** 2)))},
            "errors": {"center_offset": result.center_offset - true_center,
                       "angle_offsets_rms_deg": float(np.sqrt(np.mean(residual ** 2)))}}


def write_calibrated_geometry(folder: Path, acquisition, record: dict[str, Any] | None) -> None:
    """Write ``geometry_calibrated.json`` (a ``--geometry-file`` with ``image_size``) when calibrated."""
    from .io import write_text_atomic

    if record is None:
        return
    content = {**acquisition.geometry.to_dict(), "image_size": int(acquisition.image_size)}
    write_text_atomic(folder / CALIBRATED_GEOMETRY_FILE, json.dumps(content, indent=2) + "\n")


__all__ = ["CALIBRATED_GEOMETRY_FILE", "calibrate_acquisition", "calibration_options", "check_calibration_options",
           "simulated_errors", "write_calibrated_geometry"]
