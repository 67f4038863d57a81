"""The ``ctbird`` command line: ``reconstruct``, ``restore`` and ``train-prior``.

Every command validates its options and its output folder before doing any work, writes all
results into a temporary folder next to ``--out`` and renames it into place only when everything
succeeded, so an error (or Ctrl-C) never leaves half-written output. ctbird's and the operators'
errors are printed as one ``Error: ...`` line with exit code 1.

The science lives in the library; a command reads like its data flow: parse the options -> settings
(:mod:`ctbird.config`) -> read the input or simulate an acquisition (:func:`ctbird.simulate.simulate`) ->
:func:`ctbird.reconstruct` / :func:`ctbird.restore` -> score (:func:`ctbird.metrics.score_ct`) -> write the outputs
-> one summary line.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from operators.errors import OperatorError

from .cli_calibration import (calibrate_acquisition, calibration_options, check_calibration_options,
                              simulated_errors, write_calibrated_geometry)
from .config import METHOD_CONFIGS, PRESETS, RESTORE_TASKS, BirdConfig, RefineConfig, Settings, resolve_preset
from .errors import ConfigError, CtbirdError, InputError
from .units import EVAL_HU_RANGE, WINDOWS

METHODS = tuple(METHOD_CONFIGS)
NUMPY_SUFFIXES = (".npy", ".npz")
#: Working size when no prior fixes it (FBP/SIRT/TV only): the prior's usual size, or the input if smaller.
DEFAULT_WORKING_SIZE = 256
#: Colour limit (HU) of the absolute-error maps in comparison.png.
CT_ERROR_RANGE_HU = 200.0


# --------------------------------------------------------------------------------------- helpers
def _fail(exc: BaseException) -> click.ClickException:
    return click.ClickException(" ".join(str(exc).split()) or type(exc).__name__)


@contextlib.contextmanager
def _errors_as_click() -> Iterator[None]:
    """Turn ctbird/operators errors into one-line ``Error: ...`` messages with exit code 1."""
    try:
        yield
    except (CtbirdError, OperatorError) as exc:
        raise _fail(exc) from exc


def _progress(iterable, *, quiet: bool, **kwargs):
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal.
    return tqdm(iterable, disable=True if quiet else None, file=sys.stderr, leave=False, **kwargs)


@contextlib.contextmanager
def _step_bar(*, quiet: bool, desc: str, total: int | None) -> Iterator[Any]:
    """A progress bar advanced by the library's per-iteration ``callback`` (any arguments)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, disable=True if quiet else None, file=sys.stderr, leave=False, unit="it") as bar:
        yield lambda *args, **kwargs: bar.update(1)


