"""Photographic restoration benchmark: BIRD's five tasks with any diffusers prior (:func:`ctbird.restore`).

Tasks (BIRD's reference settings, scaled from 256 px to the working size ``S``; :func:`ctbird.simulate.degrade_image`):

* ``gaussian-deblur``: blind; true kernel a Gaussian of sigma ``3 S / 256`` px on a ``k x k`` grid, ``k`` the size
  ``ctbird.restore`` estimates (41 at 256 px); reflect padding (the reference pads with zeros).
* ``motion-deblur``: blind; true kernel a synthetic motion trajectory (a smoothed random walk, rasterized
  bilinearly, normalized; fixed seed per image) on the same grid; reflect padding.
* ``sr``: x8 box downsampling (the reference's average pooling), blind filter.
* ``denoise``: identity; speckle 0.4 + Gaussian 0.15, clipped (the reference's denoising demo noise).
* ``inpaint``: central square hole of side ``80 S / 256`` (the reference's 80 x 80 at 256).

Deblurring, SR and inpainting get ``operators.noise.SpeckleGaussianNoise()`` (0.8 speckle 0.12 + 0.2 Gaussian
0.05); the observation is then clipped to [0, 1] because :func:`ctbird.restore` takes images in [0, 1] (the
reference clips for inpainting and denoising only).

Metrics: PSNR and SSIM with data range 1.0 on [0, 1] images, of the restoration and of the observation itself
(``input``; bilinear upsampling for SR); for the blind deblurring tasks the kernel error
``min_shift ||k_est - k_true||_2 / ||k_true||_2`` (both normalized to sum 1, integer shifts up to ``k // 4``
allowed: blind deconvolution is shift-ambiguous), also for the solver's initial kernel, and the estimated kernel's
width (:func:`kernel_sigma`); for denoising the noise level (std of ``y - x``: true, BIRD's residual, and the estimate
:func:`ctbird.restoration_baselines.estimate_noise_sigma` that the refinement uses). ``BIRD raw``: BIRD's image before
the DDS refinement of :func:`ctbird.restore` (``--no-refine`` skips the refinement).
Classical baselines (:mod:`ctbird.restoration_baselines`) run on the same observations: Wiener with a Gaussian of
estimated width and Richardson–Lucy with BIRD's kernel (deblurring), bicubic (SR), TV (denoising), biharmonic
(inpainting).

Domains: ``faces`` / ``natural`` (``../shared/data/faces``, ``../shared/data/natural``; a photograph prior is
needed: ``--prior PATH|HUB_ID``); ``ct`` runs the same tasks on held-out CT slices on the prior's scale
(HU clipped to [-1024, 3071] mapped to [0, 1]) with the shipped CT prior; ``--synthetic`` uses the Shepp-Logan
phantom instead of files. Writes ``<tag>.json`` / ``.md`` and ``figures/<tag>_grid.png`` under ``--out-dir``
(default ``docs/results/photo``).

Examples (repository root)::

    python -m benchmarks.photo --domain ct --tag cpu --max-images 2 --iters 5 --delta-t 250
    python -m benchmarks.photo --domain faces --prior google/ddpm-ema-celebahq-256 --tag gpu --device cuda
    python -m benchmarks.photo --merge docs/results/photo/a.json docs/results/photo/b.json --tag ab   # runs of disjoint --tasks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, command_line, evenly_spread, initial_kernel,
                               observation_view, fmt, load_ct_slices, markdown_table, mean_std, parse_list, progress,
                               record_markdown, require_positive, run_script, save_png, score_unit, start_run, write_outputs)
from ctbird.config import RESTORE_TASKS as TASKS
from ctbird.metrics import kernel_error, kernel_sigma
from ctbird.simulate import GAUSSIAN_SIGMA_256, HOLE_256, degrade_image

BLIND_DEBLUR = ("gaussian-deblur", "motion-deblur")
DOMAINS = {"faces": SHARED_DATA / "faces", "natural": SHARED_DATA / "natural", "ct": SHARED_DATA / "ct" / "eval"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
QUICK = {"max_images": 2, "size": 64, "iters": 2, "delta_t": 500}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--domain", choices=tuple(DOMAINS), default="faces", help="image set (default faces)")
    parser.add_argument("--data", type=Path, default=None, help="image folder overriding the domain's (recursive)")
    parser.add_argument("--synthetic", action="store_true", help="Shepp-Logan phantom images instead of files")
    parser.add_argument("--prior", default=None,
                        help="diffusers folder or hub id; required for faces/natural (default for ct: the shipped CT prior)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--max-images", type=int, default=None, help="evenly spread subset of this many images (default 4)")
    parser.add_argument("--size", type=int, default=None, help="working size S (default: the prior's native size)")
    parser.add_argument("--sr-factor", type=int, default=8, help="super-resolution factor (default 8)")
    parser.add_argument("--iters", type=int, default=None, help="BIRD iterations (default ctbird.config.BirdConfig.for_task)")
    parser.add_argument("--delta-t", type=int, default=None, help="DDIM step of BIRD's chain (default ctbird.config.BirdConfig.for_task)")
    parser.add_argument("--preset", choices=("auto", "full", "cpu-fast"), default="auto",
                        help="BIRD budget of each task (auto: cpu-fast on a CPU; ctbird.config.BirdConfig.for_task)")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="BIRD's image without the DDS refinement (ctbird.config.RefineConfig.for_task)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="compute device (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents; noise and motion kernels use 1000 + image index")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "photo",
                        help="output folder (default docs/results/photo)")
    parser.add_argument("--tag", default=None, help="run label in the file names (default: the device type)")
    parser.add_argument("--quick", action="store_true", help="tiny run: 2 images at 64 px, 2 iterations, delta_t 500")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figure")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="write one page <tag>.json/.md from earlier runs' JSON files (same images and settings; "
                             "a task scored twice is taken from the later file) instead of running; needs --tag")
    args = parser.parse_args(argv)
    if args.merge:
        if not args.tag:
            parser.error("--merge needs --tag: the name of the merged page.")
        return args
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.max_images = 4 if args.max_images is None else args.max_images
    args.tasks = parse_list(args.tasks)
    bad = [t for t in args.tasks if t not in TASKS]
    if bad or not args.tasks:
        parser.error(f"--tasks must name some of {', '.join(TASKS)}; got {bad or 'nothing'}.")
    require_positive(parser, args, ("max_images", "size", "iters", "delta_t"))
    if args.sr_factor < 2:
        parser.error("--sr-factor must be >= 2.")
    if args.prior is None and args.domain != "ct":
        parser.error(f"--domain {args.domain} needs --prior PATH|HUB_ID: a diffusers UNet2DModel trained on "
                     "photographs (none ships with ctbird); --domain ct uses the shipped CT prior.")
    return args


# ------------------------------------------------------------------------------------------ data
def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop ``[C, H, W]`` to a square and resample it to ``size`` (antialiased bilinear)."""
    from ctbird.api import resize

    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize(image[None, :, top:top + side, left:left + side], (size, size))[0].clamp(0.0, 1.0)


