"""The ``ctbird`` command line: ``reconstruct``, ``restore`` and ``train-prior``.

Every command validates its options and its output folder before doing any work, writes all
results into a temporary folder next to ``--out`` and renames it into place only when everything
succeeded, so an error (or Ctrl-C) never leaves half-written output. ctbird's and the operators'
errors are printed as one ``Error: ...`` line with exit code 1.

The science lives in the library (:func:`ctbird.reconstruct`, :func:`ctbird.restore`); this module
only reads inputs, simulates acquisitions for images with known ground truth, and writes outputs.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from operators.errors import OperatorError

from .errors import ConfigError, CtbirdError, InputError
from .units import EVAL_HU_RANGE, WINDOWS

METHODS = ("bird", "fbp", "sirt", "tv", "dps", "bird+dc")
PRIOR_METHODS = frozenset({"bird", "dps", "bird+dc"})
#: BIRD budget used on a CPU unless --iters/--delta-t/--preset say otherwise (keeps a 256² run near a minute).
CPU_FAST_PRESET = {"iters": 50, "delta_t": 333}
RESTORE_TASKS = ("gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint")
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
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def to_toml(config: dict[str, Any], header: str = "") -> str:
    """Serialize a flat mapping of scalars/lists to TOML (``None`` values are written as comments)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in config.items():
        if value is None:
            lines.append(f"# {key} = (library default)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _apply_config_file(ctx: click.Context, config_path: str | None) -> dict[str, Any]:
    """Merge: built-in defaults < ``--config`` TOML < flags given on the command line."""
    import tomllib
    from click.core import ParameterSource

    params = dict(ctx.params)
    if not config_path:
        return params
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
        name = key.replace("-", "_")
        if name not in by_name or name == "config":
            raise ConfigError(f"Unknown key {key!r} in {path}; allowed keys: {', '.join(allowed)}.")
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        try:
            params[name] = by_name[name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigError(f"{path}: invalid value for {key!r}: {exc.message}") from exc
    return params


def _call_library(function, arguments: dict[str, Any]):
    """Call a library entry point with the keyword arguments it accepts (``None`` means its default)."""
    signature = inspect.signature(function)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    kwargs = {k: v for k, v in arguments.items() if v is not None and (takes_any or k in signature.parameters)}
    return function(**kwargs)


def _as_numpy(value) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _default_out(input_path: Path) -> Path:
    stem = input_path.name if input_path.is_dir() else input_path.stem
    return Path.cwd() / "ctbird-out" / (stem or "input")


def _check_out(out: str | None, input_paths: list[Path], force: bool) -> Path:
    from .io import check_output_dir

    return check_output_dir(out if out else _default_out(input_paths[0]), force=force, inputs=tuple(input_paths))


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


def _load_study(input_path: Path, params: dict[str, Any]) -> _Study:
    from .io import read_dicom, read_image, read_sinogram
    from .io.images import IMAGE_SUFFIXES
    from .io.sinogram import default_image_size, read_geometry_file

    suffix = input_path.suffix.lower()
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
        return _Study(label=str(input_path), input_paths=[input_path, Path(params["geometry_file"])], sinogram=data,
                      geometry=geometry, image_size=image_size or default_image_size(geometry), spacing_mm=(spacing, spacing))
    if suffix in IMAGE_SUFFIXES:
        image = read_image(input_path)
        grey = image[0] if image.shape[0] == 1 else image.mean(axis=0)
        lo, hi = EVAL_HU_RANGE
        return _Study(label=str(input_path), input_paths=[input_path], hu=(lo + (hi - lo) * grey).astype(np.float32),
                      notes={"png_to_hu": f"grey [0, 1] mapped linearly to {list(EVAL_HU_RANGE)} HU"})
    if suffix in NUMPY_SUFFIXES:
        try:
            array = np.load(input_path, allow_pickle=False)
            if isinstance(array, np.lib.npyio.NpzFile):
                with array:
                    names = list(array.files)
                    key = "hu" if "hu" in names else "images" if "images" in names else names[0] if len(names) == 1 else None
                    if key is None:
                        raise InputError(f"{input_path} holds {names}; store the HU image under 'hu'.")
                    array = array[key]
        except CtbirdError:
            raise
        except Exception as exc:
            raise InputError(f"{input_path} is not a readable NumPy file ({exc}).") from exc
        if array.dtype.kind not in "fiu" or array.ndim not in (2, 3) or min(array.shape) < 1:
            raise InputError(f"{input_path}: expected an HU image [H, W] or a stack [S, H, W], "
                             f"got dtype {array.dtype} shape {array.shape}. For a sinogram pass --geometry-file.")
        stack = array.astype(np.float32)[None] if array.ndim == 2 else array.astype(np.float32)
        if not np.isfinite(stack).all():
            raise InputError(f"{input_path} contains NaN or infinite values.")
        index = _pick_slice(stack, params["slice"], str(input_path))
        return _Study(label=str(input_path), input_paths=[input_path], hu=stack[index], notes={"slice": index})
    volume = read_dicom(input_path, series_uid=params.get("series"))
    index = _pick_slice(volume.hu, params["slice"], str(input_path))
    return _Study(label=str(input_path), input_paths=[input_path], hu=volume.hu[index], spacing_mm=volume.pixel_spacing_mm,
                  source_header=volume.header(index), notes={"slice": index, "slices": volume.n_slices})


def _simulation_geometry(kind: str, views: int, size: int):
    from operators.geometry import FanBeam, ParallelBeam

    if kind == "parallel":
        return ParallelBeam(views=views).resolved(size)
    # Source at 2 N and detector at N from the axis (pixel units): a clinical-like fan of ~29 degrees half-angle.
    return FanBeam(views=views, source_distance=2.0 * size, detector_distance=1.0 * size).resolved(size)


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
              help=f"DDIM step of the BIRD chain (default 100; {CPU_FAST_PRESET['delta_t']} with the CPU preset).")
@click.option("--iters", type=click.IntRange(min=1), default=None,
              help="Iterations (default: each method's own; BIRD on CPU uses a faster preset, see --preset).")
@click.option("--preset", type=click.Choice(["auto", "full", "cpu-fast"]), default="auto", show_default=True,
              help="BIRD budget when --iters/--delta-t are not given: 'full' = the library defaults, 'cpu-fast' = "
                   f"{CPU_FAST_PRESET['iters']} iterations at delta_t={CPU_FAST_PRESET['delta_t']}; 'auto' picks "
                   "cpu-fast on a CPU and full on a GPU.")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent BIRD runs; >1 gives an uncertainty (std) map.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--slice", "slice", type=click.IntRange(min=0), default=None,
              help="Slice index of a multi-slice input (default: the middle slice).")
