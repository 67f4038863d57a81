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

from benchmarks.common import (add_study_options, fmt, markdown_table, parse_list, parse_study_args, page_header,
                               run_script, score_settings_on_slices, start_run, study_payload, summarize, write_outputs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_study_options(parser)
    parser.add_argument("--zeta", default="0.3,1,3", help="relative guidance steps to compare, comma-separated")
    parser.add_argument("--steps", default="100", help="DPS sampling steps to compare, comma-separated")
    args = parse_study_args(parser, argv)
    try:
        args.zeta = parse_list(args.zeta, float)
        args.steps = parse_list(args.steps, int)
    except ValueError:
        parser.error(f"--zeta takes numbers and --steps integers, got {args.zeta!r} and {args.steps!r}.")
    if not args.zeta or min(args.zeta) <= 0 or not args.steps or min(args.steps) < 1:
        parser.error("--zeta needs positive values and --steps positive integers.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.priors import load_prior

    device, record = start_run(args, argv)
    prior = load_prior(args.prior, device=str(device))
    settings = [("fbp", None, None), ("sirt", None, None)] + [("dps", z, s) for s in args.steps for z in args.zeta]
    labels, rows = score_settings_on_slices(
        args, prior, device, [(f"zeta {zeta:g}, {steps} steps" if zeta else "", method,
                               {"iters": steps, "zeta": zeta} if method == "dps" else {})
                              for method, zeta, steps in settings], desc="tune dps")
    results = [{"method": method, "relative_zeta": zeta, "steps": steps, **summarize(per_slice), "per_slice": per_slice}
               for (method, zeta, steps), per_slice in zip(settings, rows)]
    payload = study_payload(record, labels, args, results)
    table = [[r["method"], "–" if r["relative_zeta"] is None else f"{r['relative_zeta']:g}",
              "–" if r["steps"] is None else str(r["steps"]), fmt(r["psnr_mean"], r["psnr_std"]),
              fmt(r["ssim_mean"], digits=3), *[fmt(s["psnr"]) for s in r["per_slice"]], fmt(r["seconds_mean"], digits=1)]
             for r in results]
    markdown = "\n".join([
        page_header(f"DPS guidance step on CT (`{args.tag}`)", "benchmarks.studies.tune_dps", record),
        f"- Slices: {', '.join(f'`{label}`' for label in labels)}; {args.views} parallel "
        f"views, noiseless, {args.size}², matrix projector; seed {args.seed}; prior `{payload['prior']}`.",
        "- PSNR/SSIM on HU clipped to [-1000, 1000] (data range 2000 HU); mean ± std over the slices.", "",
        markdown_table(["method", "relative zeta", "steps", "PSNR (dB)", "SSIM", *[f"PSNR `{label}`" for label in labels],
                        "s / slice"], table)])
    json_path, md_path = write_outputs(args.out_dir, f"dps_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
