"""Geometry calibration: estimate errors and reconstruction quality with calibrated, classical, nominal and true geometry.

Each acquisition is simulated by :func:`ctbird.simulate.simulate` with a geometry carrying scanner errors
(:func:`ctbird.simulate.simulation_geometry`: a rotation-centre offset in detector cells, mean-free Gaussian per-view
angle jitter) on **another projector** than the reconstruction's (``--measure-backend``, default the torch
projector, which differs from the matrix backend by 0.1-2 %). Then:

* the centre is estimated by the consistency search (ours: :func:`ctbird.solvers.calibrate.calibrate`, no prior; with
  angle jitter also the per-view angles by projection matching) and by the classical sharpness (entropy) finder
  (:func:`ctbird.calibration.find_center_sharpness`);
* on a subset, FBP, SIRT and TV reconstruct with the geometry calibrated by each, the nominal and the true geometry;
* on a smaller subset BIRD (``cpu-fast`` preset) reconstructs with the calibrated, true and nominal geometry, and the
  calibrated run's cost (calibration + run on the rebuilt projector) is compared with an uncalibrated run.

Example (repository root)::

    python -m benchmarks.calibration --data ../shared/data/ct/eval --tag cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, fmt, load_ct_slices, markdown_table, parse_list, progress,
                               record_markdown, run_script, start_run, write_outputs)
from ctbird.metrics import score_ct
from ctbird.units import EVAL_HU_RANGE

CHEAP_METHODS = ("fbp", "sirt", "tv")
GEOMETRY_LABELS = ("ours", "classical", "nominal", "true")
TARGET_CENTER_PX, TARGET_BIRD_DB, TARGET_COST = 0.1, 0.5, 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "ct" / "eval", help="eval DICOM folder")
    parser.add_argument("--synthetic", action="store_true", help="Shepp-Logan slices instead of --data")
    parser.add_argument("--max-slices", type=int, default=4, help="eval slices (default 4)")
    parser.add_argument("--size", type=int, default=256, help="working grid side N (default 256, the prior's)")
    parser.add_argument("--views", default="30,60", help="view counts (default 30,60)")
    parser.add_argument("--slices-at-more-views", type=int, default=2,
                        help="slices used at view counts other than the first (default 2)")
    parser.add_argument("--geometry", default="parallel,fan", help="parallel and/or fan")
    parser.add_argument("--offsets", default="0.5,2.5,4", help="centre offsets in detector cells (default 0.5,2.5,4)")
    parser.add_argument("--psnr-offset", type=float, default=2.5,
                        help="the offset whose cases are also reconstructed by FBP/SIRT/TV (default 2.5)")
    parser.add_argument("--jitter", default="0.1,0.5", help="angle jitter std in degrees (default 0.1,0.5)")
    parser.add_argument("--jitter-offset", type=float, default=1.5, help="centre offset of the jitter cases (1.5)")
    parser.add_argument("--jitter-slices", type=int, default=1, help="slices of the jitter cases (default 1)")
    parser.add_argument("--bird-slices", type=int, default=2,
                        help="slices (first view count, --psnr-offset) also reconstructed by BIRD (default 2; 0: none)")
    parser.add_argument("--bird-nominal-slices", type=int, default=1,
                        help="of those, slices also run by BIRD with the nominal geometry (default 1)")
    parser.add_argument("--measure-backend", choices=("torch", "astra", "matrix"), default="torch",
                        help="projector simulating the measurement (default torch: not the reconstruction's)")
    parser.add_argument("--prior", default=None, help="prior folder or hub id (default the shipped prior)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "calibration")
    parser.add_argument("--tag", default=None, help="run label in the file names (default: the device type)")
    parser.add_argument("--rerender", type=Path, default=None, metavar="RUN.json",
                        help="rewrite RUN.md from RUN.json (its rows and settings) without running anything")
    args = parser.parse_args(argv)
    args.views = parse_list(args.views, int)
    args.geometry = parse_list(args.geometry)
    args.offsets = parse_list(args.offsets, float)
    args.jitter = parse_list(args.jitter, float)
    if not args.views or min(args.views) < 1 or args.max_slices < 1 or args.size < 16:
        parser.error("--views, --max-slices must be >= 1 and --size >= 16.")
    if set(args.geometry) - {"parallel", "fan"}:
        parser.error(f"--geometry takes parallel and/or fan, got {args.geometry}.")
    return args


def timed(run):
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def angle_rms(estimated_deg, true_geometry) -> float:
    """RMS (degrees) of estimated minus true per-view offsets (``None`` = zero estimates; truth is mean-free)."""
    truth = np.zeros(true_geometry.views) if true_geometry.angle_offsets is None \
        else np.rad2deg(np.asarray(true_geometry.angle_offsets))
    estimate = np.zeros_like(truth) if estimated_deg is None else np.asarray(estimated_deg)
    return float(np.sqrt(np.mean((estimate - (truth - truth.mean())) ** 2)))


def run_case(slice_, kind: str, views: int, offset: float, jitter: float, seed: int, args, *, methods, prior=None,
             bird_labels=()) -> dict:
    """One acquisition: estimates by ours and the classical finder, then the requested reconstructions."""
    import ctbird
    from ctbird.calibration import find_center_sharpness
    from ctbird.config import BirdConfig
    from ctbird.simulate import simulate, simulation_geometry
    from ctbird.solvers.calibrate import calibrate

    label, hu, spacing = slice_
    size = args.size
    true = simulation_geometry(kind, views, size, center_offset=offset, angle_jitter_deg=jitter, seed=seed)
    acquisition = simulate(hu, image_size=size, pixel_spacing_mm=spacing, geometry=true,
                           radon_backend=args.measure_backend)
    y, nominal, truth = acquisition.sinogram, acquisition.nominal_geometry, acquisition.truth_hu
    estimate = ("center", "angles") if jitter > 0 else ("center",)
    ours = calibrate(y, nominal, size, estimate=estimate)
    classical, classical_seconds = timed(lambda: find_center_sharpness(y, nominal, size))
    row = {"slice": label, "geometry": kind, "views": views, "offset": offset, "jitter_deg": jitter,
           "estimate": list(estimate), "ours_center": ours.center_offset, "classical_center": classical.center_offset,
           "ours_error": ours.center_offset - offset, "classical_error": classical.center_offset - offset,
           "ours_seconds": ours.seconds, "classical_seconds": classical_seconds,
           "angle_rms_true": angle_rms(None, true), "angle_rms_ours": angle_rms(ours.angle_offsets_deg, true)}
    geometries = {"ours": ours.geometry, "classical": nominal.calibrated(classical.center_offset),
                  "nominal": nominal, "true": true}
    row["psnr"], row["seconds"] = {}, {}
    for method in methods:
        for name, geometry in geometries.items():
            result, seconds = timed(lambda: ctbird.reconstruct(y, geometry, image_size=size, pixel_spacing_mm=spacing,
                                                                method=method))
            row["psnr"].setdefault(method, {})[name] = score_ct(result.image[0, 0], truth, data_range=EVAL_HU_RANGE)["psnr"]
            row["seconds"].setdefault(method, {})[name] = seconds
    for name in bird_labels:
        config = BirdConfig.preset("cpu-fast")
        result, seconds = timed(lambda: ctbird.reconstruct(y, geometries[name], image_size=size,
                                                            pixel_spacing_mm=spacing, prior=prior, method="bird",
                                                            config=config, device=args.device))
        row["psnr"].setdefault("bird", {})[name] = score_ct(result.image[0, 0], truth, data_range=EVAL_HU_RANGE)["psnr"]
        row["seconds"].setdefault("bird", {})[name] = seconds
    return row


def cases(args, slices):
    """``(slice, kind, views, offset, jitter, seed, methods, bird_labels)`` of the run: estimates only, then with
    FBP/SIRT/TV, then angle jitter, then BIRD (an interrupted run has the broadest cheap results)."""
    out = []
    for index, slice_ in enumerate(slices):
        for views in args.views:
            if views != args.views[0] and index >= args.slices_at_more_views:
                continue
            for kind in args.geometry:
                for offset in args.offsets:
                    psnr_case = offset == args.psnr_offset
                    bird = ()
                    if psnr_case and views == args.views[0] and index < args.bird_slices:
                        bird = ("ours", "true") + (("nominal",) if index < args.bird_nominal_slices else ())
                    out.append((slice_, kind, views, offset, 0.0, index, CHEAP_METHODS if psnr_case else (), bird))
        if index < args.jitter_slices:
            for kind in args.geometry:
                for jitter in args.jitter:
                    out.append((slice_, kind, args.views[0], args.jitter_offset, jitter, index, CHEAP_METHODS, ()))
    return sorted(out, key=lambda case: (bool(case[7]), case[4] > 0, bool(case[6])))


# ------------------------------------------------------------------------------------------------ report
def _median_abs(values) -> float:
    return float(np.median(np.abs(values))) if len(values) else float("nan")


def summarize(rows: list[dict], args) -> dict:
    centre = [r for r in rows if r["jitter_deg"] == 0]
    first = [r for r in centre if r["views"] == args.views[0]]
    bird = [r for r in rows if "bird" in r["psnr"]]
    deltas = [r["psnr"]["bird"]["ours"] - r["psnr"]["bird"]["true"] for r in bird]
    costs = [(r["ours_seconds"] + r["seconds"]["bird"]["ours"]) / r["seconds"]["bird"]["true"] for r in bird]
    return {
        "median_center_error_px": {"ours": _median_abs([r["ours_error"] for r in first]),
                                   "classical": _median_abs([r["classical_error"] for r in first]),
                                   "views": args.views[0], "cases": len(first)},
        "bird_calibrated_minus_true_db": deltas,
        "bird_cost_ratio": costs,
        "targets": {
            "center_error_met": _median_abs([r["ours_error"] for r in first]) <= TARGET_CENTER_PX,
            "bird_within_0p5_db_met": bool(deltas) and min(deltas) >= -TARGET_BIRD_DB,
            "cost_2x_met": bool(costs) and max(costs) <= TARGET_COST,
        },
    }


def markdown(rows: list[dict], summary: dict, args, record: dict) -> str:
    lines = ["# Geometry calibration", "", record_markdown(record), "",
             f"Eval slices at {args.size} x {args.size}; measurements simulated by the **{args.measure_backend}** "
             "projector with the true (erroneous) geometry, reconstructions on the matrix backend; noiseless. "
             "Ours = `ctbird.solvers.calibrate.calibrate` without a prior (consistency search; with jitter also "
             "projection matching), classical = `find_center_sharpness` (entropy of FBP, as tomopy's `find_center`). "
             "Centre offsets in detector cells (= pixels here), errors are estimate minus truth.", ""]
    targets = summary["targets"]
    med = summary["median_center_error_px"]
    deltas, costs = summary["bird_calibrated_minus_true_db"], summary["bird_cost_ratio"]
    lines += ["## Targets", "",
              f"- Median |centre error| at {med['views']} views, offsets {', '.join(map(str, args.offsets))} px "
              f"({med['cases']} cases): ours {med['ours']:.3f} px, classical {med['classical']:.3f} px; target <= "
              f"{TARGET_CENTER_PX} px: **{'met' if targets['center_error_met'] else 'not met'}**."]
    if deltas:
        lines.append(f"- Calibrated BIRD minus true-geometry BIRD: {', '.join(f'{d:+.2f}' for d in deltas)} dB; "
                     f"target within {TARGET_BIRD_DB} dB: **{'met' if targets['bird_within_0p5_db_met'] else 'not met'}**.")
        lines.append(f"- Cost of a calibrated BIRD run (centre estimate + run on the rebuilt projector) over an "
                     f"uncalibrated one: {', '.join(f'{c:.2f}x' for c in costs)}; target <= {TARGET_COST}x: "
                     f"**{'met' if targets['cost_2x_met'] else 'not met'}** (centre only; see the angle cases' "
                     "seconds below).")
    lines += ["", "## Centre estimates", ""]
    table = []
    centre = [r for r in rows if r["jitter_deg"] == 0]
    for kind in args.geometry:
        for views in args.views:
            for offset in args.offsets:
                group = [r for r in centre if (r["geometry"], r["views"], r["offset"]) == (kind, views, offset)]
                if not group:
                    continue
                table.append([kind, views, offset, len(group), f"{_median_abs([r['ours_error'] for r in group]):.3f}",
                              f"{max(abs(r['ours_error']) for r in group):.3f}",
                              f"{_median_abs([r['classical_error'] for r in group]):.3f}",
                              f"{max(abs(r['classical_error']) for r in group):.3f}",
                              fmt(float(np.mean([r['ours_seconds'] for r in group])), digits=1),
                              fmt(float(np.mean([r['classical_seconds'] for r in group])), digits=1)])
    lines += [markdown_table(["geometry", "views", "offset px", "slices", "ours median |err|", "ours max |err|",
                              "classical median |err|", "classical max |err|", "ours s", "classical s"], table), ""]
    lines += ["## Reconstructions (PSNR dB, HU clipped to [-1000, 1000])", "",
              f"Centre-offset cases at {args.psnr_offset} px; geometry used: ours (calibrated), classical-calibrated, "
              "nominal (as given), true. Mean over slices.", ""]
    table = []
    for kind in args.geometry:
        for views in args.views:
            group = [r for r in centre if (r["geometry"], r["views"]) == (kind, views) and r["psnr"]]
            for method in (*CHEAP_METHODS, "bird"):
                with_method = [r for r in group if method in r["psnr"]]
                if not with_method:
                    continue
                cells = []
                for name in GEOMETRY_LABELS:
                    values = [r["psnr"][method][name] for r in with_method if name in r["psnr"][method]]
                    cells.append(f"{np.mean(values):.2f} ({len(values)})" if values else "–")
                table.append([kind, views, method, *cells])
    lines += [markdown_table(["geometry", "views", "method", *GEOMETRY_LABELS], table), ""]
    jitter = [r for r in rows if r["jitter_deg"] > 0]
    if jitter:
        lines += ["## Angle jitter (centre and angles estimated)", "",
                  f"Centre offset {args.jitter_offset} px plus mean-free Gaussian per-view angle errors; angle error = "
                  "RMS of estimated minus true offsets (nominal: the jitter itself). Classical finds the centre only.", ""]
        table = []
        for r in jitter:
            p = r["psnr"]
            table.append([r["slice"].split("/")[0], r["geometry"], r["views"], r["jitter_deg"],
                          f"{r['angle_rms_true']:.3f}", f"{r['angle_rms_ours']:.3f}", f"{r['ours_error']:+.3f}",
                          f"{r['classical_error']:+.3f}", f"{r['ours_seconds']:.0f}",
                          *(f"{p[m]['ours']:.2f} / {p[m]['classical']:.2f} / {p[m]['nominal']:.2f} / {p[m]['true']:.2f}"
                            for m in CHEAP_METHODS)])
        lines += [markdown_table(["slice", "geometry", "views", "jitter deg", "angle rms nominal", "angle rms ours",
                                  "centre err ours", "centre err classical", "ours s",
                                  *(f"{m} ours/classical/nominal/true" for m in CHEAP_METHODS)], table), ""]
    bird = [r for r in rows if "bird" in r["seconds"]]
    if bird:
        lines += ["## Cost", "",
                  "Cost ratio = (calibration s + run with the calibrated geometry) / run with the true geometry. Both "
                  "projectors were already built (about 1 s each at 256 x 256, inside the FBP runs of the same case), "
                  "as were the nominal one the search uses. Wall time on a CPU shared with other jobs.", ""]
        table = [[r["slice"].split("/")[0], r["geometry"], f"{r['ours_seconds']:.1f}",
                  f"{r['seconds']['bird']['ours']:.1f}", f"{r['seconds']['bird']['true']:.1f}",
                  f"{(r['ours_seconds'] + r['seconds']['bird']['ours']) / r['seconds']['bird']['true']:.2f}x",
                  f"{(r['ours_seconds'] + r['seconds']['sirt']['ours']) / r['seconds']['sirt']['true']:.1f}x"]
                 for r in bird]
        lines += [markdown_table(["slice", "geometry", "calibration s", "BIRD calibrated s", "BIRD uncalibrated s",
                                  "BIRD cost ratio", "SIRT cost ratio"], table), ""]
    lines += ["## What was restricted", "",
              f"To fit about 25 minutes of a shared 2-core CPU: {args.max_slices} eval slices at {args.views[0]} views, "
              f"{args.slices_at_more_views} at the other view counts; FBP/SIRT/TV only at {args.psnr_offset} px "
              f"and in the jitter cases; angle jitter {', '.join(f'{j:g}' for j in args.jitter)} deg on "
              f"{args.jitter_slices} slice(s) (projection matching costs about 40 s per case); BIRD (cpu-fast "
              f"preset) on {args.bird_slices} slice(s) per geometry (nominal geometry on {args.bird_nominal_slices}); "
              "noiseless data only.", ""]
    return "\n".join(lines)


def rerender(path: Path) -> Path:
    """Rewrite the page of a finished run from its JSON (after a change of the page's layout or text)."""
    import json

    payload = json.loads(path.read_text())
    args = argparse.Namespace(**payload["args"])
    page = markdown(payload["rows"], summarize(payload["rows"], args), args, payload["record"])
    if payload["cases_done"] < payload["cases_planned"]:
        page = page.replace("\n## Targets", f"\n**Partial: {payload['cases_done']} of {payload['cases_planned']} cases "
                            "done.**\n\n## Targets", 1)
    md_path = path.with_suffix(".md")
    md_path.write_text(page.rstrip() + "\n")
    return md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender is not None:
        print(f"wrote {rerender(args.rerender)}", file=sys.stderr)
        return 0
    device, record = start_run(args, argv)
    slices = load_ct_slices(None if args.synthetic else args.data, args.max_slices, args.size, synthetic=args.synthetic)
    prior = None
    if args.bird_slices > 0:
        from ctbird.priors import load_prior

        prior = load_prior(args.prior, device=str(device))
    rows, todo = [], cases(args, slices)
    for slice_, kind, views, offset, jitter, seed, methods, bird in progress(todo, desc="cases"):
        rows.append(run_case(slice_, kind, views, offset, jitter, seed, args, methods=methods, prior=prior,
                             bird_labels=bird))
        # written after every case: an interrupted run leaves a consistent page of the cases done
        summary = summarize(rows, args)
        payload = {"record": record, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "cases_done": len(rows), "cases_planned": len(todo), "summary": summary, "rows": rows}
        page = markdown(rows, summary, args, record)
        if len(rows) < len(todo):
            page = page.replace("\n## Targets", f"\n**Partial: {len(rows)} of {len(todo)} cases done.**\n\n## Targets", 1)
        json_path, md_path = write_outputs(args.out_dir, args.tag, payload, page)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