@click.option("--series", default=None, help="SeriesInstanceUID to read from a folder holding several series.")
@click.option("--window", default="wide", show_default=True,
              help=f"Display window of the PNGs: {'|'.join(WINDOWS)} or LO,HI in HU.")
@click.option("--anonymize/--no-anonymize", default=False, show_default=True,
              help="Strip patient identity from the output DICOM.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default ./ctbird-out/<input stem>).")
@click.option("--force", is_flag=True, default=False, help="Replace an existing non-empty output folder.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars or summary.")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="TOML file with any of these options (flags given here override it).")
@click.pass_context
def reconstruct_command(ctx: click.Context, input_path: Path, config: Path | None, **_: Any) -> None:
    """Reconstruct a CT slice from few views.

    INPUT is a DICOM file or series folder, a PNG, or an NPY image in HU: a sparse-view acquisition
    is simulated from it and each method is scored against it (PSNR/SSIM on HU clipped to
    [-1000, 1000], RMSE in HU). With --geometry-file, INPUT is a measured sinogram instead (no scores).
    """
    with _errors_as_click():
        params = _apply_config_file(ctx, str(config) if config else None)
        _reconstruct(input_path, params)


def _reconstruct(input_path: Path, params: dict[str, Any]) -> None:
    import torch

    from .io import atomic_output_dir, resolve_window
    from .units import clip_hu, hu_to_mu

    methods = _parse_methods(params["method"])
    window = resolve_window(params["window"])
    device = _resolve_device(params["device"])
    quiet = params["quiet"]
    input_path = input_path.expanduser()
    inputs = [input_path] + ([Path(params["geometry_file"])] if params["geometry_file"] else [])
    out = _check_out(params["out"], inputs, params["force"])
    study = _load_study(input_path, params)

    from . import api

    prior = None
    if PRIOR_METHODS.intersection(methods):
        from .priors import load_prior

        prior = load_prior(params["prior"], device=device)
    prior_label = str(params["prior"]) if params["prior"] else None
    if prior is not None and prior_label is None:
        from .priors import default_prior_path

        prior_label = str(default_prior_path())

    generator = torch.Generator().manual_seed(params["seed"])
    truth_working = None
    if study.sinogram is None:
        from .io import to_working_size, working_pixel_spacing

        height, width = study.hu.shape
        if prior is not None:
            size = prior.image_size
        else:
            size = min(DEFAULT_WORKING_SIZE, max(height, width))
        truth_working = to_working_size(clip_hu(study.hu), size)
        pixel_mm = working_pixel_spacing(study.spacing_mm, (height, width), size)
        geometry = _simulation_geometry(params["geometry"], params["views"], size)
        from operators.radon import Radon

        radon = Radon(geometry, size, backend="matrix")
        mu_pixels = torch.from_numpy(np.asarray(hu_to_mu(truth_working) * pixel_mm, dtype=np.float32))[None, None]
        with torch.no_grad():
            sinogram = radon(mu_pixels)
        if params["dose"] is not None:
            from operators.noise import LogPoissonNoise

            sinogram = LogPoissonNoise(params["dose"])(sinogram, generator=generator)
        output_shape = (height, width)
        spacing_out = study.spacing_mm
    else:
        geometry = study.geometry
        size = study.image_size
        pixel_mm = geometry.pixel_spacing or 1.0
        sinogram = torch.from_numpy(study.sinogram)[None, None]
        output_shape = (size, size)
        spacing_out = (pixel_mm, pixel_mm)
        if prior is not None and prior.image_size != size:
            raise InputError(f"The geometry's image_size is {size} but the prior works at {prior.image_size}; "
                             f"set image_size = {prior.image_size} in {params['geometry_file']} or use another prior.")

    preset = params["preset"] if params["preset"] != "auto" else ("cpu-fast" if device == "cpu" else "full")
    params["preset"] = preset
    bird_budget = dict(CPU_FAST_PRESET) if preset == "cpu-fast" else {"iters": None, "delta_t": None}
    results: dict[str, Any] = {}
    for method in _progress(methods, quiet=quiet, desc="reconstruct", unit="method"):
        started = time.perf_counter()
        iterative = method in PRIOR_METHODS
        is_bird = method.startswith("bird")
        iters = params["iters"] or (bird_budget["iters"] if is_bird else None)
        delta_t = params["delta_t"] or (bird_budget["delta_t"] if is_bird else None)
        default_iters = api.METHOD_DEFAULTS["dps"]["iters"] if method == "dps" else api.TASK_DEFAULTS["ct"]["iters"]
        total = (iters or default_iters) if iterative else None
        with _step_bar(quiet=quiet or not iterative, desc=method, total=total) as callback:
            result = _call_library(api.reconstruct, {
                "sinogram": sinogram, "geometry": geometry, "image_size": size, "prior": prior, "method": method,
                "iters": iters, "delta_t": delta_t, "n_samples": params["samples"],
                "seed": params["seed"], "device": device, "pixel_spacing_mm": pixel_mm, "callback": callback,
            })
        seconds = getattr(result, "seconds", None)
        info = getattr(result, "info", None) or {}
        results[method] = {
            "image": _as_numpy(result.image).reshape(-1, size, size)[0],
            "uncertainty": _reshape_optional(getattr(result, "uncertainty", None), size),
            "nfe": getattr(result, "nfe", None),
            "seconds": float(seconds) if seconds is not None else time.perf_counter() - started,
            "settings": {key: value for key, value in (("iters", info.get("iters_run") or iters),
                                                       ("delta_t", getattr(result, "delta_t", None)),
                                                       ("grad_mode", getattr(result, "grad_mode", None)),
                                                       ("latent_optimizer", info.get("latent_optimizer")),
                                                       ("lr_latent", info.get("lr_latent")),
                                                       ("latent_lr_schedule", info.get("latent_lr_schedule")),
                                                       ("keep_best", info.get("keep_best")),
                                                       ("data_filter", info.get("data_filter")))
                         if value is not None},
        }

    summary = _reconstruct_metrics(study, params, geometry, prior_label, results, truth_working, size, pixel_mm)
    with atomic_output_dir(out, force=params["force"]) as staging:
        _write_reconstruct_outputs(staging, study, params, results, summary, truth_working, sinogram, window,
                                   output_shape, spacing_out)
    if not quiet:
        click.echo(f"Wrote {', '.join(methods)} results to {out}", err=True)