def _resolve_device(device: str) -> str:
    from .api import resolve_device

    return str(resolve_device(device))


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(f"--method must be a comma-separated list of {', '.join(METHODS)}; got {text!r}.")
    return list(dict.fromkeys(methods))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return json.dumps(str(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(config: dict[str, Any], header: str = "", tables: dict[str, dict[str, Any]] | None = None) -> str:
    """Serialize a flat mapping of scalars/lists, then ``[name]`` tables, to TOML (``None`` values become comments)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, values in [(None, config), *(tables or {}).items()]:
        if name is not None:
            lines.append(f"\n[{_toml_key(name)}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (none)" if name else f"# {key} = (library default)")
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _apply_config_file(ctx: click.Context, config_path: str | None,
                       tables: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Merge: built-in defaults < ``--config`` TOML < flags given on the command line.

    Returns ``(options, settings tables)``: a TOML table named in ``tables`` (``[bird]``, ``["bird-raw"]``...)
    holds settings of that method, checked by its settings class; any other key must be an option.
    """
    import tomllib
    from click.core import ParameterSource

    params = dict(ctx.params)
    found: dict[str, dict[str, Any]] = {}
    if not config_path:
        return params, found
    path = Path(config_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from exc
    by_name = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    allowed = sorted(n.replace("_", "-") for n in by_name if n not in ("config",))
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in tables:
                headers = ", ".join(f"[{_toml_key(t)}]" for t in tables) or "none"
                raise ConfigError(f"Unknown table [{_toml_key(key)}] in {path}; settings tables: {headers}.")
            found[key] = value
            continue
        name = key.replace("-", "_")
        if name not in by_name or name == "config":
            raise ConfigError(f"Unknown key {key!r} in {path}; allowed keys: {', '.join(allowed)}"
                              + (f", and the tables {', '.join(f'[{_toml_key(t)}]' for t in tables)}." if tables else "."))
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        try:
            params[name] = by_name[name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigError(f"{path}: invalid value for {key!r}: {exc.message}") from exc
    return params, found


def _settings_from_table(cls: type[Settings], base: Settings, table: dict[str, Any] | None, where: str) -> Settings:
    """``base`` with a ``--config`` table's settings applied (unknown names and bad values name the table)."""
    if not table:
        return base
    try:
        cls._check_names(table)
        return base.replace(**table)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _as_numpy(value) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _default_out(input_path: Path, anonymize: bool = False) -> Path:
    stem = input_path.name if input_path.is_dir() else input_path.stem
    # under --anonymize the default folder is not named after the input (file names are often the patient's)
    return Path.cwd() / "ctbird-out" / ("input" if anonymize else stem or "input")


def _check_out(out: str | None, input_paths: list[Path], force: bool, anonymize: bool = False) -> Path:
    from .io import check_output_dir

    return check_output_dir(out if out else _default_out(input_paths[0], anonymize), force=force,
                            inputs=tuple(input_paths))


# ----------------------------------------------------------------------------------- the group
class _Group(click.Group):
    """Registers ``train-prior`` lazily so the CLI works (and starts fast) without training extras."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "train-prior"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name != "train-prior":
            return super().get_command(ctx, name)
        try:
            from .training import train_prior_command
        except ImportError as exc:
            message = f"train-prior is unavailable: {exc}. Install the training dependencies (accelerate, diffusers)."

            @click.command("train-prior", help="Train a CT diffusion prior (unavailable: missing dependencies).",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable() -> None:
                raise click.ClickException(message)

            return unavailable
        return train_prior_command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ctbird")
def main() -> None:
    """ctbird: sparse-view CT reconstruction and blind image restoration with diffusion priors (BIRD)."""


# ---------------------------------------------------------------------------------- reconstruct
@dataclass
class _Study:
    """What ``reconstruct`` works on: an image with ground truth, or a measured sinogram."""

    label: str
    input_paths: list[Path]
    hu: np.ndarray | None = None                      # [H, W] input-resolution ground truth
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    source_header: Any = None                         # pydicom Dataset of the slice, or None
    sinogram: np.ndarray | None = None                # [views, det] measured
    geometry: Any = None
    image_size: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _pick_slice(stack: np.ndarray, choice: int | None, label: str) -> int:
    count = stack.shape[0]
    index = count // 2 if choice is None else choice
    if not 0 <= index < count:
        raise InputError(f"--slice {choice} is out of range: {label} has {count} slice(s) (0..{count - 1}).")
    return index


def _load_study(input_path: Path, params: dict[str, Any], safety) -> _Study:
    """Read INPUT (``safety``: a :class:`ctbird.cli_safety.RunSafety` naming it and checking its header)."""
    from .io import read_dicom, read_image, read_sinogram
    from .io.images import IMAGE_SUFFIXES
    from .io.plausibility import check_hu_values
    from .io.sinogram import default_image_size, read_geometry_file

    suffix = input_path.suffix.lower()
    label = safety.label(input_path)
    if not input_path.exists():
        raise InputError(f"{input_path} does not exist; pass a DICOM file/folder, PNG, NPY image or sinogram.")
    if params["geometry_file"]:
        if suffix not in NUMPY_SUFFIXES:
            raise InputError(f"--geometry-file goes with a .npy/.npz sinogram, got {input_path.name}.")
        data, geometry = read_sinogram(input_path, params["geometry_file"])
        _, image_size = read_geometry_file(params["geometry_file"])
        if data.ndim == 3:
            data = data[_pick_slice(data, params["slice"], str(input_path))]
        spacing = geometry.pixel_spacing or 1.0
        safety.label(params["geometry_file"], index=2)
        return _Study(label=label, input_paths=[input_path, Path(params["geometry_file"])], sinogram=data,
                      geometry=geometry, image_size=image_size or default_image_size(geometry), spacing_mm=(spacing, spacing))
    if suffix in IMAGE_SUFFIXES:
        image = read_image(input_path)
        grey = image[0] if image.shape[0] == 1 else image.mean(axis=0)
        lo, hi = EVAL_HU_RANGE
        return _Study(label=label, input_paths=[input_path], hu=(lo + (hi - lo) * grey).astype(np.float32),
                      notes={"png_to_hu": f"grey [0, 1] mapped linearly to {list(EVAL_HU_RANGE)} HU"})
    if suffix in NUMPY_SUFFIXES:
        from .io.series import read_hu_stack

        array = read_hu_stack(input_path).hu
        stack = np.asarray(array, dtype=np.float32)
        if not np.isfinite(stack).all():
            raise InputError(f"{input_path} contains NaN or infinite values.")
        check_hu_values(stack, str(input_path))
        index = _pick_slice(stack, params["slice"], str(input_path))
        return _Study(label=label, input_paths=[input_path], hu=stack[index], notes={"slice": index})
    volume = read_dicom(input_path, series_uid=params.get("series"))
    safety.hide_paths(volume.source_paths, label)  # the files of a series folder are named in warnings
    safety.check_burned_in(volume.datasets, source=str(input_path))
    index = _pick_slice(volume.hu, params["slice"], str(input_path))
    return _Study(label=label, input_paths=[input_path], hu=volume.hu[index], spacing_mm=volume.pixel_spacing_mm,
                  source_header=volume.header(index), notes={"slice": index, "slices": volume.n_slices})


@main.command("reconstruct")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--method", default="bird,fbp", show_default=True,
              help=f"Comma-separated methods: {', '.join(METHODS)}.")
@click.option("--views", type=click.IntRange(min=1), default=30, show_default=True,
              help="Simulated projection count (image inputs).")
@click.option("--geometry", type=click.Choice(["parallel", "fan"]), default="parallel", show_default=True,
              help="Simulated beam geometry (image inputs).")
@click.option("--dose", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Incident photons I0 per detector cell for log-Poisson noise (default: noiseless).")
@click.option("--geometry-file", type=click.Path(path_type=Path), default=None,
              help="TOML/JSON geometry: INPUT is then a measured .npy/.npz sinogram (docs/formats.md).")
@click.option("--prior", default=None, help="Prior folder or Hugging Face hub id (default: the shipped CT prior).")
@click.option("--delta-t", type=click.IntRange(min=1), default=None,
              help=f"DDIM step of BIRD's latent search (default {BirdConfig().delta_t}).")
@click.option("--iters", type=click.IntRange(min=1), default=None,
              help="Iterations (default: each method's own; BIRD on CPU uses a faster preset, see --preset).")
@click.option("--preset", type=click.Choice(["auto", "full", "cpu-fast"]), default="auto", show_default=True,
              help=f"BIRD budget: 'full' = the library defaults ({BirdConfig().iters} iterations, refinement in steps "
                   f"of {BirdConfig().refine_delta_t}), 'cpu-fast' = {PRESETS['cpu-fast']['iters']} iterations, "
                   f"refinement in steps of {PRESETS['cpu-fast']['refine_delta_t']}; 'auto' picks cpu-fast on a CPU "
                   "and full on a GPU; --iters/--delta-t override it.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Independent BIRD runs (default 1); >1 gives an uncertainty (std) map.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--slice", "slice", type=click.IntRange(min=0), default=None,
              help="Slice index of a multi-slice input (default: the middle slice).")
@click.option("--series", default=None, help="SeriesInstanceUID to read from a folder holding several series.")
# volumes (ctbird.cli_volume; docs/scaling.md)
@click.option("--slices", default=None,
              help="Reconstruct a volume: 'all', START:STOP or i,j,k of a DICOM series/multi-frame file, a 3-D .npy "
                   "or a [slices, views, detectors] sinogram; writes <method>.npy [S, H, W], a derived DICOM series "
                   "<method>/, per-slice metrics and volume.png. Runs sharded under torchrun.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="With --slices: slices per batch (default: from the free memory).")
@click.option("--resume", is_flag=True, default=False,
              help="With --slices: continue an interrupted run from its work folder (same options).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="With --slices: where finished slices are kept (default <out>.work beside --out).")
@click.option("--keep-work", is_flag=True, default=False,
              help="With --slices: keep the work folder after a successful run (it is removed otherwise).")
@click.option("--z-tv", type=click.FloatRange(min=0), default=None,
              help="With --slices: refine the volume with total variation along z of this weight (e.g. 0.03).")
@click.option("--window", default="wide", show_default=True,
              help=f"Display window of the PNGs: {'|'.join(WINDOWS)} or LO,HI in HU.")
@click.option("--anonymize/--no-anonymize", default=False, show_default=True,
              help="De-identify every output: DICOM by the PS3.15 Basic Profile; no input name or path in "
                   "metrics.json, config.toml or figures (docs/security.md).")
@click.option("--accept-burned-in-annotation", is_flag=True, default=False,
              help="With --anonymize: process a source that declares text burned into its pixels (outputs then "
                   "say BurnedInAnnotation YES); refused without it.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default ./ctbird-out/<input stem>).")
@click.option("--force", is_flag=True, default=False, help="Replace an existing ctbird output folder.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars or summary.")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="TOML file with any of these options (flags given here override it) and tables of method "
                   "settings, e.g. [bird] lr_latent = 0.01 (ctbird.config; --iters/--delta-t/--samples win).")
@calibration_options
@click.pass_context
def reconstruct_command(ctx: click.Context, input_path: Path, config: Path | None, **_: Any) -> None:
    """Reconstruct a CT slice from few views.

    INPUT is a DICOM file or series folder, a PNG, or an NPY image in HU: a sparse-view acquisition
    is simulated from it and each method is scored against it (PSNR/SSIM on HU clipped to
    [-1000, 1000], RMSE in HU). With --geometry-file, INPUT is a measured sinogram instead (no scores).
    With --slices, a whole volume, also sharded over processes under torchrun (docs/scaling.md).
    """
    with _errors_as_click():
        params, tables = _apply_config_file(ctx, str(config) if config else None, tables=METHODS)
        from .cli_volume import reconstruct_volume_cli, reject_volume_options

        if params["slices"] is not None:
            reconstruct_volume_cli(input_path, params, tables)
        else:
            reject_volume_options(params)
            _reconstruct(input_path, params, tables)


def _method_settings(method: str, params: dict[str, Any], table: dict[str, Any] | None = None) -> Settings:
    """The settings of ``method`` for a ``reconstruct`` run: its defaults (BIRD: under ``params["preset"]``, already
    resolved), then a ``--config`` table, then ``--iters``/``--delta-t``/``--samples`` where the method has them."""
    cls = METHOD_CONFIGS[method]
    base = cls.preset(params["preset"]) if issubclass(cls, BirdConfig) else cls()
    config = _settings_from_table(cls, base, table, f"[{method}] in {params.get('config')}")
    flags = {"iters": params["iters"], "delta_t": params["delta_t"], "n_samples": params["samples"]}
    return config.replace(**{k: v for k, v in flags.items() if v is not None and k in cls.keys()})


def _reconstruct(input_path: Path, params: dict[str, Any], tables: dict[str, dict[str, Any]]) -> None:
    from .cli_safety import RunSafety
    from .io import atomic_output_dir, resolve_window
    from .limits import check_dose, check_sizes

    methods = _parse_methods(params["method"])
    window = resolve_window(params["window"])
    device = _resolve_device(params["device"])
    params["preset"] = resolve_preset(params["preset"], device)
    configs = {method: _method_settings(method, params, tables.get(method)) for method in methods}
    estimate = check_calibration_options(params)
    quiet = params["quiet"]
    safety = RunSafety(params["anonymize"], params["accept_burned_in_annotation"])
    if not params["geometry_file"]:
        check_sizes(views=params["views"])
    safety.hide([params["series"]] if params["series"] else [])
    input_path = input_path.expanduser()
    inputs = [input_path] + ([Path(params["geometry_file"])] if params["geometry_file"] else [])
    out = _check_out(params["out"], inputs, params["force"], params["anonymize"])
    with safety.collecting():
        study = _load_study(input_path, params, safety)
    if study.sinogram is None:
        safety.warn(check_dose(params["dose"]))
    prior, prior_label = _load_prior(params["prior"], methods, device)
    _check_reconstruct_limits(study, params, prior, methods, device, out)
    acquisition = _acquire(study, params, prior)
    acquisition, calibration = calibrate_acquisition(acquisition, estimate, device=device)  # once for all methods

    from . import api
    from .methods import get_method

    results: dict[str, Any] = {}
    for method in _progress(methods, quiet=quiet, desc="reconstruct", unit="method"):
        iterative = get_method(method).needs_prior
        total = get_method(method).progress_steps(configs[method]) if iterative else None
        with _step_bar(quiet=quiet or not iterative, desc=method, total=total) as callback:
            results[method] = api.reconstruct(
                acquisition.sinogram, acquisition.geometry, image_size=acquisition.image_size,
                pixel_spacing_mm=acquisition.pixel_spacing_mm, prior=prior, method=method, config=configs[method],
                seed=params["seed"], device=device, callback=callback)

    summary = _reconstruct_metrics(study, params, acquisition, prior_label, results)
    summary["warnings"] = safety.warnings
    if calibration is not None:
        summary["calibration"] = calibration
    with atomic_output_dir(out, force=params["force"]) as staging:
        _write_reconstruct_outputs(staging, study, params, results, summary, acquisition, window, configs, safety)
        write_calibrated_geometry(staging, acquisition, calibration)
    if not quiet:
        click.echo(f"Wrote {', '.join(methods)} results to {out}", err=True)


def _load_prior(source: str | None, methods: list[str], device: str):
    """``(prior, label)`` when a method needs the diffusion prior, else ``(None, None)``."""
    from .methods import get_method

    if not any(get_method(m).needs_prior for m in methods):
        return None, None
    from .priors import default_prior_path, load_prior

    return load_prior(source, device=device), str(source) if source else str(default_prior_path())


@dataclass(frozen=True)
class _Acquisition:
    """What the methods reconstruct: a simulated or a measured sinogram, and where the output goes."""

    sinogram: Any                       # Tensor [1, 1, views, detectors]
    geometry: Any
    image_size: int
    pixel_spacing_mm: float
    truth_hu: np.ndarray | None         # [N, N] ground truth of a simulation
    output_shape: tuple[int, int]       # the input's shape (simulations) or the grid
    output_spacing_mm: tuple[float, float]
    settings: dict[str, Any]


def _working_grid(study: _Study, params: dict[str, Any], prior) -> tuple[Any, int]:
    """``(geometry, image_size)`` the methods will work on: the measured sinogram's, or the simulation's (on the
    prior's grid, else at most ``DEFAULT_WORKING_SIZE``)."""
    if study.sinogram is not None:
        return study.geometry, study.image_size
    from .simulate import simulation_geometry

    size = prior.image_size if prior is not None else min(DEFAULT_WORKING_SIZE, max(study.hu.shape))
    return simulation_geometry(params["geometry"], params["views"], size), size


def _check_reconstruct_limits(study: _Study, params: dict[str, Any], prior, methods: list[str], device: str,
                              out: Path) -> None:
    """Refuse, before simulating or reconstructing, a run whose memory or disk estimate cannot fit."""
    from .cli_safety import check_run_limits

    geometry, size = _working_grid(study, params, prior)
    check_run_limits(views=geometry.views, detectors=geometry.detector_count(size), image_size=size, methods=methods,
                     device=device, out=out, prior_size=prior.image_size if prior is not None else None)


def _acquire(study: _Study, params: dict[str, Any], prior) -> _Acquisition:
    """Simulate the acquisition of an image on the working grid (:func:`_working_grid`), or wrap the measured
    sinogram."""
    import torch

    if study.sinogram is None:
        from .simulate import simulate, simulation_geometry

        height, width = study.hu.shape
        _, size = _working_grid(study, params, prior)
        geometry = simulation_geometry(params["geometry"], params["views"], size, **simulated_errors(params))
        simulated = simulate(study.hu, image_size=size, pixel_spacing_mm=study.spacing_mm, geometry=geometry,
                             dose=params["dose"], seed=params["seed"])
        return _Acquisition(simulated.sinogram, simulated.nominal_geometry, size, simulated.pixel_spacing_mm,
                            simulated.truth_hu, (height, width), study.spacing_mm, simulated.settings())
    geometry, size = study.geometry, study.image_size
    if prior is not None and prior.image_size != size:
        raise InputError(f"The geometry's image_size is {size} but the prior works at {prior.image_size}; "
                         f"set image_size = {prior.image_size} in {params['geometry_file']} or use another prior.")
    pixel_mm = geometry.pixel_spacing or 1.0
    return _Acquisition(torch.from_numpy(study.sinogram)[None, None], geometry, size, pixel_mm, None, (size, size),
                        (pixel_mm, pixel_mm), {"views": int(geometry.views), "geometry": geometry.to_dict(),
                                               "image_size": size, "pixel_spacing_mm": pixel_mm,
                                               "dose_I0": params["dose"], "seed": params["seed"]})


def _reshape_optional(value, size: int) -> np.ndarray | None:
    array = _as_numpy(value)
    return None if array is None else array.reshape(-1, size, size)[0]


def _run_record(result) -> dict[str, Any]:
    """A method's entry in metrics.json: time, UNet evaluations and the settings it ran with."""
    entry: dict[str, Any] = {"seconds": round(result.seconds, 3), "nfe": result.nfe}
    settings = result.config.to_dict()
    if "iters_run" in result.info:
        settings["iters"] = result.info["iters_run"]
    for key in ("delta_t", "grad_mode"):
        if getattr(result, key) is not None:
            settings[key] = getattr(result, key)
    return {**entry, **settings}


def _reconstruct_metrics(study: _Study, params, acquisition: _Acquisition, prior_label, results) -> dict:
    from .metrics import score_ct, uncertainty_calibration

    size = acquisition.image_size
    summary: dict[str, Any] = {"input": study.label, **acquisition.settings, "prior": prior_label,
                               "preset": params["preset"], "methods": {}}
    if acquisition.truth_hu is not None:
        summary["data_range_hu"] = list(EVAL_HU_RANGE)
        summary["metrics_note"] = (f"PSNR/SSIM on HU clipped to {list(EVAL_HU_RANGE)}; RMSE in HU on values clipped to "
                                   f"the prior window; all at the {size}x{size} working resolution.")
    summary.update(study.notes)
    for method, result in results.items():
        entry = _run_record(result)
        if acquisition.truth_hu is not None:
            image = _as_numpy(result.image).reshape(-1, size, size)[0]
            entry.update(score_ct(image, acquisition.truth_hu, data_range=EVAL_HU_RANGE))
            if result.uncertainty is not None:  # does the restarts' std predict the error?
                entry["uncertainty"] = uncertainty_calibration(image, _reshape_optional(result.uncertainty, size),
                                                               acquisition.truth_hu, data_range=EVAL_HU_RANGE)
        summary["methods"][method] = entry
    return summary


def _write_reconstruct_outputs(staging: Path, study: _Study, params, results, summary, acquisition: _Acquisition,
                               window, configs: dict[str, Settings], safety) -> None:
    from pydicom.uid import generate_uid

    from .figures import comparison_figure
    from .io import from_working_size, write_derived_dicom, write_png, write_text_atomic

    size = acquisition.image_size
    images = {m: _as_numpy(r.image).reshape(-1, size, size)[0] for m, r in results.items()}
    stds = {m: _reshape_optional(r.uncertainty, size) for m, r in results.items()}
    for method, working in images.items():
        image = from_working_size(working, acquisition.output_shape)
        np.save(staging / f"{method}.npy", image.astype(np.float32))
        write_png(image, staging / f"{method}.png", window=window)
        write_derived_dicom(image, study.source_header, staging / f"{method}.dcm", method_name=method,
                            pixel_spacing_mm=acquisition.output_spacing_mm, series_uid=generate_uid(), window=window,
                            description=f"ctbird {method} reconstruction from {summary['views']} views",
                            **safety.dicom_options())
        if stds[method] is not None:
            std = from_working_size(stds[method], acquisition.output_shape)
            np.save(staging / f"{method}_std.npy", std.astype(np.float32))
    sinogram = acquisition.sinogram
    measured = _as_numpy(sinogram).reshape(-1, *sinogram.shape[-2:])[0]
    np.save(staging / "sinogram.npy", measured)
    write_text_atomic(staging / "geometry.json", json.dumps(summary["geometry"], indent=2) + "\n")
    public_summary = safety.public(json.loads(json.dumps(summary, default=_json_default)))
    write_text_atomic(staging / "metrics.json", json.dumps(public_summary, indent=2) + "\n")
    figure = comparison_figure(images, reference=acquisition.truth_hu, window=window, metrics=summary["methods"],
                               uncertainty=stds, sinogram=measured, error_range=CT_ERROR_RANGE_HU,
                               title=f"{study.label}: {summary['views']} views")
    (staging / "comparison.png").write_bytes(figure)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items() if k not in ("config",)}
    write_text_atomic(staging / "config.toml", to_toml(safety.public({"input": study.label, **options}),
                                                       header="ctbird reconstruct: resolved configuration",
                                                       tables={m: c.to_dict() for m, c in configs.items()}))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# -------------------------------------------------------------------------------------- restore
@main.command("restore")
@click.argument("image_path", metavar="IMAGE", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(RESTORE_TASKS), default=None, help="Degradation to undo (required).")
@click.option("--blind/--no-blind", default=True, show_default=True, help="Estimate the degradation's parameters.")
@click.option("--prior", default=None, help="Prior folder or Hugging Face hub id trained on photographs (required).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Ground-truth image: adds PSNR/SSIM (data range [0, 1]) to metrics.json.")
@click.option("--simulate", is_flag=True, default=False,
              help="IMAGE is clean: degrade it as the benchmarks do (ctbird.simulate.degrade_image, seeded by --seed), "
                   "restore that and score every method and the degraded input against IMAGE; also writes "
                   "observed.png/.npy and the true kernel.")
@click.option("--sr-factor", type=click.IntRange(min=2), default=8, show_default=True,
              help="Super-resolution factor (--task sr; IMAGE is the low-resolution image unless --simulate).")
@click.option("--kernel", default=None,
              help="Known blur for --no-blind deblurring: a Gaussian sigma in pixels or a .npy [k, k] kernel.")
@click.option("--mask", type=click.Path(path_type=Path), default=None,
              help="Inpainting mask (--task inpaint): PNG/NPY, nonzero where pixels are observed.")
@click.option("--method", "restore_methods", default="bird", show_default=True,
              help="Comma-separated methods: bird and the task's classical baselines (wiener, richardson-lucy for "
                   "deblurring, with BIRD's kernel when bird runs too; l0-blind for motion deblurring, with its own "
                   "kernel; bicubic; tv; biharmonic).")
@click.option("--delta-t", type=click.IntRange(min=1), default=None,
              help="DDIM step of the BIRD chain (default: the task's, 100).")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Iterations (default: the task's own).")
@click.option("--preset", "restore_preset", type=click.Choice(["auto", "full", "cpu-fast"]), default="auto",
              show_default=True, help="BIRD budget: auto = cpu-fast on a CPU (ctbird.config.RESTORE_CPU_BUDGET).")
@click.option("--refine/--no-refine", default=True, show_default=True,
              help="Refine BIRD's image by the DDS chain with its estimated operator frozen (ctbird.config.RefineConfig; "
                   "settings in a [refinement] table of --config).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--anonymize/--no-anonymize", default=False, show_default=True,
              help="Name no input file or path in metrics.json, config.toml or the figure (docs/security.md).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default ./ctbird-out/<image stem>).")
@click.option("--force", is_flag=True, default=False, help="Replace an existing ctbird output folder.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars or summary.")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="TOML file with any of these options and a [bird] table of BIRD settings (ctbird.config).")
@click.pass_context
def restore_command(ctx: click.Context, image_path: Path, config: Path | None, **_: Any) -> None:
    """Restore a degraded image (deblur, super-resolve, denoise, inpaint) with BIRD and classical baselines.

    IMAGE is a PNG/JPEG/TIFF picture or a CT DICOM file/folder (its middle slice; the output then also holds
    restored.dcm, a derived DICOM in HU)."""
    with _errors_as_click():
        params, tables = _apply_config_file(ctx, str(config) if config else None, tables=("bird", "refinement"))
        _restore(image_path.expanduser(), params, tables.get("bird"), tables.get("refinement"))


def _restore_operator_inputs(params: dict[str, Any], shape: tuple[int, int]):
    """``(kernel, mask)`` for :func:`ctbird.restore` from ``--kernel`` and ``--mask``."""
    import torch

    from .io import read_image

    kernel = None
    task = params["task"]
    if task in ("gaussian-deblur", "motion-deblur") and not params["blind"]:
        text = params["kernel"]
        if text is None:
            raise ConfigError("--no-blind deblurring needs --kernel: a Gaussian sigma in pixels or a .npy kernel file.")
        try:
            kernel = float(text)
        except ValueError:
            path = Path(text)
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"--kernel {text}: not a number and not a readable .npy kernel ({exc}).") from exc
            if array.ndim != 2 or array.dtype.kind not in "fiu" or not np.isfinite(array).all() or array.sum() <= 0:
                raise InputError(f"--kernel {text}: expected a finite non-negative [k, k] array, got shape {array.shape}.")
            kernel = torch.from_numpy((array / array.sum()).astype(np.float32))
    mask = None
    if task == "inpaint":
        if params["mask"] is None:
            raise ConfigError("--task inpaint needs --mask: a PNG/NPY image, nonzero where pixels are observed.")
        path = Path(params["mask"])
        if path.suffix.lower() == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"--mask {path}: not a readable .npy file ({exc}).") from exc
        else:
            array = read_image(path).max(axis=0)
        array = np.asarray(array).squeeze()
        if array.shape != tuple(shape):
            raise InputError(f"--mask is {array.shape} but the image is {tuple(shape)}; they must match.")
        mask = torch.from_numpy((array > 0).astype(np.float32))
    return kernel, mask


def _simulate_restore_input(clean: np.ndarray, params: dict[str, Any]):
    """``(reference, observed, true kernel or None, mask or None)`` of ``restore --simulate``: the clean image
    ``[C, H, W]`` degraded by :func:`ctbird.simulate.degrade_image` (seed ``--seed``)."""
    import torch

    from .simulate import degrade_image

    given = [name for name in ("reference", "mask", "kernel") if params[name] is not None]
    if given:
        raise ConfigError(f"--simulate makes its own reference, mask and kernel; drop --{', --'.join(given)}.")
    case = degrade_image(params["task"], torch.from_numpy(clean), sr_factor=params["sr_factor"], seed=params["seed"])
    return clean, case["y"][0].numpy(), case.get("kernel"), case.get("mask")


def _kernel_file(text: str | None) -> str | None:
    """``--kernel`` when it names a file (not a Gaussian sigma)."""
    try:
        float(text)
    except (TypeError, ValueError):
        return text
    return None


def _restore(image_path: Path, params: dict[str, Any], table: dict[str, Any] | None,
             refine_table: dict[str, Any] | None = None) -> None:
    import torch

    from .cli_safety import RunSafety
    from .io import atomic_output_dir, write_png, write_text_atomic
    from .limits import check_sizes

    if params["task"] is None:
        raise ConfigError(f"--task is required: one of {', '.join(RESTORE_TASKS)}.")
    device = _resolve_device(params["device"])
    params["restore_preset"] = resolve_preset(params["restore_preset"], device)
    defaults = BirdConfig.for_task(params["task"], params["restore_preset"])
    config = _settings_from_table(BirdConfig, defaults, table, f"[bird] in {params['config']}")
    config = config.with_overrides(iters=params["iters"], delta_t=params["delta_t"])
    refine = (_settings_from_table(RefineConfig, RefineConfig.for_task(params["task"]), refine_table,
                                   f"[refinement] in {params['config']}") if params["refine"] else False)
    methods = _restore_methods(params["task"], params["restore_methods"])
    if "bird" in methods and not params["prior"]:
        raise ConfigError("--prior is required for restore: a diffusers folder or hub id of a photograph prior.")
    inputs = [image_path] + ([Path(params["reference"])] if params["reference"] else [])
    out = _check_out(params["out"], inputs, params["force"], params["anonymize"])
    safety = RunSafety(params["anonymize"])
    label = safety.label(image_path)
    for index, extra_input in enumerate((params["reference"], params["mask"], _kernel_file(params["kernel"])), start=2):
        if extra_input is not None:
            safety.label(extra_input, index=index)
    with safety.collecting():
        observed, source = _read_restore_input(image_path)
        reference = _read_restore_input(Path(params["reference"]))[0] if params["reference"] else None
    if source is not None:
        safety.check_burned_in(source[0], source=label)
    factor = params["sr_factor"] if params["task"] == "sr" and not params["simulate"] else 1
    check_sizes(image_size=max(observed.shape[-2:]) * factor)
    true_kernel = None
    if params["simulate"]:
        reference, observed, true_kernel, mask_arg = _simulate_restore_input(observed, params)
        kernel_arg = true_kernel if params["task"] in ("gaussian-deblur", "motion-deblur") and not params["blind"] else None
    else:
        kernel_arg, mask_arg = _restore_operator_inputs(params, observed.shape[-2:])
    from . import api

    if "bird" in methods:
        from .priors import load_prior

        prior = load_prior(params["prior"], device=device)
        if observed.shape[0] != prior.channels:
            observed = (np.repeat(observed, prior.channels, axis=0) if observed.shape[0] == 1
                        else observed.mean(0, keepdims=True))
        with _step_bar(quiet=params["quiet"], desc=f"restore ({params['task']})", total=config.iters) as callback:
            result = api.restore(torch.from_numpy(observed)[None], params["task"], prior=prior, blind=params["blind"],
                                 sr_factor=params["sr_factor"], kernel=kernel_arg, mask=mask_arg, config=config,
                                 refine=refine, seed=params["seed"], device=device, callback=callback)
    else:
        result = None
    baselines = _restore_baselines(methods, observed, params, kernel_arg, mask_arg, result)
    primary = result if result is not None else baselines[methods[0]]
    restored = _as_numpy(primary.image)[0]
    kernel = _as_numpy(primary.kernel)
    summary: dict[str, Any] = {"input": label, "task": params["task"], "blind": params["blind"],
                               "methods": methods, "preset": params["restore_preset"],
                               "prior": str(params["prior"]) if result is not None else None,
                               "seed": params["seed"], "seconds": round(primary.seconds, 3),
                               "nfe": result.nfe if result is not None else 0,
                               "iters_run": result.iters_run if result is not None else 0,  # 0: BIRD's search skipped
                               "settings": result.config.to_dict() if result is not None else None,
                               "search_noise_floor": result.search_noise_floor if result is not None else None,
                               "search_misfit": result.search_misfit if result is not None else None,
                               "warm_start": result.warm_start if result is not None else None,
                               "initial_width_px": result.initial_width if result is not None else None,
                               "padding": result.padding if result is not None else None,
                               "refine": (result.refine.to_dict() if result.refine is not None else None)
                               if result is not None else None}
    if true_kernel is not None and kernel is not None and params["blind"]:
        from .metrics import kernel_error, kernel_sigma

        estimate = kernel.reshape(kernel.shape[-2:])
        summary["kernel"] = {"error": kernel_error(estimate, true_kernel), "sigma_px": kernel_sigma(estimate),
                             "true_sigma_px": kernel_sigma(true_kernel)}
    if params["task"] == "denoise":
        from .restoration_baselines import estimate_noise_sigma

        summary["noise_sigma_estimate"] = {"wavelet": estimate_noise_sigma(observed)}
        if result is not None:
            summary["noise_sigma_estimate"]["bird_residual"] = float(np.std(observed - restored))
    if reference is not None:
        from .metrics import psnr, ssim

        if reference.shape[-2:] != restored.shape[-2:]:
            raise InputError(f"--reference is {reference.shape[-2]}x{reference.shape[-1]} but the restored image is "
                             f"{restored.shape[-2]}x{restored.shape[-1]}; they must match.")
        if reference.shape[0] != restored.shape[0]:
            reference = np.repeat(reference, restored.shape[0], 0) if reference.shape[0] == 1 else reference.mean(0, keepdims=True)
        summary["data_range"] = [0.0, 1.0]
        summary["psnr"] = psnr(restored, reference, data_range=(0.0, 1.0))
        if min(restored.shape[-2:]) >= 11:
            summary["ssim"] = ssim(restored, reference, data_range=(0.0, 1.0))
        scored = {"input": observed} if observed.shape[-2:] == reference.shape[-2:] else {}
        scored.update({name: _as_numpy(b.image)[0] for name, b in baselines.items()})
        summary["scores"] = {name: {"psnr": psnr(image, reference, data_range=(0.0, 1.0)),
                                    **({"ssim": ssim(image, reference, data_range=(0.0, 1.0))}
                                       if min(image.shape[-2:]) >= 11 else {})}
                             for name, image in scored.items()}
    summary["warnings"] = safety.warnings
    with atomic_output_dir(out, force=params["force"]) as staging:
        np.save(staging / "restored.npy", restored.astype(np.float32))
        write_png(restored, staging / "restored.png")
        if source is not None:
            _write_restored_dicom(restored, source, staging / "restored.dcm", params, safety.dicom_options())
        extra = {}
        if kernel is not None:
            kernel2d = kernel.reshape(kernel.shape[-2:]) if kernel.ndim >= 2 and np.prod(kernel.shape[:-2]) == 1 else kernel
            np.save(staging / "kernel.npy", kernel2d.astype(np.float32))
            peak = float(np.max(kernel2d)) if kernel2d.size else 0.0
            write_png(kernel2d / peak if peak > 0 else kernel2d, staging / "kernel.png")
            extra["estimated kernel" if params["blind"] else "kernel"] = kernel2d
        if true_kernel is not None:
            truth = true_kernel.numpy()
            np.save(staging / "true_kernel.npy", truth.astype(np.float32))
            write_png(truth / truth.max(), staging / "true_kernel.png")
            extra["true kernel"] = truth
        if params["simulate"]:
            np.save(staging / "observed.npy", observed.astype(np.float32))
            write_png(observed, staging / "observed.png")
        uncertainty = _as_numpy(result.uncertainty) if result is not None else None
        if uncertainty is not None:
            np.save(staging / "restored_std.npy", uncertainty[0])
        from .figures import comparison_figure

        metrics = {"restored": {k: summary[k] for k in ("psnr", "ssim") if k in summary}}
        images = {"observed": observed if observed.shape[-2:] == restored.shape[-2:] else None, "restored": restored}
        for name, baseline in baselines.items():
            if baseline is not primary:
                image = _as_numpy(baseline.image)[0]
                np.save(staging / f"{name}.npy", image.astype(np.float32))
                write_png(image, staging / f"{name}.png")
                images[name] = image
                metrics[name] = summary.get("scores", {}).get(name, {})
        summary["baseline_seconds"] = {name: round(b.seconds, 3) for name, b in baselines.items()}
        figure = comparison_figure({k: v for k, v in images.items() if v is not None}, reference=reference,
                                   window=(0.0, 1.0), metrics=metrics, extra=extra, unit="[0,1]", error_range=0.25,
                                   title=f"{label}: {params['task']}")
        (staging / "comparison.png").write_bytes(figure)
        public_summary = safety.public(json.loads(json.dumps(summary, default=_json_default)))
        write_text_atomic(staging / "metrics.json", json.dumps(public_summary, indent=2) + "\n")
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items() if k != "config"}
        write_text_atomic(staging / "config.toml", to_toml(safety.public({"input": label, **options}),
                                                           header="ctbird restore: resolved configuration",
                                                           tables={"bird": result.config.to_dict(),
                                                                   **({"refinement": result.refine.to_dict()}
                                                                      if result.refine is not None else {})}
                                                           if result else {}))
    if not params["quiet"]:
        click.echo(f"Wrote the restored image to {out}", err=True)


def _read_restore_input(path: Path) -> tuple[np.ndarray, Any]:
    """``(image [C, H, W] in [0, 1], source)`` of a restore input: a PNG/JPEG/TIFF picture (``source`` None) or a CT
    DICOM file/folder (its middle slice, HU -> the prior's [0, 1] scale by :mod:`ctbird.units`; ``source`` =
    ``(header, pixel spacing mm)`` for the derived DICOM)."""
    from .io import read_image

    if not (path.is_dir() or path.suffix.lower() in (".dcm", ".dicom", ".ima")):
        return read_image(path), None
    from .io import read_dicom
    from .units import hu_to_image

    volume = read_dicom(path)
    index = volume.n_slices // 2
    return hu_to_image(volume.hu[index].astype(np.float32))[None], (volume.header(index), volume.pixel_spacing_mm)


def _write_restored_dicom(restored: np.ndarray, source: tuple[Any, tuple[float, float]], path: Path,
                          params: dict[str, Any], dicom_options: dict[str, Any]) -> None:
    """The restored image ``[C, H, W]`` on [0, 1] as a derived CT DICOM in HU (SR: spacing divided by the factor);
    ``dicom_options``: the run's de-identification (:meth:`ctbird.cli_safety.RunSafety.dicom_options`)."""
    from .io import write_derived_dicom
    from .units import image_to_hu

    header, spacing = source
    factor = params["sr_factor"] if params["task"] == "sr" and not params["simulate"] else 1
    hu = image_to_hu(restored.mean(axis=0))
    write_derived_dicom(hu.astype(np.float32), header, path, method_name=f"ctbird restore {params['task']}",
                        pixel_spacing_mm=(spacing[0] / factor, spacing[1] / factor), **dicom_options)


def _restore_methods(task: str, text: str) -> list[str]:
    """The methods of ``restore --method``: ``bird`` and the task's baselines (:mod:`ctbird.restoration_baselines`)."""
    from .restoration_baselines import task_baselines

    valid = ("bird", *task_baselines(task))
    methods = list(dict.fromkeys(m.strip().lower() for m in str(text).split(",") if m.strip()))
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise ConfigError(f"--method for --task {task} takes some of {', '.join(valid)}; got {', '.join(bad) or 'nothing'}.")
    return methods


def _restore_baselines(methods: list[str], observed: np.ndarray, params: dict[str, Any], kernel, mask, result) -> dict:
    """``{name: BaselineRestoration}`` of the classical methods in ``methods``; deconvolution uses the known kernel,
    else BIRD's estimate when BIRD ran blind, else a Gaussian of estimated width."""
    import torch

    from .restoration_baselines import gaussian_kernel, run_baseline

    if isinstance(kernel, float):
        kernel = torch.from_numpy(gaussian_kernel(2 * int(np.ceil(3 * kernel)) + 1, kernel))
    if kernel is None and result is not None and result.kernel is not None and params["blind"]:
        kernel = result.kernel[0]
    image = torch.from_numpy(observed)[None]
    return {name: run_baseline(name, image, params["task"], sr_factor=params["sr_factor"], mask=mask, kernel=kernel)
            for name in methods if name != "bird"}


if __name__ == "__main__":
    main()
