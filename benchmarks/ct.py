"""Sparse-view CT benchmark: FBP, SIRT, TV, DPS and BIRD on held-out DICOM slices.

Each slice (``read_dicom -> clip_hu -> to_working_size``, pixel spacing scaled with it) is projected with
``operators.radon.Radon`` (matrix backend, :func:`ctbird.simulate.simulate`) into ``hu_to_mu(hu) * pixel_spacing_mm`` line integrals -- the
units of :func:`ctbird.reconstruct` -- for every geometry (parallel over [0, pi); fan: source at 2 N and
detector at N from the axis, full circle, as ``ctbird reconstruct`` simulates), view count and dose
(noiseless, or ``operators.noise.LogPoissonNoise(I0)``), then reconstructed by every method with
:func:`ctbird.reconstruct`. The same projector simulates and reconstructs (an "inverse crime" that favours
every method alike).

Each slice is simulated by :func:`ctbird.simulate.simulate` on the run's device and each reconstruction scored by
:func:`ctbird.metrics.score_ct`, as ``ctbird reconstruct`` does: PSNR and SSIM with data range
``ctbird.units.EVAL_HU_RANGE`` = [-1000, 1000] HU (both images clipped to it, span 2000 HU) and RMSE in HU over the
whole grid of the reconstruction clipped to the prior's window; mean and std over slices, plus seconds and UNet
evaluations (NFE) per slice.

Methods: ``fbp``, ``sirt``, ``tv``, ``dps``, ``dds``, ``bird`` (BIRD with detached gradients, then the DDS
refinement of its image), ``bird-raw`` (BIRD's decode without the refinement) and ``bird-exact`` (``bird`` with
backpropagation through the UNet). When both ``bird`` and ``bird-raw`` are requested, BIRD runs once: ``bird-raw``
is the BIRD stage of the ``bird`` run (same seed, identical result to a separate run) and its seconds are that
stage's. With ``--samples K > 1`` (BIRD restarts) the
tables add how well BIRD's per-pixel std predicts its error (:func:`ctbird.metrics.uncertainty_calibration`).

Writes ``<tag>.json`` / ``.md`` and ``figures/<tag>_*.png`` under ``--out-dir`` (default ``docs/results/ct``);
``--ablation`` instead runs the ``delta_t`` ablation of BIRD's decode chain (``bird-raw``; 30 views, parallel, noiseless) into
``ablation_<tag>.*``.

Examples (repository root)::

    python -m benchmarks.ct --quick --tag quick
    python -m benchmarks.ct --tag gpu --device cuda
    python -m benchmarks.ct --tag cpu --max-slices 4 --views 8,30,60 --methods fbp,sirt,tv,bird-raw,bird --iters 30
    python -m benchmarks.ct --tag cpu-eval24 --max-slices 6 --per-collection --views 30 --geometry parallel --noise none
    python -m benchmarks.ct --ablation --tag cpu --max-slices 2 --iters 3
    python -m benchmarks.ct --rerender docs/results/ct/cpu-defaults.json    # the markdown again, from the JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, add_data_filter_option, fmt, load_ct_slices, markdown_table,
                               zoom_slice,
                               noise_label, parse_list, progress, page_header, require_positive, run_script,
                               save_png, start_run, summarize, write_outputs)
from ctbird.metrics import score_ct
from ctbird.simulate import simulate, simulation_geometry
from ctbird.units import EVAL_HU_RANGE, PRIOR_HU_WINDOW

#: How RMSE treats the reconstruction (:func:`ctbird.metrics.score_ct`), recorded in each run's settings.
RMSE_CONVENTION = "reconstruction clipped to the prior's HU window [{:.0f}, {:.0f}]".format(*PRIOR_HU_WINDOW)
#: What runs made before the convention was recorded did (their JSON has no ``settings["rmse"]``).
RMSE_UNCLIPPED = "reconstruction unclipped"
METHODS = ("fbp", "sirt", "tv", "dps", "dds", "bird-raw", "bird", "bird-exact")
PRIOR_METHODS = {"dps", "dds", "bird", "bird-raw", "bird-exact"}
# ends with the library default, ctbird.config.BirdConfig.delta_t (tests check it)
ABLATION_DELTA_T = (20, 50, 100, 200, 250, 333)
ABLATION_VIEWS = 30
GRID_VIEWS = 30
FULL = {"views": "8,18,30,60", "geometry": "parallel,fan", "noise": "none,1e5", "methods": ",".join(METHODS),
        "max_slices": None, "iters": None, "delta_t": None}
QUICK = {"views": "30", "geometry": "parallel", "noise": "none", "methods": "fbp,sirt,bird",
         "max_slices": 2, "iters": 3, "delta_t": 250}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "ct" / "eval",
                        help="folder of evaluation DICOM files, searched recursively (default ../shared/data/ct/eval)")
    parser.add_argument("--synthetic", action="store_true", help="use Shepp-Logan phantom slices instead of --data")
    parser.add_argument("--max-slices", type=int, default=None, help="evenly spread subset of this many slices (default all)")
    parser.add_argument("--zoom", type=float, default=1.0,
                        help="reconstruct the central 1/ZOOM of every slice resampled to the grid: a tight field of "
                             "view in which the patient fills the grid (default 1: as read)")
    parser.add_argument("--per-collection", action="store_true",
                        help="--max-slices counts per top-level folder of --data (per collection)")
    parser.add_argument("--exclude-slices-of", type=Path, action="append", default=[], metavar="RUN.json",
                        help="leave out the slices of an earlier run (its results JSON) before choosing the subset: a "
                             "disjoint replicate (repeatable)")
    parser.add_argument("--size", type=int, default=256, help="working grid side N (default 256)")
    parser.add_argument("--views", default=None, help=f"comma-separated view counts (default {FULL['views']})")
    parser.add_argument("--geometry", default=None, help="parallel and/or fan (default parallel,fan)")
    parser.add_argument("--noise", default=None,
                        help="'none' and/or incident photons I0 for log-Poisson noise (default none,1e5)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)} (default all)")
    parser.add_argument("--iters", type=int, default=None, help="BIRD iterations (default ctbird.config.BirdConfig)")
    parser.add_argument("--delta-t", type=int, default=None, help="DDIM step of BIRD's chain (default ctbird.config.BirdConfig)")
    parser.add_argument("--lr-latent", type=float, default=None, help="BIRD latent learning rate (default ctbird.config.BirdConfig)")
    from ctbird.solvers.bird import LATENT_LR_SCHEDULES, LATENT_OPTIMIZERS

    parser.add_argument("--latent-optimizer", choices=LATENT_OPTIMIZERS, default=None,
                        help="how BIRD moves x_T (default ctbird.config.BirdConfig)")
    parser.add_argument("--latent-lr-schedule", choices=LATENT_LR_SCHEDULES, default=None,
                        help="rate schedule of x_T (default ctbird.config.BirdConfig)")
    add_data_filter_option(parser)
    parser.add_argument("--refine-from-t", type=int, default=None,
                        help="timestep bird's DDS refinement starts from (0: none; default ctbird.config.BirdConfig)")
    parser.add_argument("--preset", choices=("full", "cpu-fast"), default=None,
                        help="BIRD budget preset (ctbird.config.PRESETS); --iters/--delta-t override it")
    parser.add_argument("--dps-steps", type=int, default=None, help="DPS sampling steps (default ctbird.config.DPSConfig)")
    parser.add_argument("--samples", type=int, default=1,
                        help="BIRD restarts per slice (default 1); > 1 scores the std map against the error")
    parser.add_argument("--ablation", action="store_true",
                        help=f"run only the delta_t ablation of BIRD ({ABLATION_DELTA_T}, {ABLATION_VIEWS} views, parallel, noiseless)")
    parser.add_argument("--ablation-delta-t", default=",".join(map(str, ABLATION_DELTA_T)),
                        help="delta_t values of --ablation")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="compute device (default auto)")
    parser.add_argument("--prior", default=None, help="prior folder or hub id (default the shipped data/priors/ctbird-ct-256)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="slices per prior-method run (default 1; batches pay off on a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (noise uses 1000 + slice index)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "ct",
                        help="output folder (default docs/results/ct)")
    parser.add_argument("--tag", default=None, help="run label in the file names, e.g. cpu or gpu (default: the device type)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run: 2 slices, 30 views, parallel, noiseless, fbp/sirt/bird, 3 iterations, delta_t 250")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--rerender", type=Path, default=None, metavar="RUN.json",
                        help="only rewrite RUN.md from an earlier run's RUN.json with this version's layout, then exit")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.views = parse_list(args.views, int)
        args.geometry = parse_list(args.geometry)
        args.noise = [None if n.lower() == "none" else float(n) for n in parse_list(args.noise)]
        args.methods = parse_list(args.methods)
        args.ablation_delta_t = parse_list(args.ablation_delta_t, int)
    except ValueError as exc:
        parser.error(f"could not parse a list option: {exc}")
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        parser.error(f"--methods must name some of {', '.join(METHODS)}; got {bad or 'nothing'}.")
    if [g for g in args.geometry if g not in ("parallel", "fan")] or not args.geometry:
        parser.error(f"--geometry takes parallel and/or fan, got {args.geometry}.")
    if not args.views or min(args.views) < 1 or any(n is not None and n <= 0 for n in args.noise):
        parser.error("--views must be positive integers and --noise 'none' or positive photon counts.")
    require_positive(parser, args, ("iters", "delta_t", "dps_steps", "max_slices", "batch_size", "samples"))
    if args.size < 16:
        parser.error("--size must be >= 16.")
    if not 1.0 <= args.zoom <= 8.0:
        parser.error("--zoom must lie in [1, 8].")
    try:
        args.excluded_slices = excluded_slices(args.exclude_slices_of)
    except ValueError as exc:
        parser.error(str(exc))
    return args


class Runner:
    """Runs the requested methods on the sinograms of several slices (one geometry).

    Classical methods run slice by slice. Prior methods run ``--batch-size`` slices at a time: each slice's
    sinogram is divided by its pixel spacing and reconstructed with ``pixel_spacing_mm=1`` (the same problem:
    ``reconstruct`` scales by the spacing only there), so slices of different spacings share one batch; each
    slice gets the batch's seconds divided by the batch size. BIRD is shared between ``bird`` and ``bird-raw``.
    """

    def __init__(self, args: argparse.Namespace, prior, device: torch.device) -> None:
        self.args, self.prior, self.device = args, prior, device

    def _call(self, method: str, sinogram, geometry, spacing: float, bar, **kwargs):
        from ctbird.api import reconstruct

        def callback(info: dict) -> None:
            bar.set_postfix_str(f"{method} it {info['iteration']}/{info['iters']} loss {info['loss']:.3g}", refresh=True)

        return reconstruct(sinogram, geometry, image_size=self.args.size, pixel_spacing_mm=spacing,
                           prior=self.prior if method in PRIOR_METHODS else None, method=method,
                           seed=(self.args.seed,) * sinogram.shape[0] if sinogram.shape[0] > 1 else self.args.seed,
                           device=self.device, callback=callback, **kwargs)

    def _timed(self, *call_args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        result = self._call(*call_args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result, time.perf_counter() - started

    def run(self, methods: list[str], sinograms: list[torch.Tensor], geometry, spacings: list[float], bar, *,
            delta_t: int | None = None) -> dict[str, list[dict]]:
        """``{method: [{"image": hu [N, N], "std": HU [N, N] or None, "seconds", "nfe"} per slice]}`` for ``[1, 1, V, D]``
        sinograms."""
        out: dict[str, list[dict]] = {m: [] for m in methods}
        for method in methods:
            if method in ("fbp", "sirt", "tv"):
                for sinogram, spacing in zip(sinograms, spacings):
                    result, seconds = self._timed(method, sinogram, geometry, spacing, bar)
                    out[method].append({"image": result.image[0, 0].cpu().numpy(), "std": None, "seconds": seconds,
                                        "nfe": 0})
                    bar.update(1)
        prior_methods = [m for m in methods if m in PRIOR_METHODS]
        size = self.args.batch_size
        for first in range(0, len(sinograms), size):
            chunk = list(range(first, min(first + size, len(sinograms))))
            if len(chunk) == 1:
                batch, spacing = sinograms[chunk[0]], spacings[chunk[0]]
            else:
                batch, spacing = torch.cat([sinograms[i] / spacings[i] for i in chunk]), 1.0
            for method, images, stds, seconds, nfe in self._prior_runs(prior_methods, batch, geometry, spacing, bar,
                                                                       delta_t):
                for image, std in zip(images, stds):
                    out[method].append({"image": image, "std": std, "seconds": seconds / len(chunk), "nfe": nfe})
                bar.update(len(chunk))
        return out

    def _prior_runs(self, methods: list[str], batch, geometry, spacing: float, bar, delta_t: int | None):
        """Yield ``(method, [hu [N, N] per slice], [std in HU [N, N] or None per slice], batch seconds, NFE)`` for the
        prior methods on one batch."""
        from ctbird.api import resize
        from ctbird.units import unit_to_hu

        args = self.args
        from ctbird.config import BirdConfig

        bird_config = BirdConfig.preset(args.preset or "full")
        bird_kwargs = {"config": bird_config, "iters": args.iters, "delta_t": delta_t or args.delta_t,
                       "lr_latent": args.lr_latent, "latent_optimizer": args.latent_optimizer,
                       "latent_lr_schedule": args.latent_lr_schedule, "data_filter": args.data_filter,
                       "n_samples": args.samples, "refine_from_t": args.refine_from_t}
        hu_per_unit = float(unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0)))

        def images(tensor):
            return [None] * batch.shape[0] if tensor is None else list(tensor[:, 0].detach().cpu().numpy())

        for method in methods:
            if method == "dps":
                result, seconds = self._timed("dps", batch, geometry, spacing, bar, iters=args.dps_steps)
            elif method == "dds":
                result, seconds = self._timed("dds", batch, geometry, spacing, bar)
            elif method == "bird-exact":
                result, seconds = self._timed("bird", batch, geometry, spacing, bar, grad_mode="exact", **bird_kwargs)
            elif method == "bird-raw" and "bird" in methods:
                continue  # the BIRD stage of bird, below
            else:
                result, seconds = self._timed(method, batch, geometry, spacing, bar, grad_mode="detached", **bird_kwargs)
                if method == "bird" and "bird-raw" in methods:
                    stage = result.solver_result
                    size = (args.size, args.size)
                    raw_std = None if stage.uncertainty is None else resize(stage.uncertainty, size) * hu_per_unit
                    yield ("bird-raw", images(unit_to_hu(resize(stage.image, size))), images(raw_std),
                           float(stage.seconds), int(stage.nfe))
            yield method, images(result.image), images(result.uncertainty), seconds, int(result.nfe)


def settings_record(args: argparse.Namespace, prior_label: str | None) -> dict:
    from ctbird.config import DDSConfig, DPSConfig, SIRTConfig, TVConfig, BirdConfig
    from ctbird.units import EVAL_HU_RANGE

    ct = BirdConfig.preset(args.preset or "full").to_dict()
    return {
        "data": "synthetic Shepp-Logan (HU = -1000 + 2000 v)" if args.synthetic else str(args.data),
        "image_size": args.size, "prior": prior_label, "seed": args.seed, "batch_size": args.batch_size,
        "zoom": args.zoom,
        "metric_data_range_hu": list(EVAL_HU_RANGE), "rmse": RMSE_CONVENTION,
        "bird": {"iters": args.iters or ct["iters"], "delta_t": args.delta_t or ct["delta_t"], "lr_latent": args.lr_latent or ct["lr_latent"],
                 "latent_optimizer": args.latent_optimizer or ct["latent_optimizer"],
                 "latent_lr_schedule": args.latent_lr_schedule or ct["latent_lr_schedule"],
                 "data_filter": args.data_filter, "n_samples": args.samples,
                 "refine_from_t": ct["refine_from_t"] if args.refine_from_t is None else args.refine_from_t,
                 "refine": {k: ct[k] for k in ("refine_delta_t", "refine_cg_iters", "refine_eta")},
                 "preset": args.preset or "full", "defaults": dict(ct)},
        "dps": {"steps": args.dps_steps or DPSConfig().iters, "zeta": DPSConfig().zeta},
        "dds": DDSConfig().to_dict(),
        "sirt_iters": SIRTConfig().iters, "tv_iters": TVConfig().iters,
        "fan_geometry": "source at 2N, detector at N from the axis (pixel units), 360 degrees",
        "parallel_geometry": "180 degrees",
    }


def settings_markdown(settings: dict, slices: list[str]) -> str:
    bird = settings["bird"]
    return "\n".join([
        f"- Data: {settings['data']}; {len(slices)} slice(s) at {settings['image_size']}²"
        + (f", each the central 1/{settings['zoom']:g} of the slice resampled to the grid (a tight field of view)"
           if settings.get("zoom", 1.0) != 1.0 else "") + ": "
        + ", ".join(f"`{s}`" for s in slices),
        f"- Prior: `{settings['prior']}`" if settings["prior"] else "- Prior: none (classical methods only)",
        f"- Metrics: PSNR/SSIM on HU clipped to [{settings['metric_data_range_hu'][0]:.0f}, "
        f"{settings['metric_data_range_hu'][1]:.0f}] (data range {settings['metric_data_range_hu'][1] - settings['metric_data_range_hu'][0]:.0f} HU); "
        f"RMSE in HU over the whole grid, {settings.get('rmse', RMSE_UNCLIPPED)}; mean ± std over slices.",
        (f"- BIRD: {bird['iters']} iterations (NFE = (iterations + 1) x DDIM steps: one more decode scores the "
        f"result), delta_t {bird['delta_t']}, lr_latent {bird['lr_latent']}, latent optimizer "
        f"{bird.get('latent_optimizer', 'adam')} ({bird.get('latent_lr_schedule', 'constant')} rate), data filter exponent {bird.get('data_filter')} "
        f"(the version's BIRD defaults: {bird.get('defaults', bird.get('task_defaults_ct'))}); DPS: {settings['dps']['steps']} steps, zeta "
        f"{settings['dps']['zeta']}; DDS: {settings.get('dds', 'not run')}; SIRT {settings['sirt_iters']} and TV "
        f"{settings['tv_iters']} iterations"
        + (f"; bird-dc (an earlier version's method): {settings['dc']}." if "dc" in settings else
           f"; bird's DDS refinement from t = {bird.get('refine_from_t', 0)}: {bird.get('refine', 'none')} (0: none; "
           "its steps add to bird's NFE).")),
        f"- Geometries: parallel {settings['parallel_geometry']}; fan {settings['fan_geometry']}. "
        "The same matrix projector simulates and reconstructs.",
        f"- Prior methods ran {settings['batch_size']} slice(s) per batch; seconds per slice = batch seconds / batch size."
        if settings.get("batch_size", 1) > 1 else "- Every method ran one slice at a time.",
    ])


# ------------------------------------------------------------------------------------------ figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(out_dir: Path, tag: str, results: list[dict], grid: dict | None) -> list[str]:
    from ctbird.figures import comparison_figure

    plt = _pyplot()
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if grid is not None:
        path = fig_dir / f"{tag}_grid.png"
        png = comparison_figure(grid["images"], reference=grid["truth"], window=(-1000.0, 1000.0),
                                metrics=grid["metrics"], title=grid["title"], error_range=250.0)
        save_png(path, png)
        written.append(path.name)

    configs = sorted({(r["geometry"], r["noise"]) for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    fig, axes = plt.subplots(1, len(configs), figsize=(4.5 * len(configs), 3.6), squeeze=False, constrained_layout=True)
    for ax, (geometry, noise) in zip(axes[0], configs):
        for method in methods:
            rows = sorted((r for r in results if r["geometry"] == geometry and r["noise"] == noise and r["method"] == method),
                          key=lambda r: r["views"])
            if rows:
                ax.errorbar([r["views"] for r in rows], [r["psnr_mean"] for r in rows],
                            yerr=[r["psnr_std"] for r in rows], marker="o", capsize=3, label=method)
        ax.set_title(f"{geometry}, {noise}", fontsize=10)
        ax.set_xlabel("views")
        ax.set_ylabel("PSNR (dB, [-1000, 1000] HU)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    path = fig_dir / f"{tag}_psnr_vs_views.png"
    save_png(path, fig)
    plt.close(fig)
    written.append(path.name)

    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        ax.scatter([max(r["seconds_mean"], 1e-3) for r in rows], [r["psnr_mean"] for r in rows], label=method, s=22)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per slice (log)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("PSNR vs time (every geometry/views/noise setting)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = fig_dir / f"{tag}_psnr_vs_seconds.png"
    save_png(path, fig)
    plt.close(fig)
    written.append(path.name)
    return written


# ------------------------------------------------------------------------------------------ main runs
def simulate_slices(slices, geometry, i0: float | None, device: torch.device) -> list[torch.Tensor]:
    """The sinogram ``[1, 1, V, D]`` of each ``(label, hu, spacing)`` slice, on ``device``; slice ``i``'s noise is
    drawn from seed ``1000 + i``."""
    return [simulate(hu, image_size=hu.shape[-1], pixel_spacing_mm=spacing, geometry=geometry, dose=i0,
                     seed=1000 + index, device=device).sinogram for index, (_, hu, spacing) in enumerate(slices)]


def benchmark(args, slices, prior, prior_label, device, record) -> None:
    runner = Runner(args, prior, device)
    methods = [m for m in METHODS if m in args.methods]
    configs = [(g, v, n) for g in args.geometry for v in args.views for n in args.noise]
    grid_views = min(args.views, key=lambda v: abs(v - GRID_VIEWS))
    per_config: dict[tuple, dict[str, list]] = {c: {m: [] for m in methods} for c in configs}
    grid = None
    with progress(total=len(configs) * len(slices) * len(methods), desc="ct benchmark", unit="run") as bar:
        for geometry_kind, views, i0 in configs:
            geometry = simulation_geometry(geometry_kind, views, args.size)
            sinograms = simulate_slices(slices, geometry, i0, device)
            bar.set_description(f"{geometry_kind} {views}v {noise_label(i0)}")
            outputs = runner.run(methods, sinograms, geometry, [s[2] for s in slices], bar)
            for index, (label, hu, _) in enumerate(slices):
                scores = {}
                for method in methods:
                    item = outputs[method][index]
                    scores[method] = score_ct(item["image"], hu, data_range=EVAL_HU_RANGE)
                    per_config[(geometry_kind, views, i0)][method].append(
                        {"slice": label, **scores[method], **calibration(item, hu), "seconds": item["seconds"],
                         "nfe": item["nfe"]})
                if grid is None and index == 0 and views == grid_views and geometry_kind == args.geometry[0] \
                        and i0 == args.noise[0]:
                    grid = {"truth": hu, "images": {m: outputs[m][index]["image"] for m in methods}, "metrics": scores,
                            "title": f"{label}: {geometry_kind}, {views} views, {noise_label(i0)}"}
    results = []
    for (geometry_kind, views, i0), by_method in per_config.items():
        for method in methods:
            results.append({"geometry": geometry_kind, "views": views, "noise": noise_label(i0), "I0": i0,
                            "method": method, **summarize(by_method[method]), **summarize_calibration(by_method[method]),
                            "per_slice": by_method[method]})
    settings = settings_record(args, prior_label)
    figures = [] if args.no_figures else write_figures(args.out_dir, args.tag, results, grid)
    payload = {"run": record, "settings": settings, "slices": [s[0] for s in slices], "results": results,
               "figures": [f"figures/{f}" for f in figures]}
    json_path, md_path = write_outputs(args.out_dir, args.tag, payload,
                                       ct_markdown(record, settings, [s[0] for s in slices], results, methods, figures, args))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


def calibration(item: dict, truth: np.ndarray) -> dict:
    """``{"spearman", "within_2std"}`` of a result's std map against its error (empty without one)."""
    from ctbird.metrics import uncertainty_calibration
    from ctbird.units import EVAL_HU_RANGE

    if item["std"] is None:
        return {}
    return uncertainty_calibration(item["image"], item["std"], truth, data_range=EVAL_HU_RANGE)