def _reshape_optional(value, size: int) -> np.ndarray | None:
    array = _as_numpy(value)
    return None if array is None else array.reshape(-1, size, size)[0]


def _reconstruct_metrics(study: _Study, params, geometry, prior_label, results, truth_working, size, pixel_mm) -> dict:
    from .metrics import psnr, rmse_hu, ssim
    from .units import clip_hu

    summary: dict[str, Any] = {
        "input": study.label,
        "views": int(geometry.views),
        "geometry": geometry.to_dict(),
        "image_size": size,
        "pixel_spacing_mm": pixel_mm,
        "prior": prior_label,
        "seed": params["seed"],
        "dose_I0": params["dose"],
        "methods": {},
    }
    if truth_working is not None:
        summary["data_range_hu"] = list(EVAL_HU_RANGE)
        summary["metrics_note"] = (f"PSNR/SSIM on HU clipped to {list(EVAL_HU_RANGE)}; RMSE in HU on values clipped to "
                                   f"the prior window; all at the {size}x{size} working resolution.")
    summary.update({k: v for k, v in study.notes.items()})
    for method, result in results.items():
        entry: dict[str, Any] = {"seconds": round(result["seconds"], 3), "nfe": result["nfe"], **result["settings"]}
        if truth_working is not None:
            image = result["image"]
            entry["psnr"] = psnr(image, truth_working, data_range=EVAL_HU_RANGE)
            if size >= 11:
                entry["ssim"] = ssim(image, truth_working, data_range=EVAL_HU_RANGE)
            entry["rmse_hu"] = rmse_hu(clip_hu(image), truth_working)
        summary["methods"][method] = entry
    return summary


