"""What every benchmark shares: data selection, run records, tables, figures.

The science is the library's: a CT acquisition is simulated by :func:`ctbird.simulate.simulate` (on the run's
device) and a CT reconstruction scored by :func:`ctbird.metrics.score_ct` with ``ctbird.units.EVAL_HU_RANGE``,
exactly as ``ctbird reconstruct`` does; images on the prior's ``[0, 1]`` scale are scored by :func:`score_unit`.
Slice packs are :mod:`ctbird.stacks` files. Every benchmark and study imports shared code from here and nothing
from another benchmark.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from ctbird.metrics import kernel_error, kernel_sigma

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The team's data folder, a sibling of the repository (``../shared/data``).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: Where generated result pages go: ``docs/results/<topic>/<tag>.md`` + ``.json``, figures in ``figures/`` beside them.
RESULTS_DIR = Path("docs") / "results"
#: The shipped sample slice, the default input of the single-slice studies.
SAMPLE_SLICE = REPO_ROOT / "data" / "samples" / "chest_tcga_0000.dcm"
#: Field of view assumed for synthetic phantom slices (mm across the working grid).
SYNTHETIC_FOV_MM = 350.0


def parse_list(text: str, cast=str) -> list:
    """``"a,b,c"`` -> ``[cast(a), cast(b), cast(c)]`` (blank items dropped)."""
    return [cast(part.strip()) for part in text.split(",") if part.strip()]


def require_positive(parser, args, names: Sequence[str]) -> None:
    """``parser.error`` unless each named option is None or >= 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}.")


def add_study_options(parser, topic: str = "tuning") -> None:
    """The options every study on single slices shares: ``--slice`` (repeatable), ``--pixel-mm``, ``--views``,
    ``--size``, ``--seed``, ``--prior``, ``--device``, ``--out-dir`` (default ``docs/results/<topic>``), ``--tag``."""
    parser.add_argument("--slice", action="append", required=True,
                        help="DICOM slice or STACK.npz:INDEX (repeatable); tune away from the evaluation slices")
    parser.add_argument("--pixel-mm", type=float, default=1.4,
                        help="pixel spacing (mm) of a STACK.npz slice when the stack has no pixel_spacing_mm")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--size", type=int, default=256, help="working grid side N (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default=None, help="prior folder (default the shipped one)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / topic,
                        help=f"output folder (default docs/results/{topic})")
    parser.add_argument("--tag", default=None, help="file-name label (default the device type)")


def parse_study_args(parser, argv: Sequence[str] | None):
    """``parser.parse_args(argv)`` with :func:`add_study_options`' numbers checked (``parser.error`` otherwise)."""
    args = parser.parse_args(argv)
    if min(args.views, args.size) < 1 or args.pixel_mm <= 0:
        parser.error("--views, --size and --pixel-mm must be positive.")
    return args


def study_payload(record: dict, labels: Sequence[str], args, results: list[dict]) -> dict:
    """The JSON of a study on CT slices (:func:`add_study_options`): its run record, slices, set-up and results."""
    from ctbird.priors import default_prior_path

    return {"run": record, "slices": list(labels), "views": args.views, "image_size": args.size, "seed": args.seed,
            "prior": str(args.prior) if args.prior else str(default_prior_path()), "results": results}