def summarize_calibration(per_slice: list[dict]) -> dict:
    """Means over the slices of :func:`calibration` (empty when the method has no std map)."""
    if "within_2std" not in per_slice[0]:
        return {}
    spearman = [row["spearman"] for row in per_slice if row["spearman"] is not None]
    return {"spearman_mean": float(np.mean(spearman)) if spearman else None,
            "within_2std_mean": float(np.mean([row["within_2std"] for row in per_slice]))}


def ct_markdown(record, settings, slices, results, methods, figures, args) -> str:
    lines = [page_header(f"CT benchmark `{args.tag}`", "benchmarks.ct", record), settings_markdown(settings, slices),
             ""]
    for geometry in args.geometry:
        for i0 in args.noise:
            noise = noise_label(i0)
            lines += [f"## {geometry} beam, {noise}", "", "PSNR (dB) / SSIM by number of views (mean ± std over slices):", ""]
            rows = []
            for method in methods:
                cells = [method]
                for views in args.views:
                    r = next(r for r in results if (r["geometry"], r["views"], r["noise"], r["method"]) == (geometry, views, noise, method))
                    cells.append(f"{fmt(r['psnr_mean'], r['psnr_std'])} / {fmt(r['ssim_mean'], r['ssim_std'], 3)}")
                rows.append(cells)
            lines += [markdown_table(["method"] + [f"{v} views" for v in args.views], rows), ""]
    lines += ["## All settings", ""]
    rows = [[r["geometry"], r["noise"], r["views"], r["method"], fmt(r["psnr_mean"], r["psnr_std"]),
             fmt(r["ssim_mean"], r["ssim_std"], 3), fmt(r["rmse_hu_mean"], r["rmse_hu_std"], 1),
             fmt(r["seconds_mean"], None, 2), fmt(r["nfe_mean"], None, 0)] for r in results]
    headers = ["geometry", "noise", "views", "method", "PSNR (dB)", "SSIM", "RMSE (HU)", "s / slice", "NFE / slice"]
    if any("within_2std_mean" in r for r in results):  # restarts' std maps: do they predict the error?
        headers += ["std–error Spearman", "error ≤ 2 std"]
        for row, r in zip(rows, results):
            row += ["–", "–"] if "within_2std_mean" not in r else [
                "–" if r["spearman_mean"] is None else fmt(r["spearman_mean"], None, 2), fmt(r["within_2std_mean"], None, 3)]
    lines += [markdown_table(headers, rows), ""]
    lines += per_slice_markdown(results, methods)
    if figures:
        lines += ["## Figures", ""] + [f"![{f}](figures/{f})" for f in figures]
    return "\n".join(lines)


