"""BIRD's restoration settings on CT training slices: PSNR of each task under each candidate setting.

Each ``--slice`` (``STACK.npz:INDEX`` of the prior's training stack; never an evaluation slice) is windowed to the
prior's [0, 1] scale, resampled to ``--size``, degraded as :mod:`benchmarks.photo` does (same kernels, noise, mask;
SR by ``--sr-factor``) and restored by :func:`ctbird.restore` under every variant of :data:`VARIANTS` for its task,
the prior decoding at ``--size`` (its UNet is convolutional). ``--baselines`` adds the classical methods of
:mod:`ctbird.restoration_baselines`. PSNR/SSIM with data range 1 on [0, 1]; kernel error as in
:func:`benchmarks.common.kernel_error`; for the Gaussian task also the estimated sigma. Writes ``restore_<tag>.json``
/ ``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_restore --slice ../shared/data/ct/train/ct256_train_hu.npz:300 \\
        --slice ../shared/data/ct/train/ct256_train_hu.npz:900 --size 128 --iters 30 --delta-t 333 --tag cpu-train128
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import (add_restoration_study_options, fmt, kernel_scores, load_unit_slice,
                               parse_restoration_study_args, markdown_table, mean_std, observation_view, progress,
                               page_header, run_script, score_unit, start_run, write_outputs)
from ctbird.simulate import GAUSSIAN_SIGMA_256, degrade_image

#: The CT path's measured latent optimizer (docs/method.md §3).
CT_STYLE = {"latent_optimizer": "normalized-gd", "latent_lr_schedule": "cosine", "keep_best": True, "lr_latent": 1.2e-2,
            "warm_start": False}
#: The BIRD reference's settings (the defaults before this study): Adam at a constant rate, random x_T.
REFERENCE = {"latent_optimizer": "adam", "latent_lr_schedule": "constant", "keep_best": False, "warm_start": False}
#: Candidate settings per task: ``name -> restore() keyword arguments`` over ``BirdConfig.for_task``'s.
WARM = {**CT_STYLE, "warm_start": True}
GAUSS = {"kernel_model": "gaussian", "lr_operator": 5e-2}
VARIANTS: dict[str, dict[str, dict]] = {
    "gaussian-deblur": {"reference": {**REFERENCE, "kernel_model": "mlp"}, "ct-style": CT_STYLE, "ct-style+gaussian": {**CT_STYLE, **GAUSS},
                        "warm+gaussian": {**WARM, **GAUSS}, "warm+gaussian+lr5e-2": {**WARM, **GAUSS, "lr_latent": 5e-2}},
    "motion-deblur": {"reference": REFERENCE, "ct-style": CT_STYLE, "ct-style+op5e-2": {**CT_STYLE, "lr_operator": 5e-2},
                      "warm+op5e-2": {**WARM, "lr_operator": 5e-2},
                      "warm+op5e-2+lr5e-2": {**WARM, "lr_operator": 5e-2, "lr_latent": 5e-2}},
    "sr": {"reference": REFERENCE, "ct-style": CT_STYLE, "ct-style+known": {**CT_STYLE, "blind": False},
           "warm+known": {**WARM, "blind": False}, "warm+blind": WARM,
           "warm+known+lr5e-2": {**WARM, "blind": False, "lr_latent": 5e-2}},
    "denoise": {"reference": REFERENCE, "ct-style": CT_STYLE, "ct-style+lr5e-2": {**CT_STYLE, "lr_latent": 5e-2},
                "ct-style+lr1.5e-1": {**CT_STYLE, "lr_latent": 0.15}, "warm": WARM,
                "warm+lr5e-2": {**WARM, "lr_latent": 5e-2}},
    "inpaint": {"reference": REFERENCE, "ct-style": CT_STYLE, "warm": WARM, "warm+lr5e-2": {**WARM, "lr_latent": 5e-2}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_restoration_study_options(parser)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--delta-t", type=int, default=333)
    return parse_restoration_study_args(parser, argv, VARIANTS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import default_kernel_size, restore
    from ctbird.priors import DiffusionPrior, default_prior_path

    device, record = start_run(args, argv)
    prior = DiffusionPrior.from_pretrained(default_prior_path(), device=str(device), image_size=args.size)
    kernel_size = default_kernel_size(args.size)
    sigma_true = GAUSSIAN_SIGMA_256 * args.size / 256.0
    images = [load_unit_slice(spec, args.size) for spec in args.slice]
    runs = [(task, name, kwargs) for task in args.tasks for name, kwargs in VARIANTS[task].items()
            if args.variants is None or name in args.variants]
    rows: dict[tuple[str, str], list[dict]] = {}
    with progress(total=len(images) * len(runs), desc="tune restore", unit="run") as bar:
        for index, (image, label) in enumerate(images):
            for task in args.tasks:
                case = degrade_image(task, image, sr_factor=args.sr_factor, kernel_size=kernel_size, seed=1000 + index)
                observed = observation_view(task, case["y"], args.size)
                rows.setdefault((task, "observation"), []).append({"image": label, **score_unit(observed, image[None])})
                if args.baselines:
                    from ctbird.restoration_baselines import run_baseline, task_baselines

                    for method in task_baselines(task):
                        out = run_baseline(method, case["y"], task, sr_factor=args.sr_factor, mask=case.get("mask"),
                                           kernel_size=kernel_size)
                        row = {"image": label, **score_unit(out.image, image[None]), "seconds": out.seconds}
                        row.update(kernel_scores(out, case))
                        rows.setdefault((task, method), []).append(row)
                for run_task, name, kwargs in runs:
                    if run_task != task:
                        continue
                    bar.set_description(f"{label} {task} {name}")
                    kw = dict(kwargs)
                    result = restore(case["y"], task, prior=prior, blind=kw.pop("blind", True), sr_factor=args.sr_factor,
                                     kernel_size=kernel_size if "deblur" in task else None, mask=case.get("mask"),
                                     iters=args.iters, delta_t=args.delta_t, seed=args.seed, device=device, **kw)
                    row = {"image": label, **score_unit(result.image.cpu(), image[None]), "seconds": result.seconds,
                           "nfe": result.nfe}
                    row.update(kernel_scores(result, case))
                    rows.setdefault((task, name), []).append(row)
                    bar.update(1)
    results = []
    for (task, name), per_image in rows.items():
        summary = {"task": task, "variant": name, "settings": VARIANTS.get(task, {}).get(name)}
        for key in ("psnr", "ssim", "kernel_error", "sigma", "seconds", "nfe"):
            values = [r[key] for r in per_image if key in r]
            if values:
                summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std(values)
        results.append({**summary, "per_image": per_image})
    payload = {"run": record, "slices": [label for _, label in images], "size": args.size, "iters": args.iters,
               "delta_t": args.delta_t, "sr_factor": args.sr_factor, "seed": args.seed, "kernel_size": kernel_size,
               "true_sigma_px": sigma_true, "prior": str(default_prior_path()), "results": results}
    table = [[r["task"], r["variant"], fmt(r["psnr_mean"], r["psnr_std"]), fmt(r["ssim_mean"], digits=3),
              *(fmt(r[k], digits=3) if k in r else "–" for k in ("kernel_error_mean", "sigma_mean")),
              fmt(r["seconds_mean"], digits=1) if "seconds_mean" in r else "–"] for r in results]
    markdown = "\n".join([
        page_header(f"Restoration settings on CT training slices (`{args.tag}`)", "benchmarks.studies.tune_restore",
                    record),
        f"- Slices: {', '.join(f'`{label}`' for _, label in images)} at {args.size}² (prior decoding at {args.size}²); "
        f"{args.iters} iterations at delta_t {args.delta_t}; SR x{args.sr_factor}; blind kernel {kernel_size}², true "
        f"Gaussian sigma {sigma_true:.2f} px; degradations of `benchmarks.photo`; seed {args.seed}.",
        "- Variants: `reference` = the BIRD reference's optimizer (Adam, constant rate, random x_T; the rates of "
        "`BirdConfig.for_task` at the time of the run); `ct-style` = " +
        ", ".join(f"{k}={v}" for k, v in CT_STYLE.items()) + "; `+gaussian` a log-sigma Gaussian kernel; "
        "`+known` the true (box) SR filter; `warm` = ct-style with x_T from the DDIM inversion of the observation "
        "(bicubic for SR); `+lrX` the latent rate; `+opX` the operator rate.",
        "- PSNR/SSIM with data range 1.0 on [0, 1]; mean ± std over the slices.", "",
        markdown_table(["task", "variant", "PSNR (dB)", "SSIM", "kernel error", "sigma (px)", "s / image"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"restore_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
