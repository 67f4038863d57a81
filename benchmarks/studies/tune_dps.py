"""DPS's guidance step on CT training slices: PSNR for each relative zeta and step count.

The DPS baseline (:func:`ctbird.reconstruct` with ``method="dps"``) scales its guidance step as
``zeta = relative_zeta / (slope * ||A||)`` (``slope``: attenuation per unit of the prior's scale, ``||A||``: the
projector's norm), so that one relative value serves every geometry and pixel size. This script measures which
relative value works, on slices away from the evaluation set: each ``--slice`` (a DICOM file or
``STACK.npz:INDEX``, e.g. a training slice) is projected noiselessly (``--views`` parallel views, matrix backend,
the units of :func:`ctbird.reconstruct`) and reconstructed by DPS for every (zeta, steps) pair, with FBP and SIRT
as reference lines. PSNR/SSIM on HU with data range ``EVAL_HU_RANGE`` (:func:`ctbird.metrics.score_ct`). Writes ``dps_<tag>.json`` / ``.md`` under
``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_dps --slice ../shared/data/ct/train/ct256_train_hu.npz:300 \\
        --slice ../shared/data/ct/train/ct256_train_hu.npz:900 --zeta 0.1,0.3,1,3,10 --tag cpu-train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import (RESULTS_DIR, fmt, markdown_table, parse_list, progress, read_slice, record_markdown,
                               run_script, start_run, summarize, write_outputs)
from ctbird.metrics import score_ct
from ctbird.simulate import simulate, simulation_geometry
from ctbird.units import EVAL_HU_RANGE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slice", action="append", required=True,
                        help="DICOM slice or STACK.npz:INDEX (repeatable); tune away from the evaluation slices")
    parser.add_argument("--pixel-mm", type=float, default=1.4,
                        help="pixel spacing (mm) of a STACK.npz slice when the stack has no pixel_spacing_mm")
    parser.add_argument("--zeta", default="0.3,1,3", help="relative guidance steps to compare, comma-separated")
    parser.add_argument("--steps", default="100", help="DPS sampling steps to compare, comma-separated")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--size", type=int, default=256, help="working grid side N (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default=None, help="prior folder (default the shipped one)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "tuning",
                        help="output folder (default docs/results/tuning)")
    parser.add_argument("--tag", default=None, help="file-name label (default the device type)")
    args = parser.parse_args(argv)
    try:
        args.zeta = parse_list(args.zeta, float)
        args.steps = parse_list(args.steps, int)
    except ValueError:
        parser.error(f"--zeta takes numbers and --steps integers, got {args.zeta!r} and {args.steps!r}.")
    if not args.zeta or min(args.zeta) <= 0 or not args.steps or min(args.steps) < 1:
        parser.error("--zeta needs positive values and --steps positive integers.")
    if min(args.views, args.size) < 1 or args.pixel_mm <= 0:
        parser.error("--views, --size and --pixel-mm must be positive.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import reconstruct
    from ctbird.priors import default_prior_path, load_prior

    device, record = start_run(args, argv)
    prior = load_prior(args.prior, device=str(device))
    geometry = simulation_geometry("parallel", args.views, args.size)
    settings = [("fbp", None, None), ("sirt", None, None)] + [("dps", z, s) for s in args.steps for z in args.zeta]
    rows = {setting: [] for setting in settings}
    labels = []
    with progress(total=len(args.slice) * len(settings), desc="tune dps", unit="run") as bar:
        for spec in args.slice:
            truth, spacing, label = read_slice(spec, args.size, args.pixel_mm)
            labels.append(label)
            sinogram = simulate(truth, image_size=args.size, pixel_spacing_mm=spacing, geometry=geometry, seed=args.seed,
                                device=device).sinogram
            for method, zeta, steps in settings:
                bar.set_description(f"{label} {method}" + (f" zeta {zeta:g}, {steps} steps" if zeta else ""))
                result = reconstruct(sinogram, geometry, image_size=args.size, pixel_spacing_mm=spacing,
                                     prior=prior, method=method, iters=steps, zeta=zeta, seed=args.seed,
                                     device=device)
                rows[(method, zeta, steps)].append({"slice": label, **score_ct(result.image[0, 0], truth, data_range=EVAL_HU_RANGE),
                                                    "seconds": result.seconds, "nfe": result.nfe})
                bar.update(1)
    results = [{"method": method, "relative_zeta": zeta, "steps": steps, **summarize(per_slice), "per_slice": per_slice}
               for (method, zeta, steps), per_slice in rows.items()]
    payload = {"run": record, "slices": labels, "views": args.views, "image_size": args.size, "seed": args.seed,
               "prior": str(args.prior) if args.prior else str(default_prior_path()), "results": results}
    table = [[r["method"], "–" if r["relative_zeta"] is None else f"{r['relative_zeta']:g}",
              "–" if r["steps"] is None else str(r["steps"]), fmt(r["psnr_mean"], r["psnr_std"]),
              fmt(r["ssim_mean"], digits=3), *[fmt(s["psnr"]) for s in r["per_slice"]], fmt(r["seconds_mean"], digits=1)]
             for r in results]
    markdown = "\n".join([
        f"# DPS guidance step on CT (`{args.tag}`)", "", "Generated by `python -m benchmarks.studies.tune_dps`; do not edit by hand.",
        "", record_markdown(record), f"- Slices: {', '.join(f'`{label}`' for label in labels)}; {args.views} parallel "
        f"views, noiseless, {args.size}², matrix projector; seed {args.seed}; prior `{payload['prior']}`.",
        "- PSNR/SSIM on HU clipped to [-1000, 1000] (data range 2000 HU); mean ± std over the slices.", "",
        markdown_table(["method", "relative zeta", "steps", "PSNR (dB)", "SSIM", *[f"PSNR `{label}`" for label in labels],
                        "s / slice"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"dps_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