def per_slice_markdown(results: list[dict], methods: list[str]) -> list[str]:
    """Per setting: each slice's PSNR by method, and BIRD's per-slice margin over each other method."""
    lines = ["## Per slice", ""]
    settings = list(dict.fromkeys((r["geometry"], r["noise"], r["views"]) for r in results))
    for setting in settings:
        by_method = {r["method"]: r["per_slice"] for r in results if (r["geometry"], r["noise"], r["views"]) == setting}
        names = [row["slice"] for row in next(iter(by_method.values()))]
        lines += [f"### {setting[0]} beam, {setting[1]}, {setting[2]} views: PSNR (dB)", ""]
        rows = [[name] + [fmt(by_method[m][i]["psnr"]) for m in methods] for i, name in enumerate(names)]
        lines += [markdown_table(["slice"] + methods, rows), ""]
        collections = list(dict.fromkeys(name.split("/")[0] for name in names if "/" in name))
        if len(collections) > 1:
            lines += ["Mean PSNR (dB) by collection (the first folder of each slice's path):", ""]
            rows = []
            for collection in collections:
                members = [i for i, name in enumerate(names) if name.split("/")[0] == collection]
                rows.append([f"{collection} ({len(members)})"] + [fmt(float(np.mean([by_method[m][i]["psnr"]
                                                                                     for i in members])))
                                                                  for m in methods])
            lines += [markdown_table(["collection (slices)"] + methods, rows), ""]
        if "bird" in by_method:
            bird = np.array([row["psnr"] for row in by_method["bird"]])
            for other in (m for m in methods if m != "bird"):
                margin = bird - np.array([row["psnr"] for row in by_method[other]])
                lines.append(f"- BIRD − {other}: {fmt(float(margin.mean()), float(margin.std()))} dB (min "
                             f"{fmt(float(margin.min()))}); BIRD above on {int((margin > 0).sum())} of {len(margin)} "
                             f"slices, by 5 dB or more on {int((margin >= 5).sum())}.")
            lines.append("")
    return lines


