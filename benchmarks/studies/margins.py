"""Where BIRD loses, slice by slice: its PSNR margin over each baseline against what the slice shows.

Reads one or more results JSONs of ``python -m benchmarks.ct`` and, for every setting (geometry, noise, views) in them
that has ``bird``, takes BIRD's per-slice PSNR margin over each other method of the run. Each slice is read
again (``read_dicom -> clip_hu -> to_working_size``, as the benchmark did) and described by three numbers that
say how much of the grid the patient fills:

- tissue fraction: the share of the N x N grid above ``TISSUE_HU`` (soft tissue and bone; air and lung below);
- border contact: the share of the grid's outer ``BORDER_PIXELS``-pixel frame above ``TISSUE_HU``, i.e. how
  much the body runs off the edge of the image (a tight reconstruction field of view);
- field of view: N x pixel spacing, in mm.

The same numbers over the prior's training stack (``--train``) say whether a slice lies inside what the prior
has seen. The Spearman rank correlation of each margin with each number, with its two-sided p-value, tests
whether the failures follow the field of view. Writes ``<tag>.json`` / ``.md`` and ``figures/<tag>.png`` under
``--out-dir`` (default ``docs/results/margins``).

Example (repository root)::

    python -m benchmarks.studies.margins docs/results/ct/cpu-defaults.json docs/results/ct/cpu-defaults-b.json \\
        --tag cpu-defaults
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, fmt, load_ct_slices, markdown_table, read_working_slice,
                               run_script, save_png, write_outputs)

#: HU above which a pixel counts as tissue (between lung, about -850, and fat, about -100).
TISSUE_HU = -500.0
#: Width (pixels) of the grid's outer frame that border contact looks at.
BORDER_PIXELS = 4
FEATURES = {"tissue_fraction": "tissue fraction", "border_contact": "border contact", "fov_mm": "field of view (mm)"}
PERCENTILES = (5, 50, 95, 99)


def slice_features(hu: np.ndarray, pixel_spacing_mm: float) -> dict[str, float]:
    """``hu`` ``[N, N]`` in HU -> tissue fraction and border contact (shares in [0, 1]) and field of view (mm)."""
    tissue = hu > TISSUE_HU
    frame = np.ones_like(tissue)
    frame[BORDER_PIXELS:-BORDER_PIXELS, BORDER_PIXELS:-BORDER_PIXELS] = False
    return {"tissue_fraction": float(tissue.mean()), "border_contact": float(tissue[frame].mean()),
            "fov_mm": float(pixel_spacing_mm * hu.shape[-1])}


def training_features(path: Path) -> dict[str, np.ndarray]:
    """:func:`slice_features` of every slice of an HU stack (:func:`ctbird.stacks.read_slice_stack`; it needs
    ``pixel_spacing_mm``)."""
    from ctbird.errors import InputError
    from ctbird.stacks import read_slice_stack

    stack = read_slice_stack(path)
    if stack.pixel_spacing_mm is None:
        raise InputError(f"{path} has no 'pixel_spacing_mm': the field of view of its slices is unknown.")
    rows = [slice_features(image.astype(np.float32), float(s)) for image, s in zip(stack.images, stack.pixel_spacing_mm)]
    return {name: np.array([row[name] for row in rows]) for name in FEATURES}


def read_slices(data: str, labels: list[str], size: int) -> dict[str, tuple[np.ndarray, float]]:
    """``{label: (hu [size, size], pixel spacing mm)}`` for a benchmark's labels, from its data folder or pack."""
    from ctbird.errors import InputError

    if data.startswith("synthetic"):
        found = {label: (hu, spacing) for label, hu, spacing in load_ct_slices(None, None, size, synthetic=True)}
    elif data.endswith(".npz"):
        found = {label: (hu, spacing) for label, hu, spacing in load_ct_slices(Path(data), None, size,
                                                                             synthetic=False)}
    else:
        found = {label: read_working_slice(Path(data) / label, size) for label in labels
                 if (Path(data) / label).is_file()}
    missing = [label for label in labels if label not in found]
    if missing:
        raise InputError(f"{len(missing)} slice(s) of the run are not in {data} (first: {missing[0]}); "
                         "pass --data with the run's slices.")
    return found


