"""The blind Gaussian width of :func:`ctbird.restore` over blur widths, noise levels, search noise floors and borders.

Each ``--slice`` (``STACK.npz:INDEX`` of the prior's training stack; never an evaluation slice) is windowed to the
prior's [0, 1] scale, resampled to ``--size``, blurred by a Gaussian of each ``--sigmas`` width (px, reflect borders,
the task's default kernel side) and given white Gaussian noise of each ``--noises`` std (seeded by the slice's
position). BIRD's search then runs with the ``gaussian-deblur`` defaults under the ``cpu-fast`` preset (what the CLI
runs on a CPU), each ``--floors`` value as ``search_noise_floor``, each ``--paddings`` border model of the blind
operator (``restore(padding=)``) and each ``--width-starts`` value as ``width_start_fraction`` (where the width
starts), the refinement off: the width is the search's
(the refinement keeps it), and the PSNR is that of BIRD's image, data range 1 on [0, 1]. ``--refine`` runs the
task's refinement too (``restore`` as the CLI runs it) and scores its image instead, the search's image beside
it. Writes
``blur_width_<tag>.json`` / ``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_blur_width --slice ../shared/data/ct/train/ct256_train_hu.npz:700 \\
        --sigmas 1,2 --noises 0.0025,0.005 --floors 0,0.01 --tag cpu-train256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.common import (RESULTS_DIR, fmt, load_study_prior, load_unit_slice, markdown_table, mean_std,
                               parse_list, progress, page_header, run_script, score_unit, start_run, write_outputs)
from operators import PADDING_MODES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slice", action="append", required=True, help="STACK.npz:INDEX training slice (repeatable)")
    parser.add_argument("--sigmas", default="1,2", help="comma-separated blur widths (px)")
    parser.add_argument("--noises", default="0.0025,0.005", help="comma-separated noise stds on [0, 1]")
    parser.add_argument("--floors", default="0,0.01", help="comma-separated search_noise_floor values")
    parser.add_argument("--paddings", default="reflect",
                        help="comma-separated border models of the blind operator (default: reflect, the task's)")
    parser.add_argument("--width-starts", default=None,
                        help="comma-separated width_start_fraction values (default: the task's, RESTORE_SETUP)")
    parser.add_argument("--size", type=int, default=256, help="working side (default 256)")
    parser.add_argument("--prior-size", type=int, default=None,
                        help="side the prior decodes at (default: --size); `ctbird restore` decodes at the prior's "
                             "trained side (256 for the shipped prior) and resamples to the image's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=None,
                        help="search iterations overriding the cpu-fast preset's (60 for gaussian-deblur)")
    parser.add_argument("--refine", action="store_true",
                        help="score the refined image (the task's RefineConfig) instead of the search's")
    parser.add_argument("--prior", default=None, help="prior folder (default: the shipped CT prior)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "tuning")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    args.sigmas, args.noises, args.floors = (parse_list(v, float) for v in (args.sigmas, args.noises, args.floors))
    args.paddings = parse_list(args.paddings)
    args.width_starts = [None] if args.width_starts is None else parse_list(args.width_starts, float)
    if (args.prior_size is not None and args.prior_size < 8) or (args.iters is not None and args.iters < 1):
        parser.error("--prior-size must be >= 8 and --iters >= 1.")
    args.prior_size = args.prior_size or args.size
    if args.size < 8 or min(args.sigmas) <= 0 or min(args.noises) < 0 or min(args.floors) < 0:
        parser.error("--size must be >= 8, --sigmas positive, --noises and --floors >= 0.")
    if any(start is not None and start < 0 for start in args.width_starts):
        parser.error("--width-starts must be >= 0.")
    if any(p not in PADDING_MODES for p in args.paddings):
        parser.error(f"--paddings takes some of {', '.join(PADDING_MODES)}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import default_kernel_size, restore
    from ctbird.config import BirdConfig
    from ctbird.metrics import kernel_sigma
    from ctbird.restoration_baselines import gaussian_kernel
    from operators.blur import Blur

    device, record = start_run(args, argv)
    prior, prior_path = load_study_prior(args.prior, device, args.prior_size)
    kernel_size = default_kernel_size(args.size)
    images = [load_unit_slice(spec, args.size) for spec in args.slice]
    config = BirdConfig.for_task("gaussian-deblur", "cpu-fast").with_overrides(iters=args.iters)
    rows: list[dict] = []
    cases = [(s, n, f, p, w) for s in args.sigmas for n in args.noises for f in args.floors for p in args.paddings
             for w in args.width_starts]
    with progress(total=len(images) * len(cases), desc="blur width", unit="run") as bar:
        for index, (image, label) in enumerate(images):
            for sigma, noise, floor, padding, start in cases:
                bar.set_description(f"{label} sigma {sigma} noise {noise} floor {floor} {padding} start {start}")
                blur = Blur(torch.from_numpy(gaussian_kernel(kernel_size, sigma)).to(torch.float32),
                            image_shape=tuple(image.shape), padding="reflect")
                generator = torch.Generator().manual_seed(1000 + index)
                with torch.no_grad():
                    y = (blur(image[None]) + noise * torch.randn((1, *image.shape), generator=generator)).clamp(0, 1)
                result = restore(y, "gaussian-deblur", prior=prior, kernel_size=kernel_size, config=config,
                                 refine=None if args.refine else False, search_noise_floor=floor, padding=padding,
                                 width_start_fraction=start, seed=args.seed, device=device)
                width = kernel_sigma(result.kernel[0].cpu())
                rows.append({"image": label, "sigma": sigma, "noise": noise, "floor": floor, "padding": padding,
                             "width_start": start, "initial_width": result.initial_width[0], "width": width,
                             "width_error": abs(width / sigma - 1.0), "input_psnr": score_unit(y, image[None])["psnr"],
                             **{f"bird_{k}": v for k, v in score_unit(result.image.cpu(), image[None]).items()},
                             "search_psnr": score_unit(result.solver_result.transformed.cpu(), image[None])["psnr"],
                             "seconds": result.seconds})
                bar.update(1)
    results = []
    for case in cases:
        group = [r for r in rows if (r["sigma"], r["noise"], r["floor"], r["padding"], r["width_start"]) == case]
        summary = dict(zip(("sigma", "noise", "floor", "padding", "width_start"), case))
        for key in ("initial_width", "width", "width_error", "input_psnr", "bird_psnr", "bird_ssim", "search_psnr",
                    "seconds"):
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([r[key] for r in group])
        summary["width_error_max"] = max(r["width_error"] for r in group)
        results.append({**summary, "per_image": group})
    scored = "the refined image (the task's `RefineConfig`)" if args.refine else "the search's image"
    payload = {"run": record, "slices": [label for _, label in images], "size": args.size,
               "prior_size": args.prior_size, "seed": args.seed,
               "refine": args.refine,
               "kernel_size": kernel_size, "bird": config.to_dict(), "prior": str(prior_path), "results": results}
    table = [[fmt(r["sigma"], digits=1), fmt(r["noise"], digits=4), fmt(r["floor"], digits=3), r["padding"],
              "the task's" if r["width_start"] is None else fmt(r["width_start"], digits=2),
              fmt(r["initial_width_mean"], digits=2),
              fmt(r["width_mean"], r["width_std"], 2), f"{100 * r['width_error_mean']:.0f} % / "
              f"{100 * r['width_error_max']:.0f} %", fmt(r["input_psnr_mean"], digits=2),
              *([fmt(r["search_psnr_mean"], r["search_psnr_std"], 2)] if args.refine else []),
              fmt(r["bird_psnr_mean"], r["bird_psnr_std"], 2), fmt(r["seconds_mean"], digits=0)] for r in results]
    markdown = "\n".join([
        page_header(f"Blind Gaussian width against blur, noise, the search's noise floor and borders (`{args.tag}`)",
                    "benchmarks.studies.tune_blur_width", record),
        f"- Slices: {', '.join(f'`{label}`' for _, label in images)} at {args.size}²; Gaussian blur of the given "
        f"width on a {kernel_size}² kernel (reflect borders), white Gaussian noise of the given std on [0, 1]; BIRD "
        f"with `BirdConfig.for_task('gaussian-deblur', 'cpu-fast')` ({config.iters} iterations), the prior decoding "
        f"at {args.prior_size}², the task's set-up but `search_noise_floor` = floor and the operator's `padding` = "
        "border, `width_start_fraction` = width start; refinement "
        f"{'on' if args.refine else 'off'} (it keeps the search's width); seed {args.seed}.",
        "- Width: `kernel_sigma` of the estimate (px), mean ± std over the slices; error |width / truth - 1|, mean / "
        "worst; start: the width (px) the search started from, mean; PSNR with data range 1 on [0, 1] (input: the "
        f"observation; BIRD: {scored}{'; search: the search image' if args.refine else ''}).", "",
        markdown_table(["blur sigma (px)", "noise std", "search floor", "border", "width start", "start (px)",
                        "width (px)", "width error", "input PSNR", *(["search PSNR"] if args.refine else []),
                        "BIRD PSNR", "s / run"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"blur_width_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