def _match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(dim=0, keepdim=True)


def load_images(args, size: int, channels: int) -> list[tuple[str, torch.Tensor]]:
    """``[(label, image [C, size, size] in [0, 1]), ...]`` for the domain (or ``--data``)."""
    from ctbird.errors import InputError
    from ctbird.io import read_image
    from ctbird.units import hu_to_image

    folder = args.data or DOMAINS[args.domain]
    if args.domain == "ct" or args.synthetic:
        slices = load_ct_slices(None if args.synthetic else folder, args.max_images, size, synthetic=args.synthetic)
        images = [(label, torch.from_numpy(hu_to_image(hu))[None]) for label, hu, _ in slices]
    else:
        if not folder.is_dir():
            raise InputError(f"Image folder {folder} not found; pass --data DIR or --synthetic.")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
        images = [(str(p.relative_to(folder)), _square(torch.from_numpy(read_image(p)), size))
                  for p in evenly_spread(files, args.max_images)]
    return [(label, _match_channels(image.to(torch.float32), channels)) for label, image in images]


# ------------------------------------------------------------------------------------------ run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        json_path, md_path = merge_runs(args.merge, args.out_dir, args.tag, command_line(argv))
        print(f"wrote {json_path} and {md_path}", file=sys.stderr)
        return 0
    from ctbird.api import default_kernel_size, restore
    from ctbird.errors import ConfigError
    from ctbird.priors import default_prior_path, load_prior
    from ctbird.config import BirdConfig, RefineConfig

    device, record = start_run(args, argv)
    from ctbird.config import resolve_preset

    args.preset = resolve_preset(args.preset, device)
    prior = load_prior(args.prior, device=str(device))
    prior_label = str(args.prior) if args.prior else str(default_prior_path())
    size = args.size or prior.image_size
    if size % args.sr_factor and "sr" in args.tasks:
        raise ConfigError(f"--size {size} must be divisible by --sr-factor {args.sr_factor} for the sr task.")
    kernel_size = default_kernel_size(size)
    images = load_images(args, size, prior.channels)
    per_task: dict[str, list[dict]] = {t: [] for t in args.tasks}
    examples: dict[str, dict] = {}
    with progress(total=len(args.tasks) * len(images), desc="photo benchmark", unit="run") as bar:
        for index, (label, image) in enumerate(images):
            for task in args.tasks:
                bar.set_description(f"image {index + 1}/{len(images)} {task}")
                case = degrade_image(task, image, sr_factor=args.sr_factor, kernel_size=kernel_size, seed=1000 + index)

                def callback(info: dict, task=task) -> None:
                    bar.set_postfix_str(f"{task} it {info['iteration']}/{info['iters']} loss {info['loss']:.3g}", refresh=True)

                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                result = restore(case["y"], task, prior=prior, blind=True, config=BirdConfig.for_task(task, args.preset),
                                 iters=args.iters, sr_factor=args.sr_factor,
                                 kernel_size=kernel_size if task in BLIND_DEBLUR else None, mask=case.get("mask"),
                                 refine=None if args.refine else False, seed=args.seed, device=device,
                                 delta_t=args.delta_t, callback=callback)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - started
                restored = result.image.detach().cpu()
                observed = observation_view(task, case["y"], size)
                scores, input_scores = score_unit(restored, image[None]), score_unit(observed, image[None])
                row = {"image": label, **scores, "input_psnr": input_scores["psnr"],
                       "input_ssim": input_scores["ssim"], "seconds": seconds, "nfe": int(result.nfe), "iters_run": int(result.iters_run)}
                if result.refine is not None and result.solver_result is not None:  # BIRD's image, before the refinement
                    raw = score_unit(result.solver_result.transformed.clamp(0, 1).cpu(), image[None])
                    row["bird_psnr"], row["bird_ssim"] = raw["psnr"], raw["ssim"]
                if task in BLIND_DEBLUR and result.kernel is not None:
                    row["kernel_error"] = kernel_error(result.kernel[0].cpu(), case["kernel"])
                    row["initial_kernel_error"] = kernel_error(initial_kernel(task, kernel_size, tuple(image.shape)),
                                                               case["kernel"])
                if task in BLIND_DEBLUR and result.kernel is not None:
                    row["sigma_estimate"] = kernel_sigma(result.kernel[0].cpu())
                if task == "denoise":
                    row["noise_sigma_true"] = float((case["y"] - image[None]).std())
                    row["noise_sigma_bird"] = float((case["y"] - restored).std())
                    row["noise_sigma_estimate"] = result.noise_sigma[0]
                row["baselines"], best_baseline = run_baselines(task, case, image, result, args.sr_factor)
                per_task[task].append(row)
                if index == 0:
                    examples[task] = {"truth": image, "observed": observed[0], "restored": restored[0],
                                      "baseline": best_baseline, "kernel": case.get("kernel"),
                                      "kernel_estimate": result.kernel[0].cpu() if result.kernel is not None else None}
                bar.update(1)
    results = []
    for task, rows in per_task.items():
        summary = {"task": task, "iters": max((r["iters_run"] for r in rows),  # 0: restore skipped BIRD's search
                                              default=args.iters or BirdConfig.for_task(task, args.preset).iters)}
        for key in ("psnr", "ssim", "input_psnr", "input_ssim", "bird_psnr", "bird_ssim", "kernel_error",
                    "initial_kernel_error", "sigma_estimate", "noise_sigma_true", "noise_sigma_bird",
                    "noise_sigma_estimate", "seconds", "nfe"):
            values = [r[key] for r in rows if key in r]
            if values:
                summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std(values)
        for name in (rows[0]["baselines"] if rows else {}):
            for key in ("psnr", "ssim", "seconds"):
                summary[f"{name}_{key}_mean"], summary[f"{name}_{key}_std"] = mean_std([r["baselines"][name][key] for r in rows])
        results.append({**summary, "per_image": rows})
    settings = {
        "domain": args.domain, "data": "synthetic Shepp-Logan" if args.synthetic else str(args.data or DOMAINS[args.domain]),
        "prior": prior_label, "prior_size": prior.image_size, "prior_channels": prior.channels, "size": size,
        "delta_t": args.delta_t or BirdConfig.for_task(args.tasks[0], args.preset).delta_t, "iters": args.iters,
        "preset": args.preset, "task_defaults": {t: BirdConfig.for_task(t, args.preset).to_dict() for t in args.tasks},
        "refine": {t: RefineConfig.for_task(t).to_dict() if args.refine else None for t in args.tasks},
        "kernel_size": kernel_size, "gaussian_sigma_px": GAUSSIAN_SIGMA_256 * size / 256.0, "sr_factor": args.sr_factor,
        "inpaint_hole_px": int(round(HOLE_256 * size / 256)), "metric_data_range": 1.0, "seed": args.seed,
        "noise": "SpeckleGaussianNoise() for deblur/sr/inpaint, (speckle 0.4, gaussian 0.15, clip) for denoise; "
                 "observations clipped to [0, 1]",
    }
    figures = [] if args.no_figures else write_figure(args.out_dir, args.tag, examples)
    payload = {"run": record, "settings": settings, "images": [label for label, _ in images], "results": results,
               "figures": [f"figures/{f}" for f in figures]}
    json_path, md_path = write_outputs(args.out_dir, args.tag, payload,
                                       photo_markdown([record], settings, payload["images"], results, figures, args.tag))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def run_baselines(task: str, case: dict, image: torch.Tensor, result, sr_factor: int
                  ) -> tuple[dict, tuple[str, torch.Tensor]]:
    """``{baseline: {psnr, ssim, seconds}}`` of :mod:`ctbird.restoration_baselines` on the observation; deconvolution
    with the kernel BIRD estimated (Richardson–Lucy) or a Gaussian of estimated width (Wiener). Also the name and image
    ``[C, H, W]`` of the baseline with the highest PSNR (for the figure)."""
    from ctbird.restoration_baselines import run_baseline, task_baselines

    scores, best = {}, ("", None)
    for name in task_baselines(task):
        kernel = result.kernel[0].cpu() if name == "richardson-lucy" and result.kernel is not None else None
        out = run_baseline(name, case["y"], task, sr_factor=sr_factor, mask=case.get("mask"), kernel=kernel,
                           kernel_size=case["kernel"].shape[-1] if "kernel" in case else None)
        scores[name] = {**score_unit(out.image, image[None]), "seconds": out.seconds}
        if best[1] is None or scores[name]["psnr"] > scores[best[0]]["psnr"]:
            best = (name, out.image[0].detach().cpu().float())
    return scores, best