def rerender(path: Path) -> Path:
    """Rewrite the markdown of an earlier run (benchmark or ``--ablation``) from its results JSON (no computation)."""
    from ctbird.io import write_text_atomic

    payload = json.loads(path.read_text())
    figures = [f.removeprefix("figures/") for f in payload.get("figures", [])]
    if "ablation" in payload:
        markdown = ablation_markdown(payload["run"], payload["settings"], payload["slices"], payload["ablation"], figures,
                                     path.stem.removeprefix("ablation_"))
    else:
        results = payload["results"]
        # the run's option lists, in the order its results were written (geometry, then views, then noise)
        args = argparse.Namespace(
            tag=path.stem,
            geometry=list(dict.fromkeys(r["geometry"] for r in results)),
            noise=list(dict.fromkeys(r["I0"] for r in results)),
            views=list(dict.fromkeys(r["views"] for r in results)))
        methods = [m for m in METHODS if any(r["method"] == m for r in results)]
        markdown = ct_markdown(payload["run"], payload["settings"], payload["slices"], results, methods, figures, args)
    md_path = path.with_suffix(".md")
    write_text_atomic(md_path, markdown.rstrip() + "\n")
    return md_path


def ablation(args, slices, prior, prior_label, device, record) -> None:
    runner = Runner(args, prior, device)
    rows = []
    geometry = simulation_geometry("parallel", ABLATION_VIEWS, args.size)
    sinograms = simulate_slices(slices, geometry, None, device)
    per_delta: dict[int, list] = {}
    with progress(total=len(args.ablation_delta_t) * len(slices), desc="delta_t ablation", unit="run") as bar:
        for delta_t in args.ablation_delta_t:
            bar.set_description(f"delta_t {delta_t}")
            # BIRD's own decode chain (bird-raw): the refinement after it has its own step, refine_delta_t
            items = runner.run(["bird-raw"], sinograms, geometry, [s[2] for s in slices], bar,
                               delta_t=delta_t)["bird-raw"]
            per_delta[delta_t] = [{"slice": label, **score_ct(item["image"], hu, data_range=EVAL_HU_RANGE),
                                   "seconds": item["seconds"],
                                   "nfe": item["nfe"]} for (label, hu, _), item in zip(slices, items)]
    for delta_t, per_slice in per_delta.items():
        rows.append({"delta_t": delta_t, "ddim_steps": len(prior.timestep_pairs(delta_t)),
                     **summarize(per_slice), "per_slice": per_slice})
    settings = settings_record(args, prior_label)
    settings.update({"ablation": {"views": ABLATION_VIEWS, "geometry": "parallel", "noise": "noiseless",
                                  "delta_t": args.ablation_delta_t}})
    settings["bird"]["delta_t"] = args.ablation_delta_t
    figures = []
    if not args.no_figures:
        plt = _pyplot()
        (args.out_dir / "figures").mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
        xs = [r["delta_t"] for r in rows]
        ax.errorbar(xs, [r["psnr_mean"] for r in rows], yerr=[r["psnr_std"] for r in rows], marker="o", capsize=3,
                    label="PSNR")
        ax.set_xlabel("delta_t (DDIM step)")
        ax.set_ylabel("PSNR (dB)")
        twin = ax.twinx()
        twin.plot(xs, [r["seconds_mean"] for r in rows], "s--", color="tab:red", label="seconds")
        twin.set_ylabel("seconds per slice", color="tab:red")
        ax.set_title(f"bird-raw delta_t ablation ({ABLATION_VIEWS} views, parallel, noiseless)", fontsize=10)
        ax.grid(alpha=0.3)
        name = f"ablation_{args.tag}.png"
        save_png(args.out_dir / "figures" / name, fig)
        plt.close(fig)
        figures.append(name)
    markdown = ablation_markdown(record, settings, [s[0] for s in slices], rows, figures, args.tag)
    payload = {"run": record, "settings": settings, "slices": [s[0] for s in slices], "ablation": rows,
               "figures": [f"figures/{f}" for f in figures]}
    json_path, md_path = write_outputs(args.out_dir, f"ablation_{args.tag}", payload, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


def ablation_markdown(record, settings, slices, rows, figures, tag) -> str:
    table = markdown_table(["delta_t", "DDIM steps", "PSNR (dB)", "SSIM", "RMSE (HU)", "s / slice", "NFE / slice"],
                           [[r["delta_t"], r["ddim_steps"], fmt(r["psnr_mean"], r["psnr_std"]), fmt(r["ssim_mean"], r["ssim_std"], 3),
                             fmt(r["rmse_hu_mean"], r["rmse_hu_std"], 1), fmt(r["seconds_mean"]), fmt(r["nfe_mean"], None, 0)]
                            for r in rows])
    return "\n".join([page_header(f"BIRD delta_t ablation `{tag}`", "benchmarks.ct --ablation", record),
                      settings_markdown(settings, slices),
                      f"- Setting: {ABLATION_VIEWS} views, parallel beam, noiseless; same iterations for every delta_t.",
                      "", table, ""] + [f"![{f}](figures/{f})" for f in figures])


def excluded_slices(runs: list[Path]) -> set[str]:
    """Slice labels of earlier runs' results JSON files (``"slices"``); ValueError names an unreadable one."""
    labels: set[str] = set()
    for run in runs:
        try:
            labels.update(json.loads(run.read_text())["slices"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--exclude-slices-of {run}: not a benchmarks.ct results JSON ({exc}).") from exc
    return labels


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender is not None:
        try:
            print(f"wrote {rerender(args.rerender)}", file=sys.stderr)
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
            print(f"error: --rerender {args.rerender}: not a benchmarks.ct results JSON ({exc!r})", file=sys.stderr)
            return 2
        return 0
    from ctbird.priors import default_prior_path, load_prior

    device, record = start_run(args, argv)
    slices = load_ct_slices(None if args.synthetic else args.data, args.max_slices, args.size, synthetic=args.synthetic,
                            exclude=args.excluded_slices, per_folder=args.per_collection)
    if args.zoom != 1.0:
        slices = [(label, *zoom_slice(hu, spacing, args.zoom)) for label, hu, spacing in slices]
    needs_prior = args.ablation or bool(PRIOR_METHODS.intersection(args.methods))
    prior, prior_label = None, None
    if needs_prior:
        prior = load_prior(args.prior, device=str(device))
        prior_label = str(args.prior) if args.prior else str(default_prior_path())
    if args.ablation:
        ablation(args, slices, prior, prior_label, device, record)
    else:
        benchmark(args, slices, prior, prior_label, device, record)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