def add_restoration_study_options(parser) -> None:
    """The options of the restoration studies on training slices: ``--slice`` (repeatable), ``--tasks``,
    ``--variants``, ``--baselines``, ``--size``, ``--sr-factor``, ``--seed``, ``--device``, ``--out-dir``, ``--tag``."""
    from ctbird.config import RESTORE_TASKS

    parser.add_argument("--slice", action="append", required=True, help="STACK.npz:INDEX training slice (repeatable)")
    parser.add_argument("--tasks", default=",".join(RESTORE_TASKS), help="comma-separated subset of the tasks")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all of each task)")
    parser.add_argument("--baselines", action="store_true", help="also score the classical baselines")
    parser.add_argument("--size", type=int, default=128, help="working side (default 128)")
    parser.add_argument("--sr-factor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "tuning")
    parser.add_argument("--tag", default=None)


def parse_restoration_study_args(parser, argv: Sequence[str] | None, variants: dict[str, dict], extra: Sequence[str] = ()):
    """``parser.parse_args(argv)`` of :func:`add_restoration_study_options` with ``args.tasks`` and ``args.variants``
    (None: all) split into lists and checked against the tasks and the names of ``variants`` (per task) or ``extra``."""
    from ctbird.config import RESTORE_TASKS

    args = parser.parse_args(argv)
    args.tasks = parse_list(args.tasks)
    args.variants = parse_list(args.variants) if args.variants else None
    if any(t not in RESTORE_TASKS for t in args.tasks):
        parser.error(f"--tasks takes some of {', '.join(RESTORE_TASKS)}.")
    known = set(extra) | {name for task in args.tasks for name in variants[task]}
    if args.variants and any(v not in known for v in args.variants):
        parser.error(f"--variants takes some of {', '.join(sorted(known))}.")
    return args


def add_data_filter_option(parser) -> None:
    """``--data-filter``: the SinogramFilter exponent of BIRD's CT data term (``args.data_filter``: float or None).

    ``default`` resolves to ``BirdConfig().data_filter``; ``none`` is the reference's plain term.
    """
    import argparse

    def parse(text: str) -> float | None:
        from ctbird.config import BirdConfig

        if text == "default":
            return BirdConfig().data_filter
        if text == "none":
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value > 0:
            raise argparse.ArgumentTypeError(f"takes a positive exponent, 'none' or 'default', got {text!r}")
        return value

    parser.add_argument("--data-filter", type=parse, default="default",
                        help="SinogramFilter exponent of BIRD's data term, or 'none' for the plain term "
                             "(default ctbird.config.BirdConfig)")


def evenly_spread(items: Sequence, count: int | None) -> list:
    """``count`` items spread evenly over ``items`` (first and last included), in order; all when ``count`` is None."""
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        return []
    positions = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in positions]


def dicom_files(root: Path) -> list[Path]:
    """Every file under ``root`` (recursive) that is not an obvious non-DICOM sidecar, sorted by path."""
    skip = {".txt", ".md", ".json", ".png", ".jpg", ".jpeg", ".csv", ".npz", ".npy"}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in skip)


def load_ct_slices(data_dir: Path | None, count: int | None, size: int, *, synthetic: bool,
                   exclude: Collection[str] = (), per_folder: bool = False) -> list[tuple[str, np.ndarray, float]]:
    """CT slices at the working size: ``[(label, hu [size, size] float32, pixel_spacing_mm), ...]``.

    Real data: one slice per DICOM file under ``data_dir`` (the middle frame of multi-frame files), an evenly
    spread deterministic subset of ``count`` files, ``read_dicom -> clip_hu -> to_working_size`` with the pixel
    spacing scaled accordingly; or a slice pack (a :mod:`ctbird.stacks` ``.npz`` with ``pixel_spacing_mm``, e.g.
    from :func:`slice_stack`) holding such slices. ``synthetic``: the Shepp-Logan phantom mapped to HU (``-1000 + 2000 v``; its
    ``[0, 1]`` values span air to dense bone) and its mirror images, ``SYNTHETIC_FOV_MM`` across.
    ``exclude``: labels (paths relative to ``data_dir``) left out before the subset is chosen, e.g. the slices
    of an earlier run, for a disjoint replicate. ``per_folder``: ``count`` files from each top-level folder of
    ``data_dir`` (each collection), evenly spread within it.
    """
    from ctbird.errors import InputError

    if synthetic:
        from ctbird.phantoms import shepp_logan

        base = shepp_logan(size)[0, 0].numpy().astype(np.float32) * 2000.0 - 1000.0
        variants = [("shepp-logan", base), ("shepp-logan-lr", base[:, ::-1]), ("shepp-logan-ud", base[::-1]),
                    ("shepp-logan-rot", base[::-1, ::-1])]
        return [(label, np.ascontiguousarray(image), SYNTHETIC_FOV_MM / size)
                for label, image in variants[:count or len(variants)]]
    if data_dir is not None and data_dir.suffix == ".npz" and data_dir.is_file():
        return _load_slice_pack(data_dir, count, size, exclude)
    if data_dir is None or not data_dir.is_dir():
        raise InputError(f"CT data folder {data_dir} not found; pass --data DIR (DICOM files, searched recursively) "
                         "or --synthetic for the phantom.")
    files = [path for path in dicom_files(data_dir) if str(path.relative_to(data_dir)) not in exclude]
    if not files:
        raise InputError(f"No DICOM files under {data_dir} (after the {len(exclude)} excluded); pass --data DIR or "
                         "--synthetic.")
    if per_folder:
        folders = sorted({path.relative_to(data_dir).parts[0] for path in files})
        chosen = [path for folder in folders
                  for path in evenly_spread([p for p in files if p.relative_to(data_dir).parts[0] == folder], count)]
    else:
        chosen = evenly_spread(files, count)
    return [(str(path.relative_to(data_dir)), *read_working_slice(path, size)) for path in chosen]