def merge_runs(paths: list[Path], out_dir: Path, tag: str, command: str) -> tuple[Path, Path]:
    """One page ``<tag>.json/.md`` from runs of ``benchmarks.photo`` on the same images and settings (e.g. runs of
    different ``--tasks`` side by side on two cores): results in task order; a task scored by several runs is taken
    from the last of ``paths`` (a rerun with new defaults supersedes), and the records of the runs used are kept."""
    from ctbird.errors import InputError

    runs = [json.loads(Path(p).read_text()) for p in paths]
    for path, run in zip(paths[1:], runs[1:]):
        if run["images"] != runs[0]["images"]:
            raise InputError(f"{path} ran on other images than {paths[0]}; only runs on the same images merge.")
        differ = [k for k in ("domain", "data", "prior", "size", "preset", "seed", "kernel_size")
                  if _comparable(k, run["settings"].get(k)) != _comparable(k, runs[0]["settings"].get(k))]
        if differ:
            raise InputError(f"{path} differs from {paths[0]} in {', '.join(differ)}; only runs of one setting merge.")
    source = {r["task"]: index for index, run in enumerate(runs) for r in run["results"]}  # the last run wins
    results = [r for task in TASKS if task in source for r in runs[source[task]]["results"] if r["task"] == task]
    used = sorted(set(source.values()))
    settings = dict(runs[0]["settings"])
    for key in ("task_defaults", "refine"):
        settings[key] = {t: runs[i]["settings"][key][t] for t, i in source.items()}
    if "sr" in source:
        settings["sr_factor"] = runs[source["sr"]]["settings"]["sr_factor"]
    records = [record for i in used for record in runs[i].get("runs", [runs[i].get("run")])]
    figures = [f for i in used for f in runs[i]["figures"]]
    payload = {"runs": records, "merged_from": [Path(p).name for p in paths],
               "tasks_from": {t: Path(paths[i]).name for t, i in source.items()}, "merge_command": command,
               "settings": settings, "images": runs[0]["images"], "results": results, "figures": figures}
    origin = "; ".join(f"{t} from {name}" for t, name in payload["tasks_from"].items())
    return write_outputs(out_dir, tag, payload, photo_markdown(
        records, settings, payload["images"], results, [f.split("/", 1)[-1] for f in figures], tag,
        merged=f"- Merged by `{command}` ({origin})"))