def mid_rank(population: np.ndarray, value: float) -> float:
    """Share of ``population`` below ``value``, ties counted half: where ``value`` sits in it, in [0, 1]."""
    return float(np.mean(population < value) + np.mean(population == value) / 2)


def margins_of_run(run: dict) -> list[dict]:
    """One row per (setting, slice, baseline) of a benchmark payload: BIRD's PSNR minus the baseline's (dB)."""
    settings: dict[tuple, dict[str, dict]] = {}
    for result in run["results"]:
        key = (result["geometry"], result["noise"], result["views"])
        settings.setdefault(key, {})[result["method"]] = {s["slice"]: s["psnr"] for s in result["per_slice"]}
    rows = []
    for (geometry, noise, views), methods in settings.items():
        bird = methods.get("bird")
        if bird is None:
            continue
        for baseline, scores in methods.items():
            if baseline.startswith("bird"):
                continue  # BIRD's own variants (bird-raw, bird-exact) are not baselines
            rows += [{"geometry": geometry, "noise": noise, "views": views, "slice": label, "baseline": baseline,
                      "bird_psnr": psnr, "margin_db": psnr - scores[label]}
                     for label, psnr in bird.items() if label in scores]
    return rows


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (NaN for fewer than 3 points or a constant input)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    result = spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="results JSONs of python -m benchmarks.ct")
    parser.add_argument("--data", default=None,
                        help="where the runs' slices are (default each run's own data setting)")
    parser.add_argument("--train", type=Path, default=SHARED_DATA / "ct" / "train" / "ct256_train_hu.npz",
                        help="the prior's training stack, for its feature distribution (skipped when missing)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "margins",
                        help="output folder (default docs/results/margins)")
    parser.add_argument("--tag", required=True, help="file-name label")
    parser.add_argument("--no-figures", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ctbird.errors import InputError

    args = parse_args(argv)
    try:
        runs = [json.loads(path.read_text()) for path in args.runs]
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read a results JSON: {error}") from None
    rows, features, commands = [], {}, []
    for path, run in zip(args.runs, runs):
        run_rows = margins_of_run(run)
        if not run_rows:
            raise InputError(f"{path} has no 'bird' results to compare.")
        labels = sorted({row["slice"] for row in run_rows} - set(features))
        slices = read_slices(args.data or run["settings"]["data"], labels, run["settings"]["image_size"])
        features.update({label: slice_features(*slices[label]) for label in labels})
        rows += run_rows
        commands.append(run["run"]["command"])
    train = training_features(args.train) if args.train.is_file() else None
    for row in rows:
        row.update(features[row["slice"]])
        if train is not None:
            row.update({f"{name}_train_rank": mid_rank(train[name], row[name]) for name in FEATURES})

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["geometry"], row["noise"], row["views"], row["baseline"]), []).append(row)
    correlations = []
    for (geometry, noise, views, baseline), group in groups.items():
        margins = np.array([row["margin_db"] for row in group])
        for name in FEATURES:
            rho, p = spearman(np.array([row[name] for row in group]), margins)
            correlations.append({"geometry": geometry, "noise": noise, "views": views, "baseline": baseline,
                                 "feature": name, "slices": len(group), "spearman": rho, "p_value": p})
    payload = {"runs": [str(path) for path in args.runs], "commands": commands, "tissue_hu": TISSUE_HU,
               "border_pixels": BORDER_PIXELS, "train": str(args.train) if train is not None else None,
               "train_percentiles": None if train is None else
               {name: dict(zip(map(str, PERCENTILES), np.percentile(train[name], PERCENTILES).tolist()))
                for name in FEATURES},
               "margins": rows, "correlations": correlations}
    figure = None if args.no_figures else plot(args.out_dir / "figures" / f"{args.tag}.png", groups, train)
    payload["figure"] = figure
    json_path, md_path = write_outputs(args.out_dir, args.tag, payload, render(args, payload, groups))
    print(f"wrote {md_path} and {json_path}")
    return 0


