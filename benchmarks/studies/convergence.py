"""BIRD's PSNR against iterations on one CT slice, for each latent optimizer, rate and schedule: is the budget converged?

Simulates ``--views`` parallel-beam views of one slice (noiseless, matrix projector, the units of
:func:`ctbird.reconstruct`), runs BIRD (detached gradients, ``ctbird.config.BirdConfig``'s learning rate and schedule unless
given) with each of ``--optimizers`` for ``--iters`` iterations and, every ``--every`` iterations, decodes the
current latent (extra decodes, not counted in the timing) to score it against the slice: PSNR/SSIM on HU with
data range ``EVAL_HU_RANGE`` = [-1000, 1000] HU (:func:`ctbird.metrics.score_ct`) and the data loss. FBP, SIRT and
TV at their defaults (:func:`ctbird.reconstruct`) on the same sinogram are the reference lines. The slice is a DICOM file, or ``STACK.npz:INDEX`` (a slice of an HU stack such as the
training set, at ``--pixel-mm``), so that settings can be tuned away from the evaluation slices. Writes
``<tag>.json`` / ``.md`` and ``figures/<tag>.png`` under ``--out-dir`` (default ``docs/results/convergence``).

Examples (repository root)::

    python -m benchmarks.studies.convergence --iters 200 --delta-t 250 --every 25 --optimizers adam,normalized-gd --tag cpu
    python -m benchmarks.studies.convergence --slice ../shared/data/ct/train/ct256_train_hu.npz:700 --tag cpu-train
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import (RESULTS_DIR, SAMPLE_SLICE, add_data_filter_option, fmt, markdown_table, parse_list,
                               read_slice, page_header, run_script, save_png, start_run, write_outputs)
from ctbird.metrics import score_ct
from ctbird.simulate import simulate, simulation_geometry
from ctbird.units import EVAL_HU_RANGE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slice", default=str(SAMPLE_SLICE),
                        help="DICOM slice, or STACK.npz:INDEX (default the shipped chest sample)")
    parser.add_argument("--pixel-mm", type=float, default=1.4,
                        help="pixel spacing (mm) of a STACK.npz slice when the stack has no pixel_spacing_mm")
    parser.add_argument("--optimizers", default="adam", help="latent optimizers to compare (adam, normalized-gd)")
    add_data_filter_option(parser)
    parser.add_argument("--latent-lr-schedule", default=None,
                        help="rate schedules of x_T to compare, of constant, cosine (default ctbird.config.BirdConfig)")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--size", type=int, default=256, help="working grid side N (default 256)")
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--every", type=int, default=25, help="score the latent every this many iterations")
    parser.add_argument("--delta-t", type=int, default=250, help="DDIM step (default 250: 4 steps, CPU-friendly)")
    parser.add_argument("--lr-latent", default=None,
                        help="latent learning rates to compare, comma-separated (default ctbird.config.BirdConfig)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default=None, help="prior folder (default the shipped one)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "convergence",
                        help="output folder (default docs/results/convergence)")
    parser.add_argument("--tag", default=None, help="file-name label (default the device type)")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    if min(args.views, args.iters, args.every, args.size) < 1 or args.pixel_mm <= 0:
        parser.error("--views, --iters, --every, --size and --pixel-mm must be positive.")
    args.optimizers = parse_list(args.optimizers)
    from ctbird.config import LATENT_LR_SCHEDULES, LATENT_OPTIMIZERS, BirdConfig

    if not args.optimizers or set(args.optimizers) - set(LATENT_OPTIMIZERS):
        parser.error(f"--optimizers takes some of {', '.join(LATENT_OPTIMIZERS)}, got {args.optimizers}.")
    ct = BirdConfig().to_dict()
    args.latent_lr_schedule = parse_list(args.latent_lr_schedule or ct["latent_lr_schedule"])
    if not args.latent_lr_schedule or set(args.latent_lr_schedule) - set(LATENT_LR_SCHEDULES):
        parser.error(f"--latent-lr-schedule takes some of {', '.join(LATENT_LR_SCHEDULES)}, got {args.latent_lr_schedule}.")
    try:
        args.lr_latent = parse_list(args.lr_latent, float) if args.lr_latent else [ct["lr_latent"]]
    except ValueError:
        parser.error(f"--lr-latent takes comma-separated numbers, got {args.lr_latent!r}.")
    if not args.lr_latent or min(args.lr_latent) <= 0:
        parser.error("--lr-latent needs positive rates.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from operators import SinogramFilter
    from operators.radon import Radon
    from ctbird.api import reconstruct
    from ctbird.config import SIRTConfig, TVConfig
    from ctbird.priors import default_prior_path, load_prior
    from ctbird.solvers.bird import BIRD, data_loss
    from ctbird.units import unit_to_hu, unit_to_mu

    device, record = start_run(args, argv)
    truth, spacing, slice_label = read_slice(args.slice, args.size, args.pixel_mm)
    geometry = simulation_geometry("parallel", args.views, args.size)
    radon = Radon(geometry, args.size, backend="matrix", device=device)
    sinogram = simulate(truth, image_size=args.size, pixel_spacing_mm=spacing, geometry=geometry, seed=args.seed,
                        device=device).sinogram

    def score(image_hu: torch.Tensor) -> dict:
        return score_ct(image_hu[0, 0], truth, data_range=EVAL_HU_RANGE)

    references = {method: score(reconstruct(sinogram, geometry, image_size=args.size, pixel_spacing_mm=spacing,
                                            method=method, device=device).image)
                  for method in ("fbp", "sirt", "tv")}  # at their defaults (ctbird.config)
    prior = load_prior(args.prior, device=str(device))
    fitted, y_fitted = radon, sinogram
    if args.data_filter is not None:
        sinogram_filter = SinogramFilter(radon.out_shape, exponent=args.data_filter).to(device)
        fitted, y_fitted = sinogram_filter @ radon, sinogram_filter(sinogram)
    curves: dict[str, list[dict]] = {}
    for optimizer, lr, schedule in itertools.product(args.optimizers, args.lr_latent, args.latent_lr_schedule):
        label = ", ".join([optimizer] + ([f"lr {lr:g}"] if len(args.lr_latent) > 1 else [])
                          + ([schedule] if len(args.latent_lr_schedule) > 1 else []))
        rows: list[dict] = curves.setdefault(label, [])
        scoring_seconds = 0.0

        def callback(info: dict, rows=rows, label=label) -> None:
            nonlocal scoring_seconds
            if info["iteration"] % args.every and info["iteration"] != 1:
                return
            started = time.perf_counter()
            nfe_before = prior.nfe
            with torch.no_grad():
                x0 = prior.decode(info["latent"], delta_t=args.delta_t)
                # the loss of this iterate (info["loss"] is the one before the step that made it)
                loss = float(data_loss(fitted(unit_to_mu(x0) * spacing), y_fitted, "mse", None))
            prior.nfe = nfe_before  # scoring decodes are not part of BIRD's budget
            rows.append({"iteration": info["iteration"], "loss": loss, "nfe": info["nfe"],
                         "seconds": info["seconds"] - scoring_seconds, **score(unit_to_hu(x0))})
            scoring_seconds += time.perf_counter() - started
            print(f"{label} iteration {info['iteration']}: loss {loss:.4g}, PSNR {rows[-1]['psnr']:.2f} dB",
                  file=sys.stderr, flush=True)

        bird = BIRD(prior, fitted, iters=args.iters, lr_latent=lr, delta_t=args.delta_t, grad_mode="detached",
                    latent_optimizer=optimizer, latent_lr_schedule=schedule, input_transform=lambda x0: unit_to_mu(x0) * spacing,
                    callback=callback)
        bird.run(y_fitted, generator=torch.Generator().manual_seed(args.seed))

    settings = {"slice": slice_label, "pixel_spacing_mm": spacing, "optimizers": args.optimizers,
                "latent_lr_schedules": args.latent_lr_schedule, "data_filter": args.data_filter,
                "views": args.views, "image_size": args.size, "delta_t": args.delta_t,
                "ddim_steps": len(prior.timestep_pairs(args.delta_t)), "lr_latent": args.lr_latent, "seed": args.seed,
                "prior": str(args.prior) if args.prior else str(default_prior_path()),
                "metric_data_range_hu": list(EVAL_HU_RANGE)}
    figures = []
    if not args.no_figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        (args.out_dir / "figures").mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
        for label, rows in curves.items():
            ax.plot([r["iteration"] for r in rows], [r["psnr"] for r in rows], "o-", ms=3, label=f"BIRD, {label}")
        for (name, ref), style in zip(references.items(), ("--", "-.", ":")):
            ax.axhline(ref["psnr"], color="gray", linestyle=style, label=name.upper())
        ax.set_xlabel("BIRD iteration")
        ax.set_ylabel("PSNR (dB, [-1000, 1000] HU)")
        ax.set_title(f"{slice_label}: {args.views} parallel views, delta_t {args.delta_t}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"{args.tag}.png"
        save_png(args.out_dir / "figures" / name, fig)
        plt.close(fig)
        figures.append(name)
    table = markdown_table(["BIRD variant", "iteration", "NFE", "data loss", "PSNR (dB)", "SSIM", "seconds"],
                           [[label, r["iteration"], r["nfe"], f"{r['loss']:.4g}", fmt(r["psnr"]),
                             fmt(r["ssim"], None, 3), fmt(r["seconds"], None, 1)]
                            for label, rows in curves.items() for r in rows])
    reference_line = ", ".join(f"{name.upper()} {fmt(ref['psnr'])} dB / {fmt(ref['ssim'], None, 3)}"
                               for name, ref in references.items())
    markdown = "\n".join([
        page_header(f"BIRD convergence `{args.tag}`", "benchmarks.studies.convergence", record),
        f"- Setting: `{slice_label}` at {args.size}² ({spacing:.3g} mm pixels), {args.views} parallel views, noiseless; BIRD with "
        f"detached gradients, delta_t {args.delta_t} ({settings['ddim_steps']} DDIM steps), lr_latent "
        f"{', '.join(f'{lr:g}' for lr in args.lr_latent)}, rate schedule {', '.join(args.latent_lr_schedule)}, data filter exponent {args.data_filter}, seed "
        f"{args.seed}; prior `{settings['prior']}`.",
        "- Metrics: PSNR/SSIM on HU clipped to [-1000, 1000] (data range 2000 HU); seconds exclude the scoring decodes.",
        f"- References on the same sinogram: {reference_line} (SIRT {SIRTConfig().iters}, TV {TVConfig().iters} "
        "iterations).", "", table, ""]
        + [f"![{f}](figures/{f})" for f in figures])
    json_path, md_path = write_outputs(args.out_dir, args.tag,
                                       {"run": record, "settings": settings, "references": references, "curves": curves,
                                        "figures": [f"figures/{f}" for f in figures]}, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
