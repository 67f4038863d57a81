"""How strongly :func:`ctbird.restore` denoises: a fixed renoising timestep against one that follows the noise level.

Each ``--slice`` (``STACK.npz:INDEX`` of the prior's training stack; never an evaluation slice) is windowed to the
prior's [0, 1] scale, resampled to ``--size`` and given each ``--noises`` level: white Gaussian noise of that std
(seeded by the slice's position, clipped to [0, 1]) or ``benchmark``, the denoising benchmark's speckle + Gaussian noise
(:func:`ctbird.simulate.degrade_image`). ``restore(task="denoise")`` then runs with the task's refinement
(:data:`ctbird.config.RESTORE_REFINE`) under each variant: ``tT`` renoises to at least timestep ``T`` (the noise the
observation carries counted, ``match_noise``), ``scaleS`` to the timestep of ``S`` times the observation's estimated
noise level (``t0=1, noise_scale=S``). PSNR with data range 1 on [0, 1]. Writes ``denoise_strength_<tag>.json`` /
``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_denoise_strength --slice ../shared/data/ct/train/ct256_train_hu.npz:700 \\
        --noises 0.005,0.02,benchmark --variants t60,scale1,scale1.5 --tag cpu-train256
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from benchmarks.common import (RESULTS_DIR, fmt, load_study_prior, load_unit_slice, markdown_table, mean_std,
                               parse_list, progress, page_header, run_script, score_unit, start_run, write_outputs)

#: The ``--noises`` item that stands for the denoising benchmark's noise.
BENCHMARK_NOISE = "benchmark"


def variant_settings(name: str) -> dict:
    """The :class:`~ctbird.config.RefineConfig` overrides of a variant name: ``tT`` or ``scaleS``."""
    fixed, scaled = re.fullmatch(r"t(\d+)", name), re.fullmatch(r"scale(\d+(?:\.\d+)?)", name)
    if fixed:
        return {"t0": int(fixed.group(1)), "noise_scale": 1.0}
    if scaled:
        return {"t0": 1, "noise_scale": float(scaled.group(1))}
    raise ValueError(f"variant {name!r} is neither tT nor scaleS")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slice", action="append", required=True, help="STACK.npz:INDEX training slice (repeatable)")
    parser.add_argument("--noises", default=f"0.005,0.01,0.02,0.05,{BENCHMARK_NOISE}",
                        help=f"comma-separated noise stds on [0, 1] or {BENCHMARK_NOISE}")
    parser.add_argument("--variants", default="t60,scale1,scale1.5,scale2,scale2.5",
                        help="comma-separated tT (at least timestep T) or scaleS (S times the noise level)")
    parser.add_argument("--size", type=int, default=256, help="working side (default 256, the prior's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default=None, help="prior folder (default: the shipped CT prior)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "tuning")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    try:
        args.noises = [n if n == BENCHMARK_NOISE else float(n) for n in parse_list(args.noises)]
        args.variants = {name: variant_settings(name) for name in parse_list(args.variants)}
    except ValueError as exc:
        parser.error(f"--noises or --variants: {exc}")
    if args.size < 8 or any(n != BENCHMARK_NOISE and n < 0 for n in args.noises) or any(
            v["noise_scale"] < 1 for v in args.variants.values()):
        parser.error("--size must be >= 8, --noises >= 0 and scaleS needs S >= 1.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import restore
    from ctbird.config import RefineConfig
    from ctbird.simulate import degrade_image

    device, record = start_run(args, argv)
    prior, prior_path = load_study_prior(args.prior, device, args.size)
    images = [load_unit_slice(spec, args.size) for spec in args.slice]
    base = RefineConfig.for_task("denoise")
    rows: list[dict] = []
    with progress(total=len(images) * len(args.noises), desc="denoise", unit="image") as bar:
        for index, (image, label) in enumerate(images):
            for noise in args.noises:
                bar.set_description(f"{label} noise {noise}")
                if noise == BENCHMARK_NOISE:
                    y = degrade_image("denoise", image, seed=args.seed)["y"]
                else:
                    generator = torch.Generator().manual_seed(1000 + index)
                    y = (image[None] + noise * torch.randn((1, *image.shape), generator=generator)).clamp(0, 1)
                row = {"image": label, "noise": noise, "input_psnr": score_unit(y, image[None])["psnr"]}
                for name, settings in args.variants.items():
                    result = restore(y, "denoise", prior=prior, refine=base.replace(**settings), seed=args.seed,
                                     device=device)
                    row[name] = score_unit(result.image.cpu(), image[None])["psnr"]
                rows.append(row)
                bar.update(1)
    results = []
    for noise in args.noises:
        group = [r for r in rows if r["noise"] == noise]
        summary = {"noise": noise}
        for key in ("input_psnr", *args.variants):
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([r[key] for r in group])
        results.append({**summary, "per_image": group})
    payload = {"run": record, "slices": [label for _, label in images], "size": args.size, "seed": args.seed,
               "refine": base.to_dict(), "variants": args.variants, "prior": str(prior_path), "results": results}
    table = [[str(r["noise"]), fmt(r["input_psnr_mean"], digits=2),
              *(fmt(r[f"{name}_mean"], r[f"{name}_std"], 2) for name in args.variants)] for r in results]
    markdown = "\n".join([
        page_header(f"Denoising strength: a fixed renoising timestep against one that follows the noise (`{args.tag}`)",
                    "benchmarks.studies.tune_denoise_strength", record),
        f"- Slices: {', '.join(f'`{label}`' for _, label in images)} at {args.size}²; white Gaussian noise of the "
        f"given std on [0, 1] (clipped), or `{BENCHMARK_NOISE}`: the denoising benchmark's speckle + Gaussian noise; "
        f"`restore(task='denoise')` with `RefineConfig.for_task('denoise')` at the time of the run ({base.to_dict()}) "
        f"but each variant's `t0` / `noise_scale`; seed {args.seed}.",
        "- Variants: `tT` renoises to at least timestep T (the observation's own noise counted); `scaleS` to the "
        "timestep of S times its estimated noise level. PSNR (dB, data range 1 on [0, 1]), mean ± std over the "
        "slices.", "",
        markdown_table(["noise", "input PSNR", *args.variants], table)])
    json_path, md_path = write_outputs(args.out_dir, f"denoise_strength_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
