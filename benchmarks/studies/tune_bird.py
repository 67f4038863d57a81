"""BIRD's CT pipeline on training slices: the latent-search budget and the DDS refinement, one lever at a time.

``bird`` is BIRD's latent search followed by the DDS refinement of its image (:mod:`ctbird.solvers.dds`:
renoise to ``refine_from_t``, then DDIM steps of ``refine_delta_t`` with conjugate-gradient steps on the data term).
This study reconstructs each ``--slice`` (a DICOM file or ``STACK.npz:INDEX``; tune on training slices, never on
the evaluation set), projected noiselessly at ``--views`` parallel views, with every combination of a BIRD budget
(``--budgets ITERSxDELTA_T``) and a refinement (``--refine T0/DT``; ``0`` = none, the ``bird-raw`` image), and adds
TV, SIRT and DDS (``--dds-steps``, from pure noise: the refinement's equal-NFE rival) as reference lines. PSNR/SSIM on
HU with data range ``EVAL_HU_RANGE``; seconds and UNet evaluations (NFE) per slice. Writes ``bird_<tag>.json`` /
``.md`` under ``--out-dir`` (default ``docs/results/tuning``).

Example (repository root)::

    python -m benchmarks.studies.tune_bird --slice ../shared/data/ct/train/ct256_train_hu.npz:1320 \\
        --budgets 20x333,50x333 --refine 0,300/10,300/5 --dds-steps 50,100 --tag cpu-train
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import (add_study_options, knob_study_markdown, parse_list, parse_study_args, run_script,
                               score_settings_on_slices, start_run, study_payload, summarize, write_outputs)


def _pair(text: str, sep: str) -> tuple[int, int]:
    first, second = text.split(sep)
    return int(first), int(second)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ctbird.config import BirdConfig

    defaults = BirdConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_study_options(parser)
    parser.add_argument("--budgets", default=f"{defaults.iters}x{defaults.delta_t}",
                        help="BIRD budgets ITERSxDELTA_T, comma-separated")
    parser.add_argument("--refine", default=f"0,{defaults.refine_from_t}/{defaults.refine_delta_t}",
                        help="refinements T0/DT (0: none), comma-separated")
    parser.add_argument("--refine-eta", default=f"{defaults.refine_eta:g}", help="refinement DDIM eta values")
    parser.add_argument("--dds-steps", default="", help="DDS steps from pure noise to compare (default none)")
    parser.add_argument("--baselines", default="sirt,tv", help="classical reference lines (default sirt,tv)")
    args = parse_study_args(parser, argv)
    try:
        args.budgets = [_pair(b, "x") for b in parse_list(args.budgets)]
        args.refine = [(0, 0) if r == "0" else _pair(r, "/") for r in parse_list(args.refine)]
        args.refine_eta = parse_list(args.refine_eta, float)
        args.dds_steps = parse_list(args.dds_steps, int) if args.dds_steps else []
        args.baselines = parse_list(args.baselines) if args.baselines else []
    except ValueError:
        parser.error("--budgets takes ITERSxDELTA_T, --refine T0/DT or 0, --refine-eta numbers, --dds-steps integers.")
    if not (args.budgets and args.refine and args.refine_eta) or min(min(b) for b in args.budgets) < 1 \
            or any(t0 < 0 or (t0 and dt < 1) for t0, dt in args.refine) or not all(0 <= e <= 1 for e in args.refine_eta):
        parser.error("--budgets needs positive values, --refine T0 >= 0 with DT >= 1, --refine-eta values in [0, 1].")
    if set(args.baselines) - {"fbp", "sirt", "tv"}:
        parser.error("--baselines takes fbp, sirt, tv.")
    return args


def settings_of(args) -> list[tuple[str, str, dict, dict]]:
    """``(label, method, reconstruct overrides, table knobs)`` of every row, in table order."""
    rows = [(name, name, {}, {}) for name in args.baselines]
    rows += [(f"dds {steps}", "dds", {"iters": steps}, {"dds_steps": steps}) for steps in args.dds_steps]
    for iters, delta_t in args.budgets:
        for t0, dt in args.refine:
            for eta in (args.refine_eta if t0 else [None]):
                knobs = {"iters": iters, "delta_t": delta_t, "refine_from_t": t0, "refine_delta_t": dt or None,
                         "refine_eta": eta}
                overrides = {"iters": iters, "delta_t": delta_t}
                if t0:
                    overrides.update(refine_from_t=t0, refine_delta_t=dt, refine_eta=eta)
                rows.append((f"{iters}x{delta_t} refine {t0}/{dt} eta {eta}" if t0 else f"{iters}x{delta_t} raw",
                             "bird" if t0 else "bird-raw", overrides, knobs))
    return rows


KNOBS = ("iters", "delta_t", "refine_from_t", "refine_delta_t", "refine_eta", "dds_steps")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.priors import load_prior

    device, record = start_run(args, argv)
    prior = load_prior(args.prior, device=str(device))
    rows = settings_of(args)
    labels, scores = score_settings_on_slices(args, prior, device, [(label, method, overrides)
                                                                    for label, method, overrides, _ in rows],
                                              desc="tune bird")
    results = [{"method": method, **{k: knobs.get(k) for k in KNOBS}, **summarize(per_slice), "per_slice": per_slice}
               for (_, method, _, knobs), per_slice in zip(rows, scores)]
    payload = study_payload(record, labels, args, results)

    markdown = knob_study_markdown(
        title="BIRD's CT pipeline: budget and refinement", module="benchmarks.studies.tune_bird", record=record,
        labels=labels, args=args, prior=payload["prior"], knobs=KNOBS, results=results,
        notes="- `bird-raw`: BIRD's decode after `iters` iterations at `delta_t`; `bird`: the same, then the DDS refinement "
              "from timestep `refine_from_t` in steps of `refine_delta_t` with DDIM `refine_eta` (5 CG steps per step); "
              "`dds`: DDS from pure noise in `dds_steps` steps (`ctbird.config.DDSConfig` otherwise). Seconds on a shared "
              "CPU vary with the load; NFE does not.")
    json_path, md_path = write_outputs(args.out_dir, f"bird_{args.tag}", payload, markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