def _write_reconstruct_outputs(staging: Path, study: _Study, params, results, summary, truth_working, sinogram, window,
                               output_shape, spacing_out) -> None:
    from pydicom.uid import generate_uid

    from .figures import comparison_figure
    from .io import from_working_size, write_derived_dicom, write_png, write_text_atomic

    for method, result in results.items():
        image = from_working_size(result["image"], output_shape)
        np.save(staging / f"{method}.npy", image.astype(np.float32))
        write_png(image, staging / f"{method}.png", window=window)
        write_derived_dicom(image, study.source_header, staging / f"{method}.dcm", method_name=method,
                            pixel_spacing_mm=spacing_out, anonymize=params["anonymize"], series_uid=generate_uid(),
                            window=window, description=f"ctbird {method} reconstruction from {summary['views']} views")
        if result["uncertainty"] is not None:
            std = from_working_size(result["uncertainty"], output_shape)
            np.save(staging / f"{method}_std.npy", std.astype(np.float32))
    measured = _as_numpy(sinogram).reshape(-1, *sinogram.shape[-2:])[0]
    np.save(staging / "sinogram.npy", measured)
    write_text_atomic(staging / "geometry.json", json.dumps(summary["geometry"], indent=2) + "\n")
    write_text_atomic(staging / "metrics.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    figure = comparison_figure({m: r["image"] for m, r in results.items()}, reference=truth_working, window=window,
                               metrics=summary["methods"], uncertainty={m: r["uncertainty"] for m, r in results.items()},
                               sinogram=measured, error_range=CT_ERROR_RANGE_HU,
                               title=f"{Path(study.label).name}: {summary['views']} views")
    (staging / "comparison.png").write_bytes(figure)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items() if k not in ("config",)}
    write_text_atomic(staging / "config.toml", to_toml({"input": study.label, **config},
                                                       header="ctbird reconstruct: resolved configuration"))


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
@click.option("--sr-factor", type=click.IntRange(min=2), default=8, show_default=True,
              help="Super-resolution factor (--task sr; IMAGE is the low-resolution image).")
@click.option("--kernel", default=None,
              help="Known blur for --no-blind deblurring: a Gaussian sigma in pixels or a .npy [k, k] kernel.")
@click.option("--mask", type=click.Path(path_type=Path), default=None,
              help="Inpainting mask (--task inpaint): PNG/NPY, nonzero where pixels are observed.")
