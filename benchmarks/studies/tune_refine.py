"""The DDS refinement of :func:`ctbird.restore` on CT training slices: PSNR of each task under each refinement.

Each ``--slice`` (``STACK.npz:INDEX`` of the prior's training stack; never an evaluation slice) is windowed to the
prior's [0, 1] scale, resampled to ``--size`` and degraded as :mod:`benchmarks.photo` does (``--noise-std``: with white
Gaussian noise of that std instead). BIRD runs once per slice
and task with the task's defaults under ``--preset`` (:meth:`ctbird.config.BirdConfig.for_task`) and the refinement
off; every variant of :data:`VARIANTS` then refines that same result (:func:`ctbird.api.refine_restoration`, the
estimated operator frozen, seeded as :func:`ctbird.restore` seeds it, so a variant's row is what ``restore`` returns
with that :class:`~ctbird.config.RefineConfig`). ``default`` is the task's current ``RefineConfig.for_task``; ``bird``
the refinement off. ``--baselines`` adds the classical methods of :mod:`ctbird.restoration_baselines`. PSNR/SSIM with
data range 1 on [0, 1]; ``data misfit`` = RMS of ``M(x) - y`` (the estimated operator). Writes
``refine_<tag>.json`` / ``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_refine --slice ../shared/data/ct/train/ct256_train_hu.npz:300 \\
        --slice ../shared/data/ct/train/ct256_train_hu.npz:700 --size 128 --tag cpu-train128
"""

from __future__ import annotations

import argparse
import sys
import time
from types import SimpleNamespace

import torch

from benchmarks.common import (add_restoration_study_options, fmt, initial_kernel, kernel_scores, load_study_prior,
                               load_unit_slice, parse_restoration_study_args, markdown_table, mean_std,
                               observation_view, progress, page_header, run_script, score_unit, start_run,
                               write_outputs)
from ctbird.simulate import degrade_image

