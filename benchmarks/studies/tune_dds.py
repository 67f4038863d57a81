"""DDS's budget on CT training slices: PSNR for each (steps, CG iterations, eta, gamma) setting.

The DDS baseline (:func:`ctbird.reconstruct` with ``method="dds"``, :class:`ctbird.config.DDSConfig`) refines every
Tweedie estimate of a DDIM run by a few conjugate-gradient steps on the data term. This script measures which
number of sampling steps and CG iterations (and which DDIM ``eta`` and anchor weight ``gamma``) works, on slices
away from the evaluation set: each ``--slice`` (a DICOM file or ``STACK.npz:INDEX``, e.g. a training slice) is
projected noiselessly (``--views`` parallel views, matrix backend, the units of :func:`ctbird.reconstruct`) and
reconstructed by DDS for every combination of the listed values, with FBP and SIRT as reference lines. PSNR/SSIM on
HU with data range ``EVAL_HU_RANGE``. Writes ``dds_<tag>.json`` / ``.md`` under ``--out-dir`` (default
``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_dds --slice ../shared/data/ct/train/ct256_train_hu.npz:300 \\
        --steps 25,50 --cg-iters 2,5,10 --tag cpu-train
"""

from __future__ import annotations

import argparse
import itertools
import sys

from benchmarks.common import (add_study_options, knob_study_markdown, parse_list, parse_study_args, run_script,
                               score_settings_on_slices, start_run, study_payload, summarize, write_outputs)

#: The settings a row varies, in table order.
KNOBS = ("steps", "cg_iters", "eta", "gamma")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ctbird.config import DDSConfig

    defaults = DDSConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_study_options(parser)
    parser.add_argument("--steps", default=str(defaults.iters), help="DDIM sampling steps to compare, comma-separated")
    parser.add_argument("--cg-iters", default=str(defaults.cg_iters), help="CG iterations per step to compare")
    parser.add_argument("--eta", default=f"{defaults.eta:g}", help="DDIM eta values to compare (in [0, 1])")
    parser.add_argument("--gamma", default=f"{defaults.gamma:g}", help="relative anchor weights to compare (>= 0)")
    args = parse_study_args(parser, argv)
    try:
        args.steps, args.cg_iters = parse_list(args.steps, int), parse_list(args.cg_iters, int)
        args.eta, args.gamma = parse_list(args.eta, float), parse_list(args.gamma, float)
    except ValueError:
        parser.error("--steps and --cg-iters take integers, --eta and --gamma numbers (comma-separated).")
    if not (args.steps and args.cg_iters and args.eta and args.gamma) or min(args.steps) < 1 \
            or min(args.cg_iters) < 0 or not all(0 <= e <= 1 for e in args.eta) or min(args.gamma) < 0:
        parser.error("--steps needs integers >= 1, --cg-iters >= 0, --eta values in [0, 1], --gamma >= 0.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.priors import load_prior

    device, record = start_run(args, argv)
    prior = load_prior(args.prior, device=str(device))
    grid = list(itertools.product(args.steps, args.cg_iters, args.eta, args.gamma))
    settings = [("fbp", None), ("sirt", None)] + [("dds", dict(zip(KNOBS, values))) for values in grid]
    labels, rows = score_settings_on_slices(
        args, prior, device, [(f"{knobs}" if knobs else "", method,
                               {} if knobs is None else {"iters": knobs["steps"], "cg_iters": knobs["cg_iters"],
                                                         "eta": knobs["eta"], "gamma": knobs["gamma"]})
                              for method, knobs in settings], desc="tune dds")
    results = [{"method": method, **{k: (knobs or {}).get(k) for k in KNOBS}, **summarize(per_slice),
                "per_slice": per_slice} for (method, knobs), per_slice in zip(settings, rows)]
    payload = study_payload(record, labels, args, results)

    markdown = knob_study_markdown(
        title="DDS budget on CT", module="benchmarks.studies.tune_dds", record=record, labels=labels, args=args,
        prior=payload["prior"], knobs=KNOBS, results=results,
        notes="- DDS: `steps` DDIM steps (NFE), `cg_iters` conjugate-gradient steps on the data term per step, DDIM `eta`, "
              "anchor weight `gamma` relative to `||A T||^2` (`ctbird.config.DDSConfig`).")
    json_path, md_path = write_outputs(args.out_dir, f"dds_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