@click.option("--delta-t", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Iterations (default: the task's own).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default ./ctbird-out/<image stem>).")
@click.option("--force", is_flag=True, default=False, help="Replace an existing non-empty output folder.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars or summary.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="TOML file with any of these options.")
@click.pass_context
def restore_command(ctx: click.Context, image_path: Path, config: Path | None, **_: Any) -> None:
    """Restore a degraded photograph (deblur, super-resolve, denoise, inpaint) with BIRD."""
    with _errors_as_click():
        params = _apply_config_file(ctx, str(config) if config else None)
        _restore(image_path.expanduser(), params)


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


def _restore(image_path: Path, params: dict[str, Any]) -> None:
    import torch

    from .io import atomic_output_dir, read_image, write_png, write_text_atomic

    if params["task"] is None:
        raise ConfigError(f"--task is required: one of {', '.join(RESTORE_TASKS)}.")
    if not params["prior"]:
        raise ConfigError("--prior is required for restore: a diffusers folder or hub id of a photograph prior.")
    device = _resolve_device(params["device"])
    inputs = [image_path] + ([Path(params["reference"])] if params["reference"] else [])
    out = _check_out(params["out"], inputs, params["force"])
    observed = read_image(image_path)
    reference = read_image(params["reference"]) if params["reference"] else None
    kernel_arg, mask_arg = _restore_operator_inputs(params, observed.shape[-2:])
    from .priors import load_prior

    prior = load_prior(params["prior"], device=device)
    if observed.shape[0] != prior.channels:
        observed = np.repeat(observed, prior.channels, axis=0) if observed.shape[0] == 1 else observed.mean(0, keepdims=True)
    from . import api

    total = params["iters"] or api.TASK_DEFAULTS[params["task"]]["iters"]
    started = time.perf_counter()
    with _step_bar(quiet=params["quiet"], desc=f"restore ({params['task']})", total=total) as callback:
        result = _call_library(api.restore, {
            "image": torch.from_numpy(observed)[None], "task": params["task"], "blind": params["blind"], "prior": prior,
            "iters": params["iters"], "delta_t": params["delta_t"], "seed": params["seed"], "device": device,
            "sr_factor": params["sr_factor"], "kernel": kernel_arg, "mask": mask_arg, "callback": callback,
        })
    seconds = getattr(result, "seconds", None)
    restored = _as_numpy(result.image)[0]
    kernel = _as_numpy(getattr(result, "kernel", None))
    summary: dict[str, Any] = {"input": str(image_path), "task": params["task"], "blind": params["blind"],
                               "prior": str(params["prior"]), "seed": params["seed"],
                               "seconds": round(float(seconds) if seconds is not None else time.perf_counter() - started, 3),
                               "nfe": getattr(result, "nfe", None)}
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
    with atomic_output_dir(out, force=params["force"]) as staging:
        np.save(staging / "restored.npy", restored.astype(np.float32))
        write_png(restored, staging / "restored.png")
        extra = {}
        if kernel is not None:
            kernel2d = kernel.reshape(kernel.shape[-2:]) if kernel.ndim >= 2 and np.prod(kernel.shape[:-2]) == 1 else kernel
            np.save(staging / "kernel.npy", kernel2d.astype(np.float32))
            peak = float(np.max(kernel2d)) if kernel2d.size else 0.0
            write_png(kernel2d / peak if peak > 0 else kernel2d, staging / "kernel.png")
            extra["estimated kernel" if params["blind"] else "kernel"] = kernel2d
        uncertainty = _as_numpy(getattr(result, "uncertainty", None))
        if uncertainty is not None:
            np.save(staging / "restored_std.npy", uncertainty[0])
        from .figures import comparison_figure

        metrics = {"restored": {k: summary[k] for k in ("psnr", "ssim") if k in summary}}
        images = {"observed": observed if observed.shape[-2:] == restored.shape[-2:] else None, "restored": restored}
        figure = comparison_figure({k: v for k, v in images.items() if v is not None}, reference=reference,
                                   window=(0.0, 1.0), metrics=metrics, extra=extra, unit="[0,1]", error_range=0.25,
                                   title=f"{image_path.name}: {params['task']}")
        (staging / "comparison.png").write_bytes(figure)
        write_text_atomic(staging / "metrics.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items() if k != "config"}
        write_text_atomic(staging / "config.toml", to_toml({"input": str(image_path), **config},
                                                           header="ctbird restore: resolved configuration"))
    if not params["quiet"]:
        click.echo(f"Wrote the restored image to {out}", err=True)


if __name__ == "__main__":
    main()