def _comparable(key: str, value):
    """A setting as runs are compared: the prior by its folder name (checkouts differ in their absolute paths), the
    data folder with its links resolved (a worktree reaches the same data through a link)."""
    if key == "prior" and value:
        return Path(value).name
    return str(Path(value).resolve()) if key == "data" and value else value


def target_rows(results: list[dict], settings: dict) -> list[list[str]]:
    """Per task, over the images: how often BIRD beats its input (SR: bicubic) and the best classical baseline, in PSNR
    and in SSIM, and the error of the estimated degradation parameter (Gaussian width, motion kernel, noise level)."""
    rows = []
    for r in results:
        images = r["per_image"]
        n = len(images)

        def reference(row, key):
            return row["baselines"]["bicubic"][key] if r["task"] == "sr" and "bicubic" in row["baselines"] else row[f"input_{key}"]

        wins = [sum(row[key] > reference(row, key) for row in images) for key in ("psnr", "ssim")]
        classical = [sum(row[key] > max((b[key] for b in row["baselines"].values()), default=-math.inf)
                         for row in images) for key in ("psnr", "ssim")]
        if r["task"] == "gaussian-deblur":
            truth = settings["gaussian_sigma_px"]
            errors = [abs(row["sigma_estimate"] - truth) / truth for row in images if "sigma_estimate" in row]
            parameter = (f"width error {fmt(100 * float(np.mean(errors)), None, 0)} % mean, {fmt(100 * max(errors), None, 0)} % "
                         "at most (target 20 %)") if errors else "–"
        elif r["task"] == "motion-deblur":
            halved = sum(row["kernel_error"] <= row["initial_kernel_error"] / 2 for row in images if "kernel_error" in row)
            parameter = f"kernel error halved on {halved}/{n}"
        elif r["task"] == "denoise":
            errors = [abs(row["noise_sigma_estimate"] - row["noise_sigma_true"]) / row["noise_sigma_true"] for row in images]
            parameter = (f"noise-level error {fmt(100 * float(np.mean(errors)), None, 0)} % mean, "
                         f"{fmt(100 * max(errors), None, 0)} % at most (target 20 %)")
        else:
            parameter = "–"
        rows.append([r["task"], f"{wins[0]}/{n}", f"{wins[1]}/{n}", f"{classical[0]}/{n}", f"{classical[1]}/{n}", parameter])
    return rows


