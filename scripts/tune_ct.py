"""Measure BIRD's CT settings on one real slice: learning rate, iterations, delta_t, and the DC refinement.

Simulates a noiseless parallel-beam acquisition of a DICOM slice at 256² (the shipped sample by default),
runs ``ctbird.reconstruct(method="bird")`` for each (iterations, lr_latent, delta_t) setting, then refines
the last BIRD result of the default setting with ``refine_data_consistency`` over a (weight, CG steps) grid.
Writes ``docs/tuning_ct.md`` and ``docs/tuning_ct.json`` (PSNR/SSIM on HU clipped to [-1000, 1000]).

    python scripts/tune_ct.py [--input DICOM] [--views 30] [--prior DIR] [--out-dir docs]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctbird.api import reconstruct  # noqa: E402
from ctbird.baselines import operator_norm  # noqa: E402
from ctbird.io import read_dicom, to_working_size  # noqa: E402
from ctbird.metrics import psnr, ssim  # noqa: E402
from ctbird.solvers.refine import refine_data_consistency  # noqa: E402
from ctbird.units import EVAL_HU_RANGE, clip_hu, hu_to_mu, mu_to_hu  # noqa: E402
from operators import ParallelBeam  # noqa: E402
from operators.radon import Radon  # noqa: E402

#: (iterations, lr_latent, delta_t) settings of the BIRD sweep.
BIRD_GRID = [(30, 1e-3, 200), (30, 3e-3, 200), (50, 3e-3, 333),
             (100, 1e-3, 200), (100, 3e-3, 200), (100, 1e-2, 200), (100, 3e-3, 333)]
#: (weight, CG steps) settings of the data-consistency sweep.
DC_GRID = [(w, n) for w in (0.05, 0.01, 0.002) for n in (10, 30, 100)]
DC_START = (50, 3e-3, 333)  # the CLI's CPU preset: the BIRD image the DC sweep refines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=REPO / "data" / "samples" / "chest_tcga_0000.dcm")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--prior", type=Path, default=REPO / "data" / "priors" / "ctbird-ct-256")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    volume = read_dicom(args.input)
    hu = volume.hu[volume.hu.shape[0] // 2]
    truth = to_working_size(clip_hu(hu), 256)
    pixel_mm = float(volume.pixel_spacing_mm[0]) * hu.shape[0] / 256
    truth_t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[None, None]
    geometry = ParallelBeam(views=args.views)
    radon = Radon(geometry, 256)
    sinogram = radon(hu_to_mu(truth_t) * pixel_mm)

    def score(image: torch.Tensor) -> dict:
        return {"psnr": round(psnr(image, truth_t, data_range=EVAL_HU_RANGE), 2),
                "ssim": round(ssim(image, truth_t, data_range=EVAL_HU_RANGE), 3)}

    rows, start_image = [], None
    for method in ("fbp", "sirt"):
        result = reconstruct(sinogram, geometry, image_size=256, pixel_spacing_mm=pixel_mm, method=method)
        rows.append({"method": method, **score(result.image)})
        print(rows[-1], flush=True)
    for iters, lr, delta_t in BIRD_GRID:
        started = time.perf_counter()
        result = reconstruct(sinogram, geometry, image_size=256, pixel_spacing_mm=pixel_mm, method="bird",
                             iters=iters, lr_latent=lr, delta_t=delta_t, seed=args.seed, prior=str(args.prior))
        rows.append({"method": "bird", "iters": iters, "lr_latent": lr, "delta_t": delta_t, "nfe": result.nfe,
                     "final_loss": round(result.loss_history[-1], 4), **score(result.image),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], flush=True)
        if (iters, lr, delta_t) == DC_START:
            start_image = result.image
    norm = operator_norm(radon)
    dc_rows = []
    for weight, steps in DC_GRID:
        refined = refine_data_consistency(sinogram, radon, hu_to_mu(start_image) * pixel_mm, weight=weight,
                                          iters=steps, nonneg=True, op_norm=norm)
        dc_rows.append({"weight": weight, "cg_steps": steps, **score(mu_to_hu(refined / pixel_mm))})
        print(dc_rows[-1], flush=True)

    command = "python scripts/tune_ct.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "input": str(args.input.relative_to(REPO) if args.input.is_relative_to(REPO)
                                                      else args.input),
              "views": args.views, "pixel_spacing_mm": pixel_mm, "seed": args.seed, "data_range_hu": EVAL_HU_RANGE,
              "bird": rows, "dc_from": dict(zip(("iters", "lr_latent", "delta_t"), DC_START)), "dc": dc_rows,
              "torch": torch.__version__}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "tuning_ct.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# CT tuning measurements", "", "Generated by `scripts/tune_ct.py`; do not edit by hand.", "",
             f"- Command: `{report['command']}`",
             f"- Input: `{report['input']}` at 256² ({pixel_mm:.4g} mm pixels), {args.views} parallel views, noiseless, "
             f"seed {args.seed}; detached gradients; PSNR/SSIM on HU clipped to [-1000, 1000].", "",
             "| method | iterations | lr_latent | delta_t | NFE | final data loss | PSNR (dB) | SSIM | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r.get('iters', '–')} | {r.get('lr_latent', '–')} | {r.get('delta_t', '–')} | "
                     f"{r.get('nfe', 0)} | {r.get('final_loss', '–')} | {r['psnr']} | {r['ssim']} | {r.get('seconds', '–')} |")
    lines += ["", f"Data-consistency refinement of the BIRD image ({DC_START[0]} iterations, lr {DC_START[1]}, "
              f"delta_t {DC_START[2]}):", "", "| weight | CG steps | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    lines += [f"| {r['weight']} | {r['cg_steps']} | {r['psnr']} | {r['ssim']} |" for r in dc_rows]
    (args.out_dir / "tuning_ct.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out_dir / 'tuning_ct.md'}")


if __name__ == "__main__":
    main()