def zoom_slice(hu: np.ndarray, pixel_spacing_mm: float, factor: float) -> tuple[np.ndarray, float]:
    """The central ``1 / factor`` of a square slice resampled (bilinear) back to its size: a tighter field of view in
    which the patient fills more of the grid (or runs off its edges). Returns HU and the new pixel spacing (mm)."""
    if factor == 1.0:
        return hu, pixel_spacing_mm
    size = hu.shape[-1]
    side = max(2, int(round(size / factor)))
    start = (size - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(hu[start:start + side, start:start + side], dtype=np.float32))
    zoomed = torch.nn.functional.interpolate(crop[None, None], size=(size, size), mode="bilinear", align_corners=False)
    return zoomed[0, 0].numpy(), pixel_spacing_mm * side / size


def read_working_slice(path: Path, size: int) -> tuple[np.ndarray, float]:
    """One DICOM slice (the middle frame) at the working size: HU ``[size, size]`` float32, pixel spacing (mm).

    ``read_dicom`` then :func:`ctbird.stacks.working_slices` (the prior's one pre-processing: clip to its window, pad
    to a square with air, resample), with the pixel spacing scaled to match.
    """
    from ctbird.io import read_dicom, working_pixel_spacing
    from ctbird.stacks import working_slices

    volume = read_dicom(path)
    hu = volume.hu[volume.hu.shape[0] // 2]
    return working_slices(hu, size)[0], working_pixel_spacing(volume.pixel_spacing_mm, hu.shape, size)


def read_slice(spec: str, size: int, pixel_mm: float) -> tuple[np.ndarray, float, str]:
    """``(hu [size, size], pixel spacing mm, label)`` of a DICOM file or a ``STACK.npz:INDEX`` slice.

    A stack slice (e.g. of the prior's training set, to tune away from the evaluation slices) takes its pixel
    spacing from the stack's ``pixel_spacing_mm`` when present, else ``pixel_mm``.
    """
    from ctbird.errors import InputError
    from ctbird.units import clip_hu

    stack_path, _, index = spec.rpartition(":")
    if not stack_path.endswith(".npz"):
        path = Path(spec)
        hu, spacing = read_working_slice(path, size)
        label = path.resolve().relative_to(REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT) else path
        return hu, spacing, str(label)
    from ctbird.stacks import read_slice_stack

    stack = read_slice_stack(stack_path)
    if not index.isdigit() or int(index) >= len(stack):
        raise InputError(f"{spec}: {Path(stack_path).name} holds slices 0..{len(stack) - 1}, not {index!r}.")
    image = clip_hu(stack.images[int(index)].astype(np.float32))
    if stack.pixel_spacing_mm is not None:
        pixel_mm = float(stack.pixel_spacing_mm[int(index)])
    if image.shape != (size, size):
        raise InputError(f"{spec} is {image.shape[0]}x{image.shape[1]}, not --size {size}.")
    return image, pixel_mm, f"{Path(stack_path).name}[{index}]"


# ------------------------------------------------------------------------------- acquisition and scoring
def noise_label(i0: float | None) -> str:
    """``noiseless`` or ``I0=1e+05``: the dose as the result pages name it."""
    return "noiseless" if i0 is None else f"I0={i0:.0e}"


def score_unit(image: torch.Tensor, truth: torch.Tensor) -> dict:
    """PSNR and SSIM with data range 1.0 of images on the prior's ``[0, 1]`` scale (restoration, phantoms)."""
    from ctbird.metrics import psnr, ssim

    return {"psnr": float(psnr(image, truth, data_range=1.0)), "ssim": float(ssim(image, truth, data_range=1.0))}


def score_settings_on_slices(args, prior, device: torch.device, settings: Sequence[tuple[str, str, dict]], *,
                             desc: str) -> tuple[list[str], list[list[dict]]]:
    """The tuning studies' loop: every setting ``(label, method, overrides)`` reconstructs each ``args.slice`` (read
    at ``args.size`` with ``args.pixel_mm``, simulated noiseless at ``args.views`` parallel views) with seed
    ``args.seed``, scored by :func:`ctbird.metrics.score_ct` on :data:`ctbird.units.EVAL_HU_RANGE`.

    Returns the slice labels and, per setting (in order), its rows ``{slice, psnr, ssim, rmse_hu, seconds, nfe}``.
    """
    from ctbird.api import reconstruct
    from ctbird.metrics import score_ct
    from ctbird.simulate import simulate, simulation_geometry
    from ctbird.units import EVAL_HU_RANGE

    geometry = simulation_geometry("parallel", args.views, args.size)
    rows: list[list[dict]] = [[] for _ in settings]
    labels = []
    with progress(total=len(args.slice) * len(settings), desc=desc, unit="run") as bar:
        for spec in args.slice:
            truth, spacing, slice_label = read_slice(spec, args.size, args.pixel_mm)
            labels.append(slice_label)
            sinogram = simulate(truth, image_size=args.size, pixel_spacing_mm=spacing, geometry=geometry,
                                seed=args.seed, device=device).sinogram
            for row, (label, method, overrides) in zip(rows, settings):
                bar.set_description(f"{slice_label} {method}" + (f" {label}" if label else ""))
                result = reconstruct(sinogram, geometry, image_size=args.size, pixel_spacing_mm=spacing, prior=prior,
                                     method=method, seed=args.seed, device=device, **overrides)
                row.append({"slice": slice_label, **score_ct(result.image[0, 0], truth, data_range=EVAL_HU_RANGE),
                            "seconds": result.seconds, "nfe": result.nfe})
                bar.update(1)
    return labels, rows


def summarize(per_slice: list[dict]) -> dict:
    """``{key_mean, key_std}`` over the rows of ``per_slice`` for PSNR, SSIM, RMSE, seconds and NFE."""
    summary = {}
    for key in ("psnr", "ssim", "rmse_hu", "seconds", "nfe"):
        summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([row[key] for row in per_slice])
    return summary


def start_run(args, argv: Sequence[str] | None) -> tuple[torch.device, dict]:
    """Resolve ``args.device``, default ``args.tag`` to ``gpu``/``cpu`` by it, and return it with the run record."""
    from ctbird.api import resolve_device

    device = resolve_device(args.device)
    args.tag = args.tag or ("gpu" if device.type == "cuda" else "cpu")
    return device, run_record(device, argv)


def slice_stack(slices: list[tuple[str, np.ndarray, float]], description: str | None = None):
    """:func:`load_ct_slices` output as a :class:`ctbird.stacks.SliceStack` (``images``, ``labels``,
    ``pixel_spacing_mm``), HU rounded to integers (the DICOM precision) so that it is written as int16."""
    from ctbird.stacks import SliceStack

    return SliceStack(images=np.stack([np.round(s[1]) for s in slices]).astype(np.float32),
                      labels=np.array([s[0] for s in slices]),
                      pixel_spacing_mm=np.array([s[2] for s in slices], dtype=np.float64), description=description)


def _load_slice_pack(path: Path, count: int | None, size: int, exclude: Collection[str]
                     ) -> list[tuple[str, np.ndarray, float]]:
    """The slices of a :mod:`ctbird.stacks` file at ``size`` (labels ``NAME[i]`` when it has none), clipped to the
    prior's window as :func:`read_working_slice` clips."""
    from ctbird.errors import InputError
    from ctbird.stacks import read_slice_stack
    from ctbird.units import clip_hu

    stack = read_slice_stack(path)
    if stack.images.shape[1:] != (size, size):
        raise InputError(f"slice pack {path} holds {stack.images.shape[1]}x{stack.images.shape[2]} slices, "
                         f"not --size {size}.")
    if stack.pixel_spacing_mm is None:
        raise InputError(f"slice pack {path} has no 'pixel_spacing_mm'; write it with ctbird.stacks.write_slice_stack "
                         "and benchmarks.common.slice_stack.")
    labels = ([str(label) for label in stack.labels] if stack.labels is not None
              else [f"{path.name}[{i}]" for i in range(len(stack))])
    chosen = evenly_spread([i for i in range(len(labels)) if labels[i] not in exclude], count)
    return [(labels[i], clip_hu(stack.images[i].astype(np.float32)), float(stack.pixel_spacing_mm[i])) for i in chosen]


def git_commit() -> str:
    """``<sha>`` of the repository's HEAD, ``+dirty`` when tracked files differ from it; ``unknown`` without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """Human-readable name of the compute device (GPU model, or the CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({torch.get_num_threads()} torch threads)"


def run_record(device: torch.device, argv: Sequence[str] | None = None) -> dict:
    """What, where and with which software a benchmark ran: command line, versions, commit, device, date."""
    import diffusers
    import skimage

    try:
        import astra

        astra_version = astra.__version__
    except ImportError:
        astra_version = "not installed"
    return {
        "command": command_line(argv),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "ctbird_commit": git_commit(),
        "device": device_name(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "astra-toolbox": astra_version,
                     "numpy": np.__version__, "scikit-image": skimage.__version__},
        "platform": platform.platform(),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The running benchmark's command, ``python -m <module> ARGS`` (``argv``, default ``sys.argv[1:]``)."""
    return shlex.join(["python", "-m", main_module(), *(sys.argv[1:] if argv is None else argv)])


def main_module() -> str:
    """The dotted name the running benchmark was started as (``benchmarks.ct`` for ``python -m benchmarks.ct``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else "benchmarks"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (NaN for an empty list)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std())


def fmt(mean: float, std: float | None = None, digits: int = 2) -> str:
    """``"mean ± std"`` (std omitted when None or for a single sample)."""
    if not math.isfinite(mean):
        return "–"
    text = f"{mean:.{digits}f}"
    return text if std is None or not math.isfinite(std) else f"{text} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def knob_study_markdown(*, title: str, module: str, record: dict, labels: Sequence[str], args, prior: str,
                        notes: str, knobs: Sequence[str], results: Sequence[dict]) -> str:
    """The page of a CT study over method settings (``tune_bird``, ``tune_dds``): header, slices, ``notes`` and one
    row per setting (its ``knobs``, PSNR mean ± std and per slice when several, SSIM, seconds, NFE)."""
    several = len(labels) > 1

    def cell(value) -> str:
        return "–" if value is None else f"{value:g}"

    table = [[r["method"], *[cell(r[k]) for k in knobs], fmt(r["psnr_mean"], r["psnr_std"] if several else None),
              fmt(r["ssim_mean"], digits=3), *([fmt(s["psnr"]) for s in r["per_slice"]] if several else []),
              fmt(r["seconds_mean"], digits=1), fmt(r["nfe_mean"], digits=0)] for r in results]
    return "\n".join([
        page_header(f"{title} (`{args.tag}`)", module, record),
        f"- Slices: {', '.join(f'`{label}`' for label in labels)}; {args.views} parallel views, noiseless, "
        f"{args.size}², matrix projector; seed {args.seed}; prior `{prior}`.",
        "- PSNR/SSIM on HU clipped to [-1000, 1000] (data range 2000 HU)" + ("; mean ± std over the slices." if several
                                                                          else "."),
        notes, "",
        markdown_table(["method", *knobs, "PSNR (dB)", "SSIM", *([f"PSNR `{label}`" for label in labels] if several
                                                                else []), "s / slice", "NFE"], table)])


def page_header(title: str, module: str, record: dict) -> str:
    """A result page's opening: ``# title``, the generating command ``python -m module`` and the run record."""
    return "\n".join([f"# {title}", "", f"Generated by `python -m {module}`; do not edit by hand.", "",
                      record_markdown(record)])


def record_markdown(record: dict) -> str:
    """The run record as a markdown bullet list."""
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    return "\n".join([
        f"- Command: `{record['command']}`",
        f"- Date: {record['date_utc']}; ctbird commit `{record['ctbird_commit']}`",
        f"- Device: {record['device']}",
        f"- Versions: {versions}",
    ])


def write_outputs(out_dir: Path, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out_dir`` atomically; returns their paths."""
    from ctbird.io import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_text_atomic(json_path, json.dumps(payload, indent=1, allow_nan=True) + "\n")
    write_text_atomic(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def save_png(path: Path, figure, dpi: int = 110) -> str:
    """Write a matplotlib figure (or PNG bytes) to ``path`` as a 256-colour palette PNG, atomically.

    Result figures are greyscale images, colour maps and line plots: the palette keeps them legible at about a
    third of the RGBA size, so that docs/ stays small. Returns the file name.
    """
    import io

    from PIL import Image

    from ctbird.io import write_bytes_atomic

    if isinstance(figure, bytes):
        png = figure
    else:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        png = buffer.getvalue()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                                                 dither=Image.Dither.NONE)
    palette = io.BytesIO()
    image.save(palette, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, palette.getvalue())
    return path.name

def run_script(main: Callable[[], int]) -> int:
    """Run a script's ``main()``: a user error (:class:`ctbird.errors.CtbirdError`: a missing data folder or prior,
    an unreadable file) ends in one ``error:`` line on stderr and exit status 2 instead of a traceback."""
    from ctbird.errors import CtbirdError

    try:
        return main()
    except CtbirdError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr."""
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


# ------------------------------------------------------------------------------- restoration tasks
def observation_view(task: str, y: torch.Tensor, size: int) -> torch.Tensor:
    """The observation on the ground truth's grid (bilinear upsampling for SR)."""
    from ctbird.api import resize

    return resize(y, (size, size)) if task == "sr" else y


def load_study_prior(prior: str | None, device: torch.device, size: int):
    """``(DiffusionPrior decoding at size², its path)`` of a study's ``--prior`` (default: the shipped CT prior)."""
    from ctbird.priors import DiffusionPrior, default_prior_path

    path = prior or default_prior_path()
    return DiffusionPrior.from_pretrained(path, device=str(device), image_size=size), path


def load_unit_slice(spec: str, size: int) -> tuple[torch.Tensor, str]:
    """A 256² training-stack slice (``STACK.npz:INDEX``) on the prior's [0, 1] scale, resampled to ``[1, size, size]``."""
    from ctbird.api import resize
    from ctbird.units import hu_to_image

    hu, _, label = read_slice(spec, 256, 1.0)
    unit = torch.from_numpy(hu_to_image(hu)).to(torch.float32)
    return resize(unit[None, None], (size, size))[0].clamp(0.0, 1.0), label


def initial_kernel(task: str, kernel_size: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The blind solver's starting kernel (the operator :func:`ctbird.restore` builds by default)."""
    from ctbird.api import restoration_operator

    op = restoration_operator(task, shape, blind=True, sr_factor=1, kernel_size=kernel_size, kernel=None, mask=None)
    with torch.no_grad():
        return op.kernel.detach().clone()


def kernel_scores(result, case: dict) -> dict:
    """``{kernel_error, sigma}`` of ``result.kernel`` (``[B, k, k]`` or ``[k, k]``; the first item) against
    ``case["kernel"]`` (blind deblurring), else ``{}``."""
    scores = {}
    kernel = getattr(result, "kernel", None)
    if "kernel" in case and kernel is not None:
        estimate = kernel[0].detach().cpu() if kernel.dim() == 3 else kernel.detach().cpu()
        if estimate.shape == case["kernel"].shape:
            scores["kernel_error"] = kernel_error(estimate, case["kernel"])
            scores["sigma"] = kernel_sigma(estimate)
    return scores