def photo_markdown(records: list[dict], settings: dict, images: list[str], results: list[dict], figures: list[str],
                   tag: str, merged: str | None = None) -> str:
    domain = "CT slices on the prior's [0, 1] scale" if settings["domain"] == "ct" else settings["domain"]
    lines = [f"# Restoration benchmark `{tag}` ({domain})", "", "Generated by `python -m benchmarks.photo`; do not edit by hand.", "",
             *([merged] if merged else []), *(record_markdown(record) for record in records),
             f"- Data: {settings['data']}; {len(images)} image(s) at {settings['size']}²: " + ", ".join(f"`{i}`" for i in images),
             f"- Prior: `{settings['prior']}` ({settings['prior_channels']} channel(s), {settings['prior_size']}²)",
             f"- BIRD: iterations {settings['iters'] or 'the defaults of each task (BirdConfig.for_task)'}, delta_t {settings['delta_t']}; blind kernel "
             f"{settings['kernel_size']}x{settings['kernel_size']}, true Gaussian sigma {settings['gaussian_sigma_px']:.2f} px; "
             f"SR x{settings['sr_factor']}; inpainting hole {settings['inpaint_hole_px']} px",
             "- Refinement after BIRD (`RefineConfig.for_task`): " + "; ".join(
                 f"{task}: {', '.join(f'{k}={v}' for k, v in refine.items()) if refine else 'off'}"
                 for task, refine in settings["refine"].items()),
             f"- Noise: {settings['noise']}",
             "- Metrics: PSNR/SSIM with data range 1.0 on [0, 1]; `input` = the observation itself (bilinearly upsampled "
             "for SR); kernel error = min over shifts of ||k_est - k_true|| / ||k_true|| (sums normalized to 1).", ""]
    rows = []
    for r in results:
        rows.append([r["task"], r["iters"], fmt(r["psnr_mean"], r["psnr_std"]), fmt(r["ssim_mean"], r["ssim_std"], 3),
                     fmt(r["input_psnr_mean"], r["input_psnr_std"]), fmt(r["input_ssim_mean"], r["input_ssim_std"], 3),
                     f"{fmt(r['bird_psnr_mean'])} / {fmt(r['bird_ssim_mean'], None, 3)}" if "bird_psnr_mean" in r else "–",
                     fmt(r.get("kernel_error_mean", float("nan")), r.get("kernel_error_std"), 3),
                     fmt(r.get("initial_kernel_error_mean", float("nan")), None, 3),
                     fmt(r["seconds_mean"]), fmt(r["nfe_mean"], None, 0),
                     "; ".join(f"{name} {fmt(r[f'{name}_psnr_mean'])} / {fmt(r[f'{name}_ssim_mean'], None, 3)}"
                               for name in _baseline_names(r)) or "–",
                     fmt(r["sigma_estimate_mean"]) if "sigma_estimate_mean" in r else
                     (f"BIRD {fmt(r['noise_sigma_bird_mean'], None, 3)}, estimate {fmt(r['noise_sigma_estimate_mean'], None, 3)} "
                      f"(true {fmt(r['noise_sigma_true_mean'], None, 3)})" if "noise_sigma_true_mean" in r else "–")])
    lines += [markdown_table(["task", "iters", "PSNR (dB)", "SSIM", "input PSNR", "input SSIM",
                              "BIRD raw PSNR / SSIM", "kernel error",
                              "initial kernel error", "s / image", "NFE / image", "baselines PSNR / SSIM",
                              "kernel sigma / noise level"], rows), "",
              "Per image (BIRD after its refinement; `input` is bicubic for SR; classical = the best baseline of the task):",
              "", markdown_table(["task", "BIRD > input, PSNR", "BIRD > input, SSIM", "BIRD > classical, PSNR",
                                  "BIRD > classical, SSIM", "estimated degradation"], target_rows(results, settings)), ""]
    lines += [f"![{f}](figures/{f})" for f in figures]
    return "\n".join(lines)


