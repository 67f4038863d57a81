"""How far the motion-deblurring benchmark's kernel error can fall: kernels fitted from the TRUE sharp image.

Each ``--slice`` (``STACK.npz:INDEX`` of the prior's training stack) is windowed to the prior's [0, 1] scale,
resampled to ``--size`` and degraded as :mod:`benchmarks.photo` degrades it for ``motion-deblur`` (seed ``1000 +`` its
position, as in :mod:`benchmarks.studies.tune_refine`). No diffusion prior runs: every row is a kernel that a blind
method could at best approach.

* ``initial kernel``: where BIRD's free kernel starts (flat).
* ``true kernel blurred by s px``: the true kernel smoothed by a Gaussian of width ``s``: what the metric charges for
  a kernel that is right up to that blur.
* ``least squares from the truth``: :func:`ctbird.restoration_baselines.fit_blur_kernel` from the true image and the
  observation, stopped after N steps (the default and run to convergence), confined to the true kernel's support, or
  with the Tikhonov ``smoothness`` weight.

Kernel error: :func:`ctbird.metrics.kernel_error` (shift-tolerant); width: ``kernel_sigma`` (px); misfit: the data
term the least-squares fit minimizes (:func:`ctbird.restoration_baselines.kernel_misfit`) relative to the true
kernel's, below 1 where the observation favours that kernel over the truth. Writes
``kernel_bound_<tag>.json`` / ``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.kernel_bound --slice ../shared/data/ct/train/ct256_train_hu.npz:700 --tag cpu-train256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS_DIR, fmt, initial_kernel, load_unit_slice, markdown_table, mean_std,
                               progress, page_header, run_script, start_run, write_outputs)

#: Gaussian widths (px) that smooth the true kernel.
TRUTH_BLURS = (0.5, 1.0, 1.5)
#: FISTA steps of the converged least-squares rows.
CONVERGED_ITERS = 2000
#: Tikhonov weights of the smoothed least-squares rows.
SMOOTHNESS = (0.03, 0.1, 0.3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slice", action="append", required=True, help="STACK.npz:INDEX training slice (repeatable)")
    parser.add_argument("--size", type=int, default=256, help="working side (default 256)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "tuning")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error("--size must be >= 16.")
    return args


def candidates(truth: np.ndarray, y: np.ndarray, kernel: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Every row's kernel ``[size, size]`` for one slice (``truth`` and ``y`` ``[H, W]``, ``kernel`` the true one)."""
    from scipy.ndimage import gaussian_filter

    from ctbird.restoration_baselines import KERNEL_FIT_ITERS, fit_blur_kernel

    rows = {f"true kernel blurred by {s} px": gaussian_filter(kernel, s) for s in TRUTH_BLURS}
    rows[f"least squares from the truth, {KERNEL_FIT_ITERS} steps (default)"] = fit_blur_kernel(truth, y, size)
    rows[f"least squares from the truth, {CONVERGED_ITERS} steps"] = fit_blur_kernel(truth, y, size,
                                                                                      iters=CONVERGED_ITERS)
    rows[f"least squares from the truth on the true support, {CONVERGED_ITERS} steps"] = fit_blur_kernel(
        truth, y, size, iters=CONVERGED_ITERS, support=kernel > 0)
    for weight in SMOOTHNESS:
        rows[f"least squares from the truth, smoothness {weight}, {CONVERGED_ITERS} steps"] = fit_blur_kernel(
            truth, y, size, iters=CONVERGED_ITERS, smoothness=weight)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import default_kernel_size
    from ctbird.metrics import kernel_error, kernel_sigma
    from ctbird.restoration_baselines import kernel_misfit
    from ctbird.simulate import degrade_image

    device, record = start_run(args, argv)
    size = default_kernel_size(args.size)
    images = [load_unit_slice(spec, args.size) for spec in args.slice]
    rows: dict[str, list[dict]] = {}
    for index, (image, label) in enumerate(progress(images, desc="kernel bound", unit="slice")):
        case = degrade_image("motion-deblur", image, kernel_size=size, seed=1000 + index)
        kernel = case["kernel"].numpy().astype(np.float64)
        truth, y = image[0].numpy().astype(np.float64), case["y"][0, 0].numpy().astype(np.float64)
        found = {"initial kernel": initial_kernel("motion-deblur", size, tuple(image.shape)).numpy()}
        found.update(candidates(truth, y, kernel, size))
        true_misfit = kernel_misfit(truth, y, kernel)
        for name, estimate in found.items():
            rows.setdefault(name, []).append({"image": label, "kernel_error": kernel_error(estimate, kernel),
                                              "sigma": kernel_sigma(estimate),
                                              "misfit_ratio": kernel_misfit(truth, y, estimate) / true_misfit})
    results = []
    for name, per_image in rows.items():
        errors = [r["kernel_error"] for r in per_image]
        summary = {"kernel": name, "kernel_error_max": max(errors)}
        for key in ("kernel_error", "sigma", "misfit_ratio"):
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([r[key] for r in per_image])
        results.append({**summary, "per_image": per_image})
    initial = results[0]["per_image"]
    for r in results:
        r["halved"] = sum(row["kernel_error"] <= 0.5 * first["kernel_error"]
                          for row, first in zip(r["per_image"], initial))
    payload = {"run": record, "slices": [label for _, label in images], "size": args.size, "kernel_size": size,
               "results": results}
    table = [[r["kernel"], fmt(r["kernel_error_mean"], r["kernel_error_std"], 3), fmt(r["kernel_error_max"], digits=3),
              f"{r['halved']} / {len(images)}", fmt(r["sigma_mean"], digits=2), fmt(r["misfit_ratio_mean"], digits=4),
              f"{sum(row['misfit_ratio'] < 1.0 for row in r['per_image'])} / {len(images)}"] for r in results]
    markdown = "\n".join([
        page_header(f"Motion-kernel error from the true image: the benchmark's bound (`{args.tag}`)",
                    "benchmarks.studies.kernel_bound", record),
        f"- Slices: {', '.join(f'`{label}`' for _, label in images)} at {args.size}², the `motion-deblur` "
        f"degradation of `benchmarks.photo` (a {size}² random-walk kernel, speckle and Gaussian noise, seed 1000 + "
        "index). No prior runs: the rows fit the kernel from the true sharp image.",
        "- Kernel error: `ctbird.metrics.kernel_error`, mean ± std and worst over the slices; `halved`: slices "
        "where it is at most half the initial kernel's (the #15 target); width: `kernel_sigma` (px).",
        "- Misfit: the data term that the least-squares rows minimize (`ctbird.restoration_baselines.kernel_misfit`), "
        "divided by the true kernel's, mean over the slices; `fits better`: slices where it is below 1, i.e. where "
        "the observation, read with the true image, favours that kernel over the true one.", "",
        markdown_table(["kernel", "kernel error", "worst", "halved", "width (px)", "misfit / true kernel's",
                        "fits better"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"kernel_bound_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
