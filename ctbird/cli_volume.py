"""``ctbird reconstruct INPUT --slices ...``: whole volumes from the command line, also sharded under ``torchrun``.

The data flow of the single-slice command, slice by slice: read the volume (:func:`ctbird.io.series.read_volume`) ->
select slices (:func:`ctbird.io.series.parse_slices`) -> simulate each slice's acquisition
(:func:`ctbird.volume.simulated_sinograms`: dose noise seeded ``seed + i``) or take the measured sinogram stack ->
:func:`ctbird.volume.reconstruct_volume` per method (batches, per-slice seeds, a work folder that ``--resume``
continues; the slices shared over the ``torchrun`` processes) -> rank 0 writes the outputs
(:func:`ctbird.volume.write_volume_outputs`, renamed into place at the end) -> one summary line on rank 0.

The work folder (``--work-dir``, default ``<out>.work`` beside ``--out``) holds one subfolder per method; it is
removed after a successful run unless ``--keep-work``. Under ``torchrun`` every process must see it (a shared file
system for several machines). See ``docs/scaling.md``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .config import resolve_preset
from .errors import ConfigError, InputError
from .units import EVAL_HU_RANGE

#: Options that only make sense with ``--slices``.
VOLUME_ONLY_OPTIONS = ("batch_size", "resume", "work_dir", "keep_work", "z_tv")


def reject_volume_options(params: dict[str, Any]) -> None:
    """A single-slice run given a volume-only option: one clear error instead of silently ignoring it."""
    given = [name for name in VOLUME_ONLY_OPTIONS if params.get(name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{flags} go(es) with --slices (a volume run); add --slices all, START:STOP or i,j,k.")


def default_work_dir(out: Path) -> Path:
    """``<out>.work`` beside the output folder."""
    return out.parent / f"{out.name}.work"


@dataclass(frozen=True)
class _VolumeAcquisition:
    """What every method reconstructs: lazy per-slice sinograms, the truth of a simulation, the grid."""

    sinograms: Any          # sequence [S] of [views, detectors]
    truth: Any              # sequence [S] of [N, N] HU, or None (measured sinograms)
    geometry: Any
    image_size: int
    pixel_spacing_mm: float
    settings: dict[str, Any]


def _acquire_volume(volume, params: dict[str, Any], prior) -> _VolumeAcquisition:
    """Simulate each slice of an image volume (on the prior's grid, else at most ``DEFAULT_WORKING_SIZE``), or wrap the
    measured sinogram stack."""
    from .cli import DEFAULT_WORKING_SIZE
    from .io import working_pixel_spacing
    from .simulate import simulation_geometry
    from .volume import simulated_sinograms

    if volume.kind == "sinogram":
        geometry, size = volume.geometry, volume.image_size
        if prior is not None and prior.image_size != size:
            raise InputError(f"The geometry's image_size is {size} but the prior works at {prior.image_size}; set "
                             f"image_size = {prior.image_size} in {params['geometry_file']} or use another prior.")
        pixel_mm = float(geometry.pixel_spacing or 1.0)
        return _VolumeAcquisition(volume.sinograms, None, geometry, size, pixel_mm,
                                  {"views": int(geometry.views), "geometry": geometry.to_dict(), "image_size": size,
                                   "pixel_spacing_mm": pixel_mm, "dose_I0": None, "seed": params["seed"]})
    height, width = (int(v) for v in volume.hu.shape[1:])
    size = prior.image_size if prior is not None else min(DEFAULT_WORKING_SIZE, max(height, width))
    geometry = simulation_geometry(params["geometry"], params["views"], size)
    sinograms, truth = simulated_sinograms(volume.hu, geometry, image_size=size,
                                           pixel_spacing_mm=volume.pixel_spacing_mm, dose=params["dose"],
                                           seed=params["seed"])
    pixel_mm = working_pixel_spacing(volume.pixel_spacing_mm, (height, width), size)
    return _VolumeAcquisition(sinograms, truth, geometry, size, pixel_mm,
                              {"views": int(geometry.views), "geometry": geometry.to_dict(), "image_size": size,
                               "pixel_spacing_mm": pixel_mm, "dose_I0": params["dose"], "seed": params["seed"],
                               "noise_seeds": "seed + slice index" if params["dose"] else None})


class _SliceBar:
    """A tqdm bar counting this process's slices, fed by :func:`ctbird.volume.reconstruct_volume`'s ``progress``."""

    def __init__(self, desc: str, quiet: bool) -> None:
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, state: dict) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state["total"], desc=self.desc, unit="slice", disable=True if self.quiet else None,
                            file=sys.stderr, leave=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_work_dir(work: Path, inputs: list[Path], out: Path) -> Path:
    work = work.expanduser().resolve()
    for item in [*inputs, out]:
        other = item.expanduser().resolve()
        if work == other or work.is_relative_to(other) or other.is_relative_to(work):
            raise ConfigError(f"The work folder {work} overlaps {other}; choose a --work-dir outside the input and --out.")
    return work


def reconstruct_volume_cli(input_path: Path, params: dict[str, Any], tables: dict[str, dict[str, Any]]) -> None:
    """``ctbird reconstruct INPUT --slices ...`` (``params``: the command's resolved options)."""
    from . import cli
    from .cli_safety import RunSafety, check_run_limits
    from .io import resolve_window
    from .limits import check_dose, check_sizes
    from .io.series import parse_slices, read_volume
    from .methods import get_method
    from .volume import distributed_context, reconstruct_volume, shutdown_distributed, write_volume_outputs

    if params["slice"] is not None:
        raise ConfigError("--slice picks one slice and --slices several; pass only one of them.")
    if params.get("calibrate") or params.get("center_offset") or params.get("angle_jitter"):
        raise ConfigError("--calibrate, --center-offset and --angle-jitter work on one slice; calibrate one slice "
                          "(--slice i --calibrate ...) and pass its geometry_calibrated.json as --geometry-file.")
    methods = cli._parse_methods(params["method"])
    window = resolve_window(params["window"])
    params["preset"] = resolve_preset(params["preset"], cli._resolve_device(params["device"]))
    configs = {method: cli._method_settings(method, params, tables.get(method)) for method in methods}
    anonymize = params["anonymize"]
    input_path = input_path.expanduser()
    inputs = [input_path] + ([Path(params["geometry_file"])] if params["geometry_file"] else [])
    if not params["geometry_file"]:
        check_sizes(views=params["views"])
    out = cli._check_out(params["out"], inputs, params["force"], anonymize)
    work = _check_work_dir(Path(params["work_dir"]) if params["work_dir"] else default_work_dir(out), inputs, out)
    safety = RunSafety(anonymize, bool(params.get("accept_burned_in_annotation")))
    label = safety.label(input_path)
    if params["geometry_file"]:
        safety.label(params["geometry_file"], index=2)
    safety.hide([params["series"]] if params["series"] else [])
    with safety.collecting():
        volume = read_volume(input_path, geometry_path=params["geometry_file"], series_uid=params["series"])
    if params["dose"] is not None:
        safety.warn(check_dose(params["dose"]))
    indices = parse_slices(params["slices"], volume.n_slices)
    safety.check_burned_in(volume.headers, source=label)
    prior, prior_label = cli._load_prior(params["prior"], methods, "cpu")
    acquisition = _acquire_volume(volume, params, prior)
    geometry = acquisition.geometry
    check_run_limits(views=geometry.views, detectors=geometry.detector_count(acquisition.image_size),
                     image_size=acquisition.image_size, methods=methods, device=cli._resolve_device(params["device"]),
                     out=out, prior_size=prior.image_size if prior is not None else None,
                     batch=params["batch_size"] or 1, slices=len(indices))
    ctx = distributed_context(params["device"])  # joins torchrun's process group (gloo on CPU, NCCL on CUDA)
    quiet = params["quiet"] or not ctx.is_main

    results = {}
    for method in methods:
        options: dict[str, Any] = {"config": configs[method]}
        if get_method(method).needs_prior:
            options["prior"] = prior
        bar = _SliceBar(method if ctx.world_size == 1 else f"{method} (rank 0 of {ctx.world_size})", quiet)
        try:
            results[method] = reconstruct_volume(
                acquisition.sinograms, acquisition.geometry, image_size=acquisition.image_size,
                pixel_spacing_mm=acquisition.pixel_spacing_mm, work_dir=work / method, method=method, slices=indices,
                seed=params["seed"], batch_size=params["batch_size"], resume=params["resume"],
                truth=acquisition.truth, progress=bar if ctx.is_main else False, device=ctx.device,
                z_tv=params["z_tv"], **options)
        finally:
            bar.close()

    first = results[methods[0]]
    summary: dict[str, Any] = {"input": label, "input_kind": volume.kind, **acquisition.settings,
                               "prior": prior_label, "preset": params["preset"],
                               "batch_size": first.settings["batch_size"], "processes": ctx.world_size,
                               "settings": {method: config.to_dict() for method, config in configs.items()}}
    if acquisition.truth is not None:
        summary["data_range_hu"] = list(EVAL_HU_RANGE)
        summary["metrics_note"] = (f"Per slice: PSNR/SSIM on HU clipped to {list(EVAL_HU_RANGE)}, RMSE in HU, at the "
                                   f"{acquisition.image_size}x{acquisition.image_size} working resolution; 'mean' "
                                   "averages them; 'consistency' scores the stacked volume's planes.")
    if params["z_tv"] is not None:
        summary["z_tv"] = first.z_tv
    summary["warnings"] = safety.warnings
    written = write_volume_outputs(out, results, volume, force=params["force"], anonymize=anonymize, window=window,
                                   summary=safety.public(summary), truth=acquisition.truth,
                                   burned_in_annotation=safety.burned_in_annotation)
    if ctx.is_main and not params["keep_work"]:
        shutil.rmtree(work, ignore_errors=True)
    shutdown_distributed()
    if written is not None and not params["quiet"]:
        scores = []
        for method, result in results.items():
            psnr = result.metrics()["mean"].get("psnr")
            scores.append(f"{method} {psnr:.2f} dB" if psnr is not None else method)
        click.echo(f"Wrote {len(indices)} slice(s) of {', '.join(scores)} to {written}"
                   + (f" ({ctx.world_size} processes)" if ctx.world_size > 1 else ""), err=True)


__all__ = ["reconstruct_volume_cli", "reject_volume_options", "default_work_dir", "VOLUME_ONLY_OPTIONS"]