def _baseline_names(summary: dict) -> list[str]:
    return [key[:-len("_psnr_mean")] for key in summary if key.endswith("_psnr_mean")
            and key not in ("input_psnr_mean", "bird_psnr_mean") and not key.startswith("psnr")]


def write_figure(out_dir: Path, tag: str, examples: dict[str, dict]) -> list[str]:
    """One row per task: truth, observation, BIRD, the best classical baseline, the absolute errors of both (one scale
    per row), and the true and estimated kernels when a task of the run has them (deblurring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not examples:
        return []
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    kernels = any(ex["kernel"] is not None for ex in examples.values())
    columns = 6 + 2 * kernels
    fig, axes = plt.subplots(len(examples), columns, figsize=(1.9 * columns, 2.2 * len(examples)), squeeze=False,
                             constrained_layout=True)

    def show(ax, image, title, cmap="gray", vmax=1.0):
        array = image.detach().cpu().numpy()
        if array.ndim == 3:
            array = array.transpose(1, 2, 0) if array.shape[0] == 3 else array[0]
        ax.imshow(array, cmap=cmap, vmin=0.0 if vmax is not None else None, vmax=vmax)
        ax.set_title(title, fontsize=8)

    for row, (task, ex) in zip(axes, examples.items()):
        name, baseline = ex["baseline"]
        show(row[0], ex["truth"], f"{task}: truth")
        show(row[1], ex["observed"], "observation")
        show(row[2], ex["restored"], "BIRD")
        errors = [(ex["restored"] - ex["truth"]).abs().mean(0, keepdim=True)]
        if baseline is not None:
            show(row[3], baseline.clamp(0, 1), name)
            errors.append((baseline.clamp(0, 1) - ex["truth"]).abs().mean(0, keepdim=True))
        scale = max(float(torch.quantile(errors[0].flatten(), 0.99)), 1e-6)
        for ax, error, label in zip(row[4:6], errors, ("|BIRD - truth|", f"|{name} - truth|")):
            show(ax, error, label, cmap="magma", vmax=scale)
        if ex["kernel"] is not None:
            show(row[6], ex["kernel"], "true kernel", cmap="viridis", vmax=None)
        if ex["kernel_estimate"] is not None and kernels:
            show(row[7], ex["kernel_estimate"], "estimated kernel", cmap="viridis", vmax=None)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    name = f"{tag}_grid.png"
    save_png(out_dir / "figures" / name, fig, dpi=100)
    plt.close(fig)
    return [name]


if __name__ == "__main__":
    sys.exit(run_script(main))
