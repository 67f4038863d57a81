"""Denoising low-dose CT: ``ctbird.restore(task="denoise")`` on filtered backprojections of noisy scans.

The restoration benchmark (:mod:`benchmarks.photo`) adds white noise to an image. Low-dose CT noise is not white:
log-Poisson noise on the sinogram, filtered by the ramp and backprojected, is correlated and streaky, and its
level follows the attenuation along each ray. Each CT slice here (``--max-images`` evenly spread eval DICOM files
or ``--synthetic``, at ``--size``) is scanned by :func:`ctbird.simulate.simulate` (parallel beam, ``--views``
views, each ``--doses`` incident photon count per detector cell, seed ``1000 +`` the slice's position) and
reconstructed by FBP (Ram-Lak, :func:`ctbird.reconstruct` ``method="fbp"``). That image, on the prior's [0, 1]
scale (HU clipped to the prior's window), is denoised by :func:`ctbird.restore` with the task's defaults (what
``ctbird restore --task denoise`` runs) and by TV with the estimated noise level.

Scores: PSNR / SSIM with data range 1 on [0, 1] against the slice on the working grid, of FBP (the input), BIRD and
TV; the noise level as the std of ``FBP - truth`` (true, which also holds FBP's own discretization error) and as
:func:`ctbird.restoration_baselines.estimate_noise_sigma` reads it (the level the denoiser assumes). Writes
``denoise-fbp_<tag>.json`` / ``.md`` under ``--out-dir`` (default ``docs/results/photo``).

Example (repository root)::

    python -m benchmarks.denoise_fbp --max-images 8 --doses 1e5,1e4 --tag cpu-eval8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, fmt, load_ct_slices, load_study_prior, markdown_table,
                               mean_std, page_header, parse_list, progress, require_positive, run_script, score_unit,
                               start_run, write_outputs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "ct" / "eval", help="DICOM folder (eval slices)")
    parser.add_argument("--synthetic", action="store_true", help="the Shepp-Logan phantom instead of --data")
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="working side (default 256, the prior's)")
    parser.add_argument("--views", type=int, default=720, help="projection count (default 720: a full scan)")
    parser.add_argument("--doses", default="1e5,1e4", help="comma-separated incident photons per detector cell")
    parser.add_argument("--prior", default=None, help="prior folder (default: the shipped CT prior)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "photo")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    args.doses = parse_list(args.doses, float)
    require_positive(parser, args, ("max_images", "size", "views"))
    if min(args.doses) <= 0:
        parser.error("--doses must be positive.")
    return args


def fbp_unit(hu: np.ndarray, pixel_spacing_mm: float, *, views: int, dose: float, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(FBP of a simulated scan, truth)`` of the slice ``hu`` ``[N, N]``, both ``[1, 1, N, N]`` on the prior's [0, 1]
    scale."""
    from ctbird.api import reconstruct
    from ctbird.simulate import simulate
    from ctbird.units import hu_to_image

    size = hu.shape[-1]
    scan = simulate(hu, views=views, image_size=size, pixel_spacing_mm=pixel_spacing_mm, dose=dose, seed=seed)
    image = reconstruct(scan.sinogram, scan.geometry, image_size=size, pixel_spacing_mm=scan.pixel_spacing_mm,
                        method="fbp").image.cpu()
    return hu_to_image(image), hu_to_image(torch.as_tensor(scan.truth_hu, dtype=torch.float32))[None, None]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import restore
    from ctbird.restoration_baselines import estimate_noise_sigma, run_baseline

    device, record = start_run(args, argv)
    prior, prior_path = load_study_prior(args.prior, device, args.size)
    slices = load_ct_slices(None if args.synthetic else args.data, args.max_images, args.size,
                            synthetic=args.synthetic)
    rows = []
    with progress(total=len(slices) * len(args.doses), desc="denoise fbp", unit="run") as bar:
        for index, (label, hu, spacing) in enumerate(slices):
            for dose in args.doses:
                bar.set_description(f"{label} dose {dose:g}")
                y, truth = fbp_unit(hu, spacing, views=args.views, dose=dose, seed=1000 + index)
                result = restore(y, "denoise", prior=prior, device=device)
                tv = run_baseline("tv", y, "denoise")
                rows.append({"image": label, "dose": dose, "input": score_unit(y, truth),
                             "bird": score_unit(result.image.cpu(), truth), "tv": score_unit(tv.image, truth),
                             "noise_true": float((y - truth).std()),
                             "noise_estimate": estimate_noise_sigma(y[0, 0].numpy()),
                             "seconds": result.seconds, "nfe": result.nfe})
                bar.update(1)
    results = []
    for dose in args.doses:
        group = [r for r in rows if r["dose"] == dose]
        summary = {"dose": dose, "images": len(group)}
        for method in ("input", "bird", "tv"):
            for metric in ("psnr", "ssim"):
                summary[f"{method}_{metric}_mean"], summary[f"{method}_{metric}_std"] = mean_std(
                    [r[method][metric] for r in group])
        for key in ("noise_true", "noise_estimate", "seconds"):
            summary[f"{key}_mean"] = mean_std([r[key] for r in group])[0]
        summary["bird_beats_input"] = sum(r["bird"]["psnr"] > r["input"]["psnr"] for r in group)
        summary["bird_beats_tv"] = sum(r["bird"]["psnr"] > r["tv"]["psnr"] for r in group)
        results.append({**summary, "per_image": group})
    payload = {"run": record, "slices": [label for label, _, _ in slices], "size": args.size, "views": args.views,
               "prior": str(prior_path), "results": results}

    def scores(r: dict, method: str) -> str:
        return f"{fmt(r[f'{method}_psnr_mean'], r[f'{method}_psnr_std'])} / {fmt(r[f'{method}_ssim_mean'], digits=3)}"

    table = [[f"{r['dose']:g}", *(scores(r, method) for method in ("input", "bird", "tv")),
              f"{r['bird_beats_input']}/{r['images']}, {r['bird_beats_tv']}/{r['images']}",
              f"{fmt(r['noise_true_mean'], digits=4)} / {fmt(r['noise_estimate_mean'], digits=4)}",
              fmt(r["seconds_mean"], digits=1)] for r in results]
    markdown = "\n".join([
        page_header(f"Denoising low-dose CT: `restore` on FBP images (`{args.tag}`)", "benchmarks.denoise_fbp",
                    record),
        f"- Slices: {len(slices)} at {args.size}² ({', '.join(f'`{label}`' for label, _, _ in slices)}); "
        f"parallel-beam scans of {args.views} views with log-Poisson noise at each dose (incident photons per detector "
        "cell), FBP (Ram-Lak), HU clipped to the prior's window and mapped to [0, 1].",
        f"- BIRD: `restore(task='denoise')` with its defaults, prior `{prior_path}`; TV: Chambolle with the weight "
        "the CLI uses for the estimated noise level.",
        "- PSNR / SSIM with data range 1 on [0, 1] (mean ± std over the slices); wins: slices where BIRD's PSNR is "
        "above FBP's and TV's; noise: std of FBP - truth (true, FBP's discretization error included) / the wavelet "
        "estimate the denoiser assumes; seconds: BIRD's.", "",
        markdown_table(["dose (photons)", "FBP PSNR / SSIM", "BIRD PSNR / SSIM", "TV PSNR / SSIM",
                        "BIRD > FBP, > TV", "noise true / estimated", "s"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"denoise-fbp_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