def render(args, payload: dict, groups: dict) -> str:
    """The markdown page: inputs, the training distribution, per-slice features and margins, correlations."""
    lines = [f"# Where BIRD loses: margins against the field of view (`{args.tag}`)", "",
             "Generated by `python -m benchmarks.studies.margins`; do not edit by hand.", "",
             "- Command: `python -m benchmarks.studies.margins " + " ".join(payload["runs"]) + f" --tag {args.tag}`",
             *[f"- Benchmark run: `{command}`" for command in payload["commands"]],
             f"- Tissue: HU > {TISSUE_HU:g}. Border contact: the share of the outer {BORDER_PIXELS}-pixel frame "
             "that is tissue (the body runs off the image). Field of view: grid side x pixel spacing.",
             "- Training rank: the share of the prior's training slices with a smaller value (ties count half).",
             "- Margin: BIRD's PSNR minus the baseline's on the same slice (dB); Spearman's rank correlation "
             "with each slice number, two-sided p-value.", ""]
    if payload["train_percentiles"] is not None:
        lines += [f"## The prior's training slices (`{payload['train']}`)", "",
                  markdown_table(["feature", *[f"{q}th percentile" for q in PERCENTILES]],
                                 [[FEATURES[name], *[fmt(value) for value in values.values()]]
                                  for name, values in payload["train_percentiles"].items()]), ""]
    settings = dict.fromkeys((g, n, v) for g, n, v, _ in groups)
    for geometry, noise, views in settings:
        baselines = sorted(b for g, n, v, b in groups if (g, n, v) == (geometry, noise, views))
        margin = {(row["slice"], b): row["margin_db"] for b in baselines for row in groups[(geometry, noise, views, b)]}
        by_slice = {row["slice"]: row for row in groups[(geometry, noise, views, baselines[0])]}
        order = "sirt" if "sirt" in baselines else baselines[0]
        ranked = payload["train_percentiles"] is not None
        headers = ["slice", "BIRD (dB)", *[f"− {b}" for b in baselines],
                   *[f"{title} (training rank)" if ranked else title for title in FEATURES.values()]]
        table = []
        for label in sorted(by_slice, key=lambda label: margin[(label, order)]):
            row = by_slice[label]
            values = [fmt(row["tissue_fraction"]), fmt(row["border_contact"]), f"{row['fov_mm']:.0f}"]
            if ranked:
                values = [f"{value} ({100 * row[f'{name}_train_rank']:.0f} %)" for value, name in zip(values, FEATURES)]
            table.append([label, fmt(row["bird_psnr"]), *[f"{margin[(label, b)]:+.2f}" for b in baselines], *values])
        rho = {(c["baseline"], c["feature"]): c for c in payload["correlations"]
               if (c["geometry"], c["noise"], c["views"]) == (geometry, noise, views)}
        lines += [f"## {geometry} beam, {noise}, {views} views: {len(by_slice)} slices, worst margin over {order} "
                  "first", "", markdown_table(headers, table), "",
                  "Spearman correlation of BIRD's margin with each number (rho, p):", "",
                  markdown_table(["margin over", *FEATURES.values()],
                                 [[b, *[_rho(rho[(b, name)]) for name in FEATURES]] for b in baselines]), ""]
    if payload["figure"]:
        lines += ["## Figure", "", f"![margins](figures/{Path(payload['figure']).name})"]
    return "\n".join(lines)


def _rho(entry: dict) -> str:
    """``+0.12 (p = 0.345)``, or a dash when the correlation is undefined."""
    if not np.isfinite(entry["spearman"]):
        return "–"
    p_value = "p < 0.001" if entry["p_value"] < 1e-3 else f"p = {entry['p_value']:.3f}"
    return f"{entry['spearman']:+.2f} ({p_value})"


def plot(path: Path, groups: dict, train: dict | None) -> str:
    """BIRD's margin over each baseline against each slice number; the training range shaded. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(FEATURES), figsize=(5 * len(FEATURES), 4), squeeze=False)
    for ax, (name, title) in zip(axes[0], FEATURES.items()):
        if train is not None:
            low, high = np.percentile(train[name], (5, 95))
            ax.axvspan(low, high, color="0.9", label="training slices, 5th-95th percentile")
        for (geometry, noise, views, baseline), group in groups.items():
            ax.scatter([row[name] for row in group], [row["margin_db"] for row in group], s=18,
                       label=f"BIRD − {baseline} ({geometry}, {noise}, {views} views)")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(title)
        ax.set_ylabel("BIRD's PSNR margin (dB)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    sys.exit(run_script(main))