#: Row label of the kernel least squares from the true image (blind deblurring).
ORACLE_KERNEL = "kernel fit to the truth"
INITIAL_KERNEL = "initial kernel"
#: Candidate refinements per task (``RefineConfig`` settings over its class defaults).
VARIANTS: dict[str, dict[str, dict]] = {
    "gaussian-deblur": {"t400+anchor1200": {"anchor": 1200.0}, "t200": {"t0": 200},
                        "t200+cg0": {"t0": 200, "cg_iters": 0}, "t200+anchor1200": {"t0": 200, "anchor": 1200.0},
                        "t100+anchor1200": {"t0": 100, "anchor": 1200.0}, "t200+anchor4000": {"t0": 200, "anchor": 4000.0},
                        "t200+anchor1200+samples4": {"t0": 200, "anchor": 1200.0, "samples": 4},
                        "t100+anchor1200+samples4": {"t0": 100, "anchor": 1200.0, "samples": 4},
                        "t100+anchor1200+samples4+refit1": {"t0": 100, "anchor": 1200.0, "samples": 4,
                                                            "kernel_refits": 1},
                        "t200+anchor1200+samples4+refit1": {"t0": 200, "anchor": 1200.0, "samples": 4,
                                                            "kernel_refits": 1}},
    "motion-deblur": {"t400+anchor4000": {"anchor": 4000.0}, "t200+anchor4000": {"t0": 200, "anchor": 4000.0},
                      "t200+anchor4000+refit1": {"t0": 200, "anchor": 4000.0, "kernel_refits": 1},
                      "estimate+t200+anchor4000": {"start": "estimate", "t0": 200, "anchor": 4000.0},
                      "t200+anchor4000+samples4": {"t0": 200, "anchor": 4000.0, "samples": 4},
                      "estimate+t200+anchor4000+samples4": {"start": "estimate", "t0": 200, "anchor": 4000.0,
                                                            "samples": 4},
                      "estimate+t200+anchor4000+samples4+refit2": {"start": "estimate", "t0": 200, "anchor": 4000.0,
                                                                   "samples": 4, "kernel_refits": 2},
                      "estimate+t200+anchor4000+samples4+refit3": {"start": "estimate", "t0": 200, "anchor": 4000.0,
                                                                   "samples": 4, "kernel_refits": 3},
                      "estimate+t200+anchor4000+samples4+refit1": {"start": "estimate", "t0": 200, "anchor": 4000.0,
                                                                   "samples": 4, "kernel_refits": 1},
                      **{f"estimate+t200+anchor{a}+samples4+refit1+misfit": {
                          "start": "estimate", "t0": 200, "anchor": float(a), "samples": 4, "kernel_refits": 1,
                          "anchor_misfit": True} for a in (12000, 40000)},
                      **{f"estimate+t200+anchor12000+samples4+refit{n}+misfit": {
                          "start": "estimate", "t0": 200, "anchor": 12000.0, "samples": 4, "kernel_refits": n,
                          "anchor_misfit": True} for n in (3, 6)}},
    "sr": {"t200": {"t0": 200}, "estimate+t400": {"start": "estimate"}, "estimate+t200": {"start": "estimate", "t0": 200},
           "estimate+t100": {"start": "estimate", "t0": 100},
           "estimate+t200+anchor20000": {"start": "estimate", "t0": 200, "anchor": 20000.0},
           "estimate+t100+anchor20000": {"start": "estimate", "t0": 100, "anchor": 20000.0},
           "estimate+t200+samples4": {"start": "estimate", "t0": 200, "samples": 4},
           "estimate+t100+anchor20000+samples4": {"start": "estimate", "t0": 100, "anchor": 20000.0, "samples": 4}},
    "denoise": {"t400+anchor4000": {"anchor": 4000.0}, "t60+cg0": {"t0": 60, "cg_iters": 0},
                "t100+cg0": {"t0": 100, "cg_iters": 0}, "t150+cg0": {"t0": 150, "cg_iters": 0},
                "t60+cg0+samples8": {"t0": 60, "cg_iters": 0, "samples": 8},
                "t100+cg0+samples8": {"t0": 100, "cg_iters": 0, "samples": 8},
                "estimate+t40+cg0+samples8": {"start": "estimate", "t0": 40, "cg_iters": 0, "samples": 8},
                "t40+cg0+samples8": {"t0": 40, "cg_iters": 0, "samples": 8},
                "t60+cg0+samples16": {"t0": 60, "cg_iters": 0, "samples": 16},
                "estimate+match+step999+cg0": {"start": "estimate", "match_noise": True, "t0": 1, "step": 999,
                                               "cg_iters": 0},
                "estimate+match+cg0": {"start": "estimate", "match_noise": True, "t0": 1, "cg_iters": 0},
                **{f"estimate+match+t{t0}+step999+cg0+samples{n}": {"start": "estimate", "match_noise": True, "t0": t0,
                                                                     "step": 999, "cg_iters": 0, "samples": n}
                   for t0, n in ((40, 8), (60, 8), (80, 8), (60, 16))}},
    "inpaint": {"t400": {}, "t600": {"t0": 600}, "t800": {"t0": 800}, "t900": {"t0": 900},
                "t800+anchor4000": {"t0": 800, "anchor": 4000.0},
                "t800+anchor4000+samples2": {"t0": 800, "anchor": 4000.0, "samples": 2},
                "t800+step40+anchor4000+samples4": {"t0": 800, "step": 40, "anchor": 4000.0, "samples": 4},
                "t800+step40+anchor4000+samples8": {"t0": 800, "step": 40, "anchor": 4000.0, "samples": 8},
                "t800+step40+anchor1200+samples8": {"t0": 800, "step": 40, "anchor": 1200.0, "samples": 8},
                "t800+step40+anchor12000+samples8": {"t0": 800, "step": 40, "anchor": 12000.0, "samples": 8},
                "t800+step40+anchor40000+samples8": {"t0": 800, "step": 40, "anchor": 40000.0, "samples": 8}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_restoration_study_options(parser)
    parser.add_argument("--preset", choices=("full", "cpu-fast"), default="cpu-fast", help="BIRD's budget")
    parser.add_argument("--iters", type=int, default=None, help="BIRD iterations overriding the preset's")
    parser.add_argument("--prior", default=None, help="prior folder (default: the shipped CT prior)")
    parser.add_argument("--noise-std", type=float, default=None,
                        help="white Gaussian noise of this std on [0, 1] instead of the benchmark's noise")
    # 'default' alone: only each task's default refinement
    return parse_restoration_study_args(parser, argv, VARIANTS, extra=("default",))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import (anchor_noise, bird_search_is_kept, classical_estimate, default_kernel_size,
                            refine_restoration, resize, restoration_operator, restore)
    from ctbird.config import BirdConfig, RefineConfig
    from ctbird.restoration_baselines import fit_blur_kernel
    from operators.blur import Blur

    device, record = start_run(args, argv)
    prior, prior_path = load_study_prior(args.prior, device, args.size)
    kernel_size = default_kernel_size(args.size)
    images = [load_unit_slice(spec, args.size) for spec in args.slice]
    rows: dict[tuple[str, str], list[dict]] = {}
    settings: dict[tuple[str, str], dict] = {}
    with progress(total=len(images) * len(args.tasks), desc="tune refine", unit="run") as bar:
        for index, (image, label) in enumerate(images):
            for task in args.tasks:
                bar.set_description(f"{label} {task}")
                case = degrade_image(task, image, sr_factor=args.sr_factor, kernel_size=kernel_size, seed=1000 + index,
                                     noise_std=args.noise_std)
                y = case["y"]
                truth = image[None]
                observed = observation_view(task, y, args.size)
                rows.setdefault((task, "observation"), []).append({"image": label, **score_unit(observed, truth)})
                if args.baselines:
                    from ctbird.restoration_baselines import run_baseline, task_baselines

                    for method in task_baselines(task):
                        out = run_baseline(method, y, task, sr_factor=args.sr_factor, mask=case.get("mask"),
                                           kernel_size=kernel_size)
                        rows.setdefault((task, method), []).append(
                            {"image": label, **score_unit(out.image, truth), "seconds": out.seconds})
                deblur = "deblur" in task
                result = restore(y, task, prior=prior, sr_factor=args.sr_factor, kernel_size=kernel_size if deblur else None,
                                 mask=case.get("mask"), config=BirdConfig.for_task(task, args.preset),
                                 iters=args.iters, refine=False,
                                 seed=args.seed, device=device)
                out_shape = tuple(truth.shape[-2:])
                operator = restoration_operator(task, (truth.shape[1], *out_shape), blind=True, sr_factor=args.sr_factor,
                                                kernel_size=kernel_size if deblur else None, kernel=None,
                                                mask=case.get("mask"))

                def transform(x0: torch.Tensor) -> torch.Tensor:
                    return resize((x0 + 1.0) / 2.0, out_shape)

                def misfit(x0: torch.Tensor, kernels: torch.Tensor | None = None) -> float:
                    with torch.no_grad():
                        if kernels is None:
                            frozen = _frozen(operator, result.solver_result.operator_state[0])
                        else:
                            frozen = Blur(kernels[0], image_shape=tuple(operator.in_shape), padding=operator.padding)
                        return float((frozen(transform(x0)) - y.to(x0.device)).square().mean().sqrt())

                bird = {"image": label, **score_unit(result.image.cpu(), truth), "seconds": result.seconds,
                        "nfe": result.nfe, "misfit": result.search_misfit[0],
                        "noise_sigma": result.noise_sigma[0], **kernel_scores(result, case)}
                if task == "denoise":
                    bird["noise_sigma_true"] = float((y - truth).std())
                rows.setdefault((task, "bird"), []).append(bird)
                if deblur:  # where BIRD's kernel starts, and what the refit's least squares finds from the true image
                    oracle = torch.from_numpy(fit_blur_kernel(truth[0, 0].numpy(), y[0, 0].numpy(), kernel_size))
                    for name, kernel in ((INITIAL_KERNEL, initial_kernel(task, kernel_size, tuple(truth.shape[1:]))),
                                         (ORACLE_KERNEL, oracle)):
                        rows.setdefault((task, name), []).append(
                            {"image": label, **kernel_scores(SimpleNamespace(kernel=kernel), case)})
                candidates = {"default": RefineConfig.for_task(task).to_dict(),
                              **{name: kw for name, kw in VARIANTS[task].items()
                                 if args.variants is None or name in args.variants}}
                for name, kwargs in candidates.items():
                    config = RefineConfig(**kwargs)
                    settings[(task, name)] = config.to_dict()
                    start_x0 = (result.solver_result.image if config.start == "bird"
                                else classical_estimate(y, task, prior.shape[1:]).to(device))
                    nfe0, started = prior.nfe, time.perf_counter()
                    refined, kernels = refine_restoration(prior, start_x0, y.to(device), operator,
                                                          result.solver_result.operator_state, config,
                                                          transform=transform,
                                                          noise_sigma=anchor_noise(config, result.noise_sigma,
                                                                                   result.search_misfit),
                                                          generator=torch.Generator().manual_seed(args.seed))
                    searched = bird_search_is_kept(config, operator)
                    row = {"image": label, **score_unit(transform(refined).clamp(0, 1).cpu(), truth),
                           "seconds": result.seconds * searched + time.perf_counter() - started,
                           "nfe": result.nfe * searched + prior.nfe - nfe0, "misfit": misfit(refined, kernels)}
                    if kernels is not None:
                        row.update(kernel_scores(SimpleNamespace(kernel=kernels), case))
                    rows.setdefault((task, name), []).append(row)
                bar.update(1)
    results = []
    for (task, name), per_image in rows.items():
        summary = {"task": task, "variant": name, "settings": settings.get((task, name))}
        for key in ("psnr", "ssim", "misfit", "kernel_error", "sigma", "noise_sigma", "noise_sigma_true", "seconds", "nfe"):
            values = [r[key] for r in per_image if key in r]
            if values:
                summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std(values)
        results.append({**summary, "per_image": per_image})
    payload = {"run": record, "slices": [label for _, label in images], "size": args.size, "preset": args.preset,
               "sr_factor": args.sr_factor, "noise_std": args.noise_std, "seed": args.seed, "kernel_size": kernel_size,
               "bird": {task: BirdConfig.for_task(task, args.preset).to_dict() for task in args.tasks},
               "prior": str(prior_path), "results": results}
    def cell(r: dict, key: str, digits: int, spread: bool = False) -> str:
        return fmt(r[f"{key}_mean"], r[f"{key}_std"] if spread else None, digits) if f"{key}_mean" in r else "–"

    kernels = any("kernel_error_mean" in r for r in results)
    table = [[r["task"], r["variant"], cell(r, "psnr", 2, True), cell(r, "ssim", 3), cell(r, "misfit", 4),
              *([cell(r, "kernel_error", 3, True), cell(r, "sigma", 2)] if kernels else []),
              cell(r, "seconds", 1), cell(r, "nfe", 0)] for r in results]
    noise = [r for r in results if r["variant"] == "bird" and "noise_sigma_true_mean" in r]
    markdown = "\n".join([
        page_header(f"Refinement of the restorations on CT training slices (`{args.tag}`)",
                    "benchmarks.studies.tune_refine", record),
        f"- Slices: {', '.join(f'`{label}`' for _, label in images)} at {args.size}² (prior decoding at {args.size}²); "
        f"BIRD with `BirdConfig.for_task(task, {args.preset!r})`" + (f" at {args.iters} iterations" if args.iters else "")
        + ", refinement off (`bird`), then each refinement of it; "
        f"SR x{args.sr_factor}; blind kernel {kernel_size}²; degradations of `benchmarks.photo`"
        + (f" with white Gaussian noise of std {args.noise_std} instead of their noise" if args.noise_std is not None
           else "") + f"; seed {args.seed}.",
        "- Variants (`RefineConfig` over its class defaults t0=400, step=20, cg_iters=5, anchor=0, start=bird, samples=1, kernel_refits=0, match_noise=False, noise_scale=1, anchor_misfit=False): `tT` renoise "
        "to t0=T; `cgN` CG steps per chain step; `anchorA` anchor weight A·sigma²·‖A‖² (sigma: the estimated noise std); "
        "`stepS` chain step; `refitN` N rounds of kernel least squares on the refined image and refinement again (blind deblurring); `samplesN` the mean of N refinements; `estimate+` renoise the classical estimate (observation; bicubic for SR) instead of "
        "BIRD's image (for denoising and inpainting `restore` then skips BIRD's search: its seconds and NFE are not counted); "
        "`match` count the start's own noise toward t0's and raise t0 to its level (`match_noise`); `default` = `RefineConfig.for_task(task)` at the time of the run: "
        + "; ".join(f"{t}: {settings.get((t, 'default'))}" for t in args.tasks) + ".",
        "- PSNR/SSIM with data range 1.0 on [0, 1]; mean ± std over the slices; data misfit = RMS of M(x) - y with "
        "BIRD's operator; seconds and NFE include BIRD's.",
        *([f"- Noise std (denoise): estimated {fmt(noise[0]['noise_sigma_mean'], digits=4)}, true "
           f"{fmt(noise[0]['noise_sigma_true_mean'], digits=4)} (`estimate_noise_sigma`)."] if noise else []),
        *([f"- `{INITIAL_KERNEL}`: the kernel BIRD starts from; `{ORACLE_KERNEL}`: the kernel that `fit_blur_kernel` "
           "(the refit's least squares from a flat start, run to its default `KERNEL_FIT_ITERS` steps where the refit "
           "stops at `ctbird.api.KERNEL_REFIT_ITERS`) finds from the true sharp image and the observation, a bound on "
           "what a refit from a restored image reaches. Kernel error: `ctbird.metrics.kernel_error`; width: "
           "`kernel_sigma` (px)."] if kernels else []), "",
        markdown_table(["task", "variant", "PSNR (dB)", "SSIM", "data misfit",
                        *(["kernel error", "kernel width"] if kernels else []), "s / image", "NFE"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"refine_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


def _frozen(operator, state: dict):
    if state:
        operator.load_state_dict(state)
    return operator


if __name__ == "__main__":
    sys.exit(run_script(main))
