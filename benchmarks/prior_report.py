"""Report on a CT diffusion prior: samples, training curve, memorization check and denoising quality.

Writes ``prior.md`` and ``prior.json`` plus ``figures/prior_*.png`` under ``--out-dir``:

* ``prior_samples.png``: DDIM samples next to random slices of the training set, wide and lung windows;
* ``prior_loss.png``: the training loss (``loss.jsonl`` of the prior folder);
* ``prior_nearest.png`` / ``prior_nn_distances.png``: every sample next to its nearest training slice, and the
  nearest-neighbour distances of the samples against three references (held-out slices, training slices
  against other patients, neighbouring slices of one series);
* ``prior_denoise.png``: x0-prediction error of the prior against the noise level ``t``.

Distances and errors are RMSE in HU after clipping to ``EVAL_HU_RANGE`` = [-1000, 1000] HU (the project's
metric range). Runs on CPU in about 10 minutes with the defaults; ``--cache FILE`` keeps the samples and
denoising outputs so the report can be re-rendered without the UNet.

Example::

    python -m benchmarks.prior_report --prior data/priors/ctbird-ct-256 --n-samples 8 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO_ROOT, SHARED_DATA, run_script, save_png
from ctbird.errors import InputError
from ctbird.io import read_dicom, to_working_size
from ctbird.modelcard import TCIA_ACKNOWLEDGEMENT, TCIA_COLLECTIONS, training_stretches
from ctbird.priors import DiffusionPrior, default_prior_path
from ctbird.units import EVAL_HU_RANGE, WINDOWS, clip_hu, hu_to_unit, unit_to_hu

TRAIN_FILE = Path("ct") / "train" / "ct256_train_hu.npz"
EVAL_DIR = Path("ct") / "eval"
SIZE = 256
#: Memorization search at 64x64 (4x4 block means): shifts of up to SHIFT_64 pixels there (4 * SHIFT_64 at 256²,
#: the training augmentation's +-8 px) and left-right flips, the two augmentations of training.
SHIFT_64 = 2
AIR_HU = EVAL_HU_RANGE[0]


# ----------------------------------------------------------------------------------------------- data
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=None, help="Prior folder (default: the shipped CT prior).")
    parser.add_argument("--data", type=Path, default=SHARED_DATA,
                        help="Data root holding ct/train/ct256_train_hu.npz and ct/eval/ (default: ../shared/data).")
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--delta-t", type=int, default=20, help="DDIM step of the samples (20: 50 steps).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timesteps", default="50,100,200,400,600,800,900",
                        help="Noise levels t of the denoising check (comma-separated).")
    parser.add_argument("--denoise-slices", type=int, default=6,
                        help="Held-out slices (and as many training slices) in the denoising check.")
    parser.add_argument("--baseline-queries", type=int, default=120,
                        help="Training slices used as queries of the other-patients reference distances.")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="npz file for the samples and denoising outputs: read if it exists, else written.")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs")
    args = parser.parse_args(argv)
    if args.n_samples < 1 or args.denoise_slices < 1 or args.baseline_queries < 1:
        parser.error("--n-samples, --denoise-slices and --baseline-queries must be >= 1")
    args.prior = args.prior or default_prior_path()
    args.timesteps = [int(t) for t in args.timesteps.split(",")]
    return args


def check_data(root: Path) -> tuple[Path, Path]:
    train, eval_dir = root / TRAIN_FILE, root / EVAL_DIR
    missing = [str(p) for p in (train, eval_dir) if not p.exists()]
    if missing:
        raise InputError(f"prior_report: data not found: {', '.join(missing)}. Pass --data the folder holding "
                         f"{TRAIN_FILE} and {EVAL_DIR}/ (the project's shared data; default {SHARED_DATA}).")
    return train, eval_dir


def load_train(path: Path) -> dict[str, np.ndarray]:
    data = np.load(path)
    return {"hu": data["images"].astype(np.float32), "patient": data["patient"].astype(str),
            "collection": data["collection"].astype(str), "series": data["series"].astype(str)}


def load_eval(eval_dir: Path) -> tuple[np.ndarray, list[str]]:
    """All held-out DICOM slices, brought to 256² like the training set (clip, then 2x2 block means)."""
    files = sorted(eval_dir.rglob("*.dcm"))
    slices = [to_working_size(clip_hu(read_dicom(f).hu[0]), SIZE) for f in files]
    return np.stack(slices).astype(np.float32), [str(f.relative_to(eval_dir)) for f in files]


def metric_hu(hu: np.ndarray) -> np.ndarray:
    return np.clip(hu, *EVAL_HU_RANGE).astype(np.float32)


# ----------------------------------------------------------------------------------------------- prior runs
@torch.no_grad()
def draw_samples(prior: DiffusionPrior, n: int, delta_t: int, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return unit_to_hu(prior.sample(n, generator=generator, delta_t=delta_t))[:, 0].numpy()


@torch.no_grad()
def denoise(prior: DiffusionPrior, clean_hu: np.ndarray, timesteps: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``x0_hat`` and the noisy input (both HU ``[T, N, H, W]``) for fixed noise per slice."""
    x0 = hu_to_unit(torch.from_numpy(clip_hu(clean_hu)))[:, None]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    preds, noisy = [], []
    for t in timesteps:
        a = prior.alphas_cumprod[t]
        x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
        preds.append(unit_to_hu(prior.predict_x0(x_t, t))[:, 0].numpy())
        noisy.append(unit_to_hu(x_t / a ** 0.5)[:, 0].numpy())
        print(f"  denoise t={t} done", flush=True)
    return np.stack(preds), np.stack(noisy)


# ----------------------------------------------------------------------------------------------- distances
def block_mean(hu: np.ndarray, factor: int = 4) -> np.ndarray:
    n, h, w = hu.shape
    return hu.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def variants(images: np.ndarray) -> np.ndarray:
    """``[N, V, h*w]``: every image shifted by up to ``SHIFT_64`` px (padding with air) and left-right flipped."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (SHIFT_64, SHIFT_64), (SHIFT_64, SHIFT_64)), constant_values=AIR_HU)
    out = []
    for flip in (False, True):
        src = padded[:, :, ::-1] if flip else padded
        for dy in range(2 * SHIFT_64 + 1):
            for dx in range(2 * SHIFT_64 + 1):
                out.append(src[:, dy:dy + h, dx:dx + w].reshape(n, -1))
    return np.stack(out, axis=1)


def pairwise_rmse(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """RMSE ``[Q, R]`` between flattened rows (float64 accumulation of the expanded square)."""
    q, r = queries.astype(np.float64), refs.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    return np.sqrt(np.maximum(d2, 0.0) / q.shape[1])


def zscore(rows: np.ndarray) -> np.ndarray:
    """Each row shifted to mean 0 and scaled to unit RMS (insensitive to brightness and contrast)."""
    rows = rows - rows.mean(axis=-1, keepdims=True)
    return rows / np.maximum(np.sqrt((rows * rows).mean(axis=-1, keepdims=True)), 1e-6)


def nearest(queries_hu: np.ndarray, train_hu: np.ndarray, train_64: np.ndarray,
            exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Nearest training slice of each query by three measures.

    ``full``: plain 256² RMSE (HU); ``searched``: 64² RMSE minimised over shifts and flips; ``corr``: the largest
    Pearson correlation of the 64² images over shifts and flips (structure only: ignores brightness and contrast
    offsets). ``exclude`` ``[Q, R]`` bool masks out candidates (e.g. the query's own patient).
    """
    q = metric_hu(queries_hu)
    full = pairwise_rmse(q.reshape(len(q), -1), train_hu.reshape(len(train_hu), -1))
    var = variants(block_mean(q))
    n, v, d = var.shape
    searched = pairwise_rmse(var.reshape(n * v, d), train_64).reshape(n, v, -1).min(axis=1)
    corr = (zscore(var.reshape(n * v, d)) @ zscore(train_64).T / d).reshape(n, v, -1).max(axis=1)
    if exclude is not None:
        full = np.where(exclude, np.inf, full)
        searched = np.where(exclude, np.inf, searched)
        corr = np.where(exclude, -np.inf, corr)
    return {"full": full.min(1), "full_index": full.argmin(1), "searched": searched.min(1),
            "searched_index": searched.argmin(1), "corr": corr.max(1), "corr_index": corr.argmax(1)}


def neighbour_distances(train_hu: np.ndarray, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMSE (256²) and 64² correlation between consecutive slices of one series (what a near-copy looks like)."""
    same = np.nonzero(series[1:] == series[:-1])[0]
    a, b = train_hu[same], train_hu[same + 1]
    rmse = np.sqrt(((a - b) ** 2).reshape(len(same), -1).mean(1))
    za, zb = (zscore(block_mean(x).reshape(len(same), -1)) for x in (a, b))
    return rmse, (za * zb).mean(1)


# ----------------------------------------------------------------------------------------------- figures
def _show(ax, hu: np.ndarray, window: tuple[float, float], title: str | None = None) -> None:
    ax.imshow(hu, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def fig_samples(samples: np.ndarray, real: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    n = len(samples)
    rows = [("samples", samples, "wide"), ("samples", samples, "lung"), ("training", real, "wide"),
            ("training", real, "lung")]
    fig, axes = plt.subplots(4, n, figsize=(1.6 * n, 6.8), squeeze=False)
    for r, (name, stack, window) in enumerate(rows):
        for c in range(n):
            _show(axes[r, c], stack[c], WINDOWS[window])
        axes[r, 0].set_ylabel(f"{name}\n{window} {WINDOWS[window][0]:.0f}..{WINDOWS[window][1]:.0f}", fontsize=7)
    fig.suptitle("Prior samples (top two rows) vs random training slices (bottom two rows)", fontsize=9)
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def fig_loss(records: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    k = min(8, len(loss))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.semilogy(steps, loss, lw=0.8, alpha=0.5, label="logged loss (one batch)")
    ax.semilogy(steps[k - 1:], smooth, lw=1.6, label=f"moving mean of {k}")
    ax.set_xlabel("optimizer step (batch 64)")
    ax.set_ylabel("epsilon MSE")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def fig_nearest(samples: np.ndarray, train_hu: np.ndarray, nn: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    n = len(samples)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.6), squeeze=False)
    for c in range(n):
        idx, cidx = int(nn["full_index"][c]), int(nn["corr_index"][c])
        _show(axes[0, c], samples[c], WINDOWS["wide"], f"sample {c}")
        _show(axes[1, c], train_hu[idx], WINDOWS["wide"], f"train #{idx}\nRMSE {nn['full'][c]:.0f} HU")
        _show(axes[2, c], train_hu[cidx], WINDOWS["wide"], f"train #{cidx}\ncorr. {nn['corr'][c]:.2f}")
    axes[0, 0].set_ylabel("sample", fontsize=8)
    axes[1, 0].set_ylabel("nearest training\nslice (256² RMSE)", fontsize=8)
    axes[2, 0].set_ylabel("best-correlated\ntraining slice (64²)", fontsize=8)
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def fig_distances(dist: dict[str, np.ndarray], key: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    top = max(float(np.max(v)) for v in dist.values())
    bins = np.linspace(0, top * 1.02, 40)
    labels = {"heldout": "held-out slices -> training", "other_patient": "training slice -> other patients",
              "neighbour": "neighbouring slices (same series)"}
    for name, label in labels.items():
        ax.hist(dist[name], bins=bins, alpha=0.45, density=True, label=label)
    for i, d in enumerate(dist["samples"]):
        ax.axvline(d, color="k", lw=1.2, label="prior samples -> training" if i == 0 else None)
    ax.set_xlabel("nearest-neighbour RMSE (HU, clipped to [-1000, 1000]; "
                  + ("256², no search)" if key == "full" else "64², shift+flip search)"))
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def fig_denoise(table: dict, example_clean: np.ndarray, example_noisy: np.ndarray, example_pred: np.ndarray,
                timesteps: list[int], path: Path) -> None:
    import matplotlib.pyplot as plt

    n_t = len(timesteps)
    fig = plt.figure(figsize=(1.5 * (n_t + 1), 6.2))
    grid = fig.add_gridspec(3, n_t + 1, height_ratios=[2.4, 1.5, 1.5])
    ax = fig.add_subplot(grid[0, :])
    ax.semilogy(timesteps, table["heldout"], "o-", label="prior x0-prediction, held-out slices")
    ax.semilogy(timesteps, table["train"], "s-", label="prior x0-prediction, training slices")
    ax.semilogy(timesteps, table["noise"], "k--", label="noisy input x_t / sqrt(a_t) (no denoiser)")
    ax.axhline(table["mean_image"], color="grey", ls=":", label="held-out slice vs mean training slice")
    ax.set_xlabel("t")
    ax.set_ylabel("RMSE (HU)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    axes = [[fig.add_subplot(grid[r, c]) for c in range(n_t + 1)] for r in (1, 2)]
    _show(axes[0][0], example_clean, WINDOWS["wide"], "clean (held-out)")
    axes[1][0].axis("off")
    for c, t in enumerate(timesteps, start=1):
        _show(axes[0][c], example_noisy[c - 1], WINDOWS["wide"], f"x_t, t={t}")
        _show(axes[1][c], example_pred[c - 1], WINDOWS["wide"], f"x0_hat, t={t}")
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- markdown
def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def _corr_row(name: str, values: np.ndarray) -> str:
    return (f"| {name} | {len(values)} | {values.min():.3f} | {_pct(values, 5):.3f} | {np.median(values):.3f} | "
            f"{_pct(values, 95):.3f} |")


def _dist_row(name: str, values: np.ndarray) -> str:
    return (f"| {name} | {len(values)} | {values.min():.0f} | {_pct(values, 5):.0f} | {np.median(values):.0f} | "
            f"{_pct(values, 95):.0f} |")


def render_markdown(report: dict) -> str:
    info, mem, den = report["training_info"], report["memorization"], report["denoising"]
    s_full, s_search = np.array(mem["samples"]["full"]), np.array(mem["samples"]["searched"])
    ref = {k: {kk: np.array(vv) for kk, vv in v.items()} for k, v in mem["references"].items()}
    s_corr = np.array(mem["samples"]["corr"])
    held_p5 = _pct(ref["heldout"]["full"], 5)
    closest = float(s_full.min())
    nbr_p95 = _pct(ref["neighbour"]["full"], 95)
    nbr_corr_p5 = _pct(ref["neighbour"]["corr"], 5)
    held_corr_p95 = _pct(ref["heldout"]["corr"], 95)
    copying = closest <= nbr_p95 or float(s_corr.max()) >= nbr_corr_p5
    border = np.array(mem["sample_intensity"]["border"])
    centre = np.array(mem["sample_intensity"]["centre"])
    ts = den["timesteps"]
    held_err, train_err, bias = (np.array(den[k]) for k in ("heldout", "train", "heldout_bias"))
    better_than_mean = [t for t, e in zip(ts, held_err) if e < den["mean_image"]]
    t_ok = max(better_than_mean) if better_than_mean else None
    gap = float(np.mean(held_err[:len(ts) // 2 + 1] / train_err[:len(ts) // 2 + 1]))
    sources = info.get("sources") or []
    collections: dict[str, int] = {}
    for source in sources:  # the last stretch may read several stack files
        for name, count in source.get("collections", {}).items():
            collections[name] = collections.get(name, 0) + count
    n_patients = len({patient for source in sources for patient in source.get("patients", [])})
    source_text = "; ".join(source.get("description") or source["path"] for source in sources)
    stretches = training_stretches(info)
    total_steps = sum(int(st["steps"]) for st in stretches)
    total_minutes = sum(float(st["wall_minutes"]) for st in stretches)
    passes = sum(int(st["steps"]) * int(st["batch_size"]) / max(1, sum(d["slices"] for d in st["data"]))
                 for st in stretches)
    stretch_text = f" in {len(stretches)} stretches" if len(stretches) > 1 else ""
    direction = "bright" if bias[-1] > 0 else "dark"
    centre_median = float(np.median(centre))
    body_text = ("far too bright" if centre_median > mem["real_centre_hu"][1] else
                 "too dark" if centre_median < mem["real_centre_hu"][0] else "within the training range (median)")
    lines = [
        "# ctbird's CT diffusion prior (`data/priors/ctbird-ct-256`)",
        "",
        "<!-- Generated by python -m benchmarks.prior_report; edit the script, not this file. -->",
        "",
        "The default prior of `ctbird reconstruct` is an unconditional DDPM trained by `ctbird train-prior` on "
        "256² axial CT slices. This page shows what it generates, how it was trained, whether it copies its "
        "training slices, and how well it denoises at each noise level. Everything below is regenerated with",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        f"({report['seconds'] / 60:.1f} min on {report['platform']}, {report['model_seconds'] / 60:.1f} min of it "
        f"in the UNet; torch {report['torch']}).",
        "",
        "## Summary",
        "",
        f"- **Small and briefly trained**: {info['parameters'] / 1e6:.2f} M-parameter UNet, {total_steps} steps of "
        f"batch {info['batch_size']}{stretch_text} ({total_minutes:.1f} min on {info['hardware']}), "
        f"{info['weights_mb']:.1f} MB of fp16 weights.",
        "- **Samples are poor (under-trained)**: some show a body outline with lungs, others are mostly noise; "
        "the air around the body is a grey, noisy texture instead of a flat -1000 HU (median of the image "
        f"borders {border.min():.0f} .. {border.max():.0f} HU) and the body is {body_text} (median of the "
        f"centre {centre.min():.0f} .. {centre.max():.0f} HU; training slices {mem['real_centre_hu'][0]:.0f} .. "
        f"{mem['real_centre_hu'][1]:.0f} HU, 5-95 %). The likely cause is "
        f"the high-noise levels, where unconditional sampling starts: the x0 prediction error is {held_err[-1]:.0f} HU "
        f"at t={ts[-1]}" + (f", biased {direction} by {bias[-1]:+.0f} HU on average" if abs(bias[-1]) >= 100 else
                             f" (on average nearly unbiased, {bias[-1]:+.0f} HU)")
        + " (table below). BIRD's chain starts there too; docs/results.md measures what that costs BIRD.",
        f"- **No sign of memorization** (but a weak test for samples this poor): the closest sample is "
        f"{closest:.0f} HU (RMSE) from its nearest training slice, while held-out real slices lie {held_p5:.0f} HU "
        f"or more (5th percentile) from theirs and neighbouring slices of one series — the scale of a copy — are "
        f"{np.median(ref['neighbour']['full']):.0f} HU apart (median); by brightness-invariant correlation the "
        f"best sample reaches {s_corr.max():.2f}, within the range of held-out slices (median "
        f"{np.median(ref['heldout']['corr']):.2f}, 95 % below {held_corr_p95:.2f}) and far below neighbouring slices "
        f"(median {np.median(ref['neighbour']['corr']):.3f})." if not copying else
        f"- **Possible memorization**: the closest sample is {closest:.0f} HU from a training slice, within the "
        f"range of neighbouring slices of one series (95th percentile {nbr_p95:.0f} HU).",
        "- **Denoising**: the x0-prediction error on held-out slices is "
        + ", ".join(f"{e:.0f} HU at t={t}" for t, e in zip(den["timesteps"], den["heldout"]))
        + f" (no-denoiser input error: {den['noise'][0]:.0f} .. {den['noise'][-1]:.0f} HU; "
        f"predicting the mean training slice: {den['mean_image']:.0f} HU).",
        "",
        "## Samples",
        "",
        f"{report['n_samples']} DDIM samples (eta 0, {1000 // report['delta_t']} steps, seed {report['seed']}, "
        "EMA weights) above random slices of the training set, in the wide (-1000..1000 HU) and lung "
        "(-1350..150 HU) windows:",
        "",
        "![samples](figures/prior_samples.png)",
        "",
        "The samples are far from the training slices: body outlines and lungs appear in some, others stay "
        "noise-like, every background is grey and textured, and the intensities are off (table):",
        "",
        "| sample | " + " | ".join(str(i) for i in range(len(border))) + " |",
        "|---|" + "---|" * len(border),
        "| border median (HU) | " + " | ".join(f"{v:.0f}" for v in border) + " |",
        "| centre median (HU) | " + " | ".join(f"{v:.0f}" for v in centre) + " |",
        "",
        f"(Training slices, 5-95 %: border median {mem['real_border_hu'][0]:.0f} .. {mem['real_border_hu'][1]:.0f} HU; "
        f"centre median {mem['real_centre_hu'][0]:.0f} .. {mem['real_centre_hu'][1]:.0f} HU.)",
        "",
        "The training run's own sample grid (`data/priors/ctbird-ct-256/samples.png`, made with diffusers' "
        "DDIMScheduler, 50 steps) looks the same, so this is the model, not the sampler. A longer training "
        "run (below) is the fix.",
        "",
        "## How it was trained",
        "",
        (f"In {len(stretches)} stretches, each continuing the previous one's exported weights (`--init-from`); "
         "the model card's table lists them. The last stretch:" if len(stretches) > 1 else "The command:"),
        "",
        "```bash",
        info["command"],
        "```",
        "",
        "(`python -m ctbird.training` is the module behind `ctbird train-prior`; `scripts/gpu/train_prior.sh` "
        "wraps it for a time-boxed run on a GPU machine.)",
        "",
        f"- Model: diffusers `UNet2DModel`, {info['parameters']:,} parameters, block channels "
        f"{tuple(info['unet_config']['block_out_channels'])}, {info['unet_config']['layers_per_block']} layer per "
        "block, attention at the two coarsest levels; epsilon prediction, 1000 steps, linear betas 1e-4..0.02 "
        "(the schedule BIRD's DDIM expects).",
        f"- Optimisation: AdamW, lr {info['lr']:g} ({info['lr_schedule']}, {info['warmup_steps']} warm-up steps), "
        f"batch {info['batch_size']}, {info['mixed_precision']} autocast, EMA (max decay {info['ema_decay']}); "
        + (f"random zooms in [1/{info['max_zoom']:g}, {info['max_zoom']:g}], " if info.get("max_zoom", 1.0) > 1.0
           else "")
        + f"random shifts up to {info['max_shift_px']} px (air padding) and left-right flips.",
        f"- Training loss (epsilon MSE, batch mean): {report['loss_summary']}",
        "",
        "![training loss](figures/prior_loss.png)",
        "",
        "## Training data and licences",
        "",
        f"The last stretch read {sum(collections.values())} slices of {n_patients} patients ({source_text}). "
        "`ct/train/ct256_train_hu.npz` (1403 slices) was made from native 512² DICOM by clipping HU to "
        "[-1024, 3071] and averaging 2x2 blocks (see the data README). HU are mapped to [-1, 1] by "
        "`ctbird.units.hu_to_unit` (window [-1024, 3071]). Training and inference share one pre-processing "
        "(`ctbird.stacks.working_slices`): clip to that window, pad a non-square slice with air to a square (never "
        "crop it), resample to the working size.",
        "",
        "| TCIA collection | slices | licence / citation |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {count} | {TCIA_COLLECTIONS.get(name, 'see TCIA')} |"
              for name, count in sorted(collections.items(), key=lambda kv: -kv[1])]
    lines += [
        "",
        TCIA_ACKNOWLEDGEMENT + " All licences are attribution-only (CC BY), so the weights can ship with "
        "these attributions; the model card `data/priors/ctbird-ct-256/README.md` repeats them.",
        "",
        "## Memorization check",
        "",
        f"For every sample, the nearest of all {mem['stack_slices']} slices of the training stack (the "
        f"{mem['used_slices']} used for training "
        "and their neighbours) by RMSE in HU, images clipped to [-1000, 1000] HU. Two distances: the plain "
        "256² RMSE, and a search at 64² (4x4 block means) over shifts of up to ±8 px and left-right flips — "
        "the training augmentations, so a copy of a shifted or mirrored slice is found too. A sample much "
        "closer to the training set than real slices it never saw would indicate copying. References:",
        "",
        f"- **held-out**: the {len(ref['heldout']['full'])} slices of `ct/eval/` (other patients, scanners and "
        "sites; brought to 256² the same way) against the training stack;",
        f"- **other patients**: {len(ref['other_patient']['full'])} training slices against the slices of the "
        "other 10 patients (same scanners' distribution, unseen anatomy);",
        "- **neighbours**: consecutive slices of one series (≈ the distance of a near-copy).",
        "",
        "| nearest-neighbour RMSE (HU), 256² | n | min | 5 % | median | 95 % |",
        "|---|---|---|---|---|---|",
        _dist_row("prior samples", s_full),
        _dist_row("held-out slices", ref["heldout"]["full"]),
        _dist_row("training slice vs other patients", ref["other_patient"]["full"]),
        _dist_row("neighbouring slices (copy scale)", ref["neighbour"]["full"]),
        "",
        "| nearest-neighbour RMSE (HU), 64² with shift+flip search | n | min | 5 % | median | 95 % |",
        "|---|---|---|---|---|---|",
        _dist_row("prior samples", s_search),
        _dist_row("held-out slices", ref["heldout"]["searched"]),
        _dist_row("training slice vs other patients", ref["other_patient"]["searched"]),
        "",
        "Because the samples' intensities are off, RMSE alone would miss a copy with a brightness shift, so the "
        "third measure is the largest Pearson correlation of the 64² images (shift+flip search; insensitive to "
        "brightness and contrast; 1 = identical structure):",
        "",
        "| best correlation, 64² with shift+flip search | n | min | 5 % | median | 95 % |",
        "|---|---|---|---|---|---|",
        _corr_row("prior samples", s_corr),
        _corr_row("held-out slices", ref["heldout"]["corr"]),
        _corr_row("training slice vs other patients", ref["other_patient"]["corr"]),
        _corr_row("neighbouring slices (copy scale)", ref["neighbour"]["corr"]),
        "",
        f"Per sample (nearest training slice by the 256² RMSE; `used` = among the {mem['used_slices']} training slices; the "
        "figure's third row shows the best-correlated slice, which the RMSE ranking misses because large, "
        "bright abdominal slices are closest in RMSE to almost any over-bright sample):",
        "",
        "| sample | RMSE 256² (HU) | nearest slice | patient | collection | used | RMSE 64² searched (HU) "
        "| best corr. (slice) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(mem["samples"]["rows"]):
        lines.append(f"| {i} | {row['full']:.0f} | #{row['index']} | {row['patient']} | {row['collection']} | "
                     f"{'yes' if row['used'] else 'no'} | {row['searched']:.0f} | {row['corr']:.2f} "
                     f"(#{row['corr_index']}) |")
    verdict = (
        f"The samples are **not** copies: the closest one ({closest:.0f} HU) is farther from the training set "
        f"than neighbouring slices of a series are from each other (95 % below {nbr_p95:.0f} HU), and their "
        f"best structural correlation ({s_corr.max():.2f}) is far below that of neighbouring slices (95 % above "
        f"{nbr_corr_p5:.3f}) and within the range of real slices the prior never saw (median "
        f"{np.median(ref['heldout']['corr']):.2f}, 95 % below {held_corr_p95:.2f}). "
        "Honestly, this is a weak result: the samples are far from *every* real slice because they are poor "
        "(noise, brightness offset), so the check mainly guards future, longer-trained priors. Re-run it after "
        f"retraining: {mem['used_slices']} slices of {n_patients} patients is a small set, and diffusion models are known to memorize "
        "small sets when trained long."
        if not copying else
        f"At least one sample ({closest:.0f} HU) is as close to a training slice as neighbouring slices of one "
        "series are to each other: inspect the figure below for copies before shipping this prior."
    )
    lines += [
        "",
        verdict,
        "",
        "![nearest training slices](figures/prior_nearest.png)",
        "",
        "![nearest-neighbour distances](figures/prior_nn_distances.png)",
        "",
        "## Denoising quality against the noise level",
        "",
        f"Each slice is noised to `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps` (fixed `eps` per slice) and the prior's "
        "clamped Tweedie estimate `x0_hat(x_t, t)` (`DiffusionPrior.predict_x0`) is compared with `x0`. "
        f"{den['n_heldout']} held-out slices (from `ct/eval/`) and {den['n_train']} training slices; RMSE in HU "
        "clipped to [-1000, 1000]. The no-denoiser row is the error of `x_t / sqrt(a_t)`; the mean-image "
        "row is the error of predicting the mean training slice, what a useless prior converges to at t → 1000.",
        "",
        "| t | " + " | ".join(str(t) for t in den["timesteps"]) + " |",
        "|---|" + "---|" * len(den["timesteps"]),
        "| held-out: x0_hat RMSE (HU) | " + " | ".join(f"{v:.0f}" for v in den["heldout"]) + " |",
        "| training: x0_hat RMSE (HU) | " + " | ".join(f"{v:.0f}" for v in den["train"]) + " |",
        "| no denoiser: x_t / sqrt(a_t) (HU) | " + " | ".join(f"{v:.0f}" for v in den["noise"]) + " |",
        "| held-out: mean of x0_hat - x0 (HU, bias) | " + " | ".join(f"{int(round(v)) or 0:+d}" for v in bias) + " |",
        "",
        "![denoising vs t](figures/prior_denoise.png)",
        "",
        f"Reading: the prior denoises well at low noise ({held_err[0]:.0f} HU at t={ts[0]}, against "
        f"{den['noise'][0]:.0f} HU without it) and stays better than the mean training slice "
        f"({den['mean_image']:.0f} HU) up to t = {t_ok}. Beyond that the prediction is worse than a constant "
        f"guess (mean bias {bias[-1]:+.0f} HU at t={ts[-1]}): the steps of BIRD's 10-step chain above "
        f"t = {t_ok} give little more than a rough layout, and the data term has to do the work there. "
        f"On the low-noise half of the levels, held-out errors are {gap:.2f}x the training-slice errors"
        + (": the prior generalises to unseen patients and scanners." if gap < 1.3 else
           ": a generalisation gap to unseen patients and scanners.")
        + (f" Above t = {t_ok} the held-out errors are not larger than the training ones (both poor)."
           if all(h <= tr for t, h, tr in zip(ts, held_err, train_err) if t_ok is not None and t > t_ok) else ""),
        "",
        "## Limits",
        "",
        "- Research and teaching only, **not for clinical use**: reconstructions regularised by this prior can "
        "hallucinate or remove anatomy and lesions.",
        f"- {n_patients} patients, {sum(collections.values())} slices, few scanners (GE, Siemens, Philips), adult "
        "chest/abdomen/head only: other anatomy, children, implants, contrast phases and kernels are out of "
        "distribution.",
        "- 256² at about 1.4 mm pixels (the 512² → 256² reduction of typical FOVs); other sizes work with "
        "`DiffusionPrior(..., image_size=...)` (any multiple of 16, the UNet is convolutional) but the prior "
        "has only seen this pixel scale.",
        f"- Under-trained ({total_minutes:.1f} GPU minutes): poor unconditional samples and a biased, weak x0 prediction at high "
        "noise; BIRD's reconstructions can inherit texture and intensity errors where the measurements are weak.",
        "",
        "## Training a better prior",
        "",
        "The logged loss flattens early, but the epsilon MSE averaged over t is dominated by "
        "the easy small-t levels and says little about sample quality, which in diffusion models keeps "
        f"improving for tens to hundreds of thousands of steps. {total_steps} steps are about {passes:.0f} passes "
        "over the training slices; the gap is mostly GPU time. With the same data:",
        "",
        "```bash",
        "# one GPU, a few hours, resumable (re-run with --resume to continue from OUT/checkpoints/)",
        "ctbird train-prior ../shared/data/ct/train/ct256_train_hu.npz --out priors/ct-256-long \\",
        "    --size 256 --model-preset small --batch-size 64 --lr 2e-4 --lr-schedule cosine \\",
        "    --steps 200000 --max-minutes 240 --checkpoint-every 2000 --sample-every 5000",
        "# several GPUs, data-parallel",
        "accelerate launch --num_processes 4 -m ctbird.training ../shared/data/ct/train/ct256_train_hu.npz \\",
        "    --out priors/ct-256-long --batch-size 32 --steps 200000 --max-minutes 240",
        "# continue the shipped prior on a time-boxed GPU machine (its checkpoints are not kept between sessions),",
        "# then benchmark it there: see scripts/gpu/session.sh and docs/gpu.md",
        "bash scripts/gpu/session.sh 8 main",
        "```",
        "",
        "Train longer, add more "
        "patients (TCIA collections with CC BY licences; never `ct/eval/`), and re-run this report "
        "(`--prior priors/ct-256-long`) to check the samples, the memorization distances and the denoising "
        "curve before replacing `data/priors/ctbird-ct-256`.",
        "",
    ]
    return "\n".join(lines)


def training_slices_used(info: dict, stack_slices: int) -> np.ndarray:
    """Mask ``[stack_slices]`` of the training-stack slices the prior saw, over all its training stretches.

    A stretch trained on a subset made by ``python -m benchmarks.gpu.pack`` records ``--stride S --offset K``
    in its data description; a stretch without one is taken to have used the whole stack.
    """
    used = np.zeros(stack_slices, bool)
    for data in (stretch["data"] for stretch in training_stretches(info)):
        subsets = [re.search(r"--stride (\d+) --offset (\d+)", d.get("description") or "") for d in data]
        if not data or not all(subsets):
            used[:] = True
            continue
        for match in subsets:
            used[int(match.group(2))::int(match.group(1))] = True
    return used


def _reproducible_argv(argv: list[str]) -> list[str]:
    """``argv`` without ``--cache FILE`` (a local shortcut, not part of how the report is made)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--cache":
            skip = True
        elif not arg.startswith("--cache="):
            out.append(arg)
    return out


def sample_intensity(samples_hu: np.ndarray) -> dict[str, list[float]]:
    """Median HU of each sample's 16-px border (air in real slices) and of its central 64x64 (body)."""
    frame = np.ones(samples_hu.shape[1:], bool)
    frame[16:-16, 16:-16] = False
    c = samples_hu.shape[-1] // 2
    return {"border": [float(np.median(x[frame])) for x in samples_hu],
            "centre": [float(np.median(x[c - 32:c + 32, c - 32:c + 32])) for x in samples_hu]}


def loss_summary(records: list[dict]) -> str:
    """One sentence on the logged loss curve."""
    loss = np.array([r["loss"] for r in records])
    steps = np.array([r["step"] for r in records])
    middle = loss[(steps > steps[-1] * 0.25) & (steps <= steps[-1] * 0.5)]
    text = (f"{loss[0]:.3f} at step {steps[0]}, {middle.mean():.4f} (mean) from step {int(steps[-1] * 0.25)} to "
            f"{int(steps[-1] * 0.5)}, {loss[-10:].mean():.4f} over the last 10 logged values (to step {steps[-1]}).")
    return text


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train_path, eval_dir = check_data(args.data)
    figures = args.out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    prior = DiffusionPrior.from_pretrained(args.prior, local_files_only=True)
    info = json.loads((Path(args.prior) / "training_info.json").read_text())
    records = [json.loads(line) for line in (Path(args.prior) / "loss.jsonl").read_text().splitlines() if line]

    train = load_train(train_path)
    train_hu = metric_hu(train["hu"])
    eval_hu, eval_names = load_eval(eval_dir)
    print(f"data: {len(train_hu)} training slices, {len(eval_hu)} held-out slices", flush=True)
    used = training_slices_used(info, len(train_hu))

    rng = np.random.default_rng(args.seed)
    denoise_eval = np.linspace(0, len(eval_hu) - 1, args.denoise_slices).round().astype(int)
    denoise_train = np.flatnonzero(used)[np.linspace(0, used.sum() - 1, args.denoise_slices + 2).round()
                                         .astype(int)[1:-1]]
    clean = np.concatenate([eval_hu[denoise_eval], train["hu"][denoise_train]])
    if args.cache is not None and args.cache.is_file():
        cached = np.load(args.cache)
        samples, preds, noisy = cached["samples"], cached["preds"], cached["noisy"]
        model_seconds = float(cached["model_seconds"])
        print(f"loaded samples and denoising outputs from {args.cache}", flush=True)
    else:
        t0 = time.perf_counter()
        samples = draw_samples(prior, args.n_samples, args.delta_t, args.seed)
        print(f"{args.n_samples} samples in {time.perf_counter() - t0:.0f} s", flush=True)
        preds, noisy = denoise(prior, clean, args.timesteps, args.seed)
        model_seconds = time.perf_counter() - t0
        if args.cache is not None:
            np.savez_compressed(args.cache, samples=samples, preds=preds, noisy=noisy, model_seconds=model_seconds)

    # memorization
    train_64 = block_mean(train_hu).reshape(len(train_hu), -1)
    s_nn = nearest(samples, train_hu, train_64)
    h_nn = nearest(eval_hu, train_hu, train_64)
    queries = np.linspace(0, len(train_hu) - 1, args.baseline_queries).round().astype(int)
    other = nearest(train_hu[queries], train_hu, train_64,
                    exclude=train["patient"][queries][:, None] == train["patient"][None, :])
    neighbours, neighbour_corr = neighbour_distances(train_hu, train["series"])
    print("memorization distances done", flush=True)

    # denoising errors
    clean_m, preds_m, noisy_m = metric_hu(clean), metric_hu(preds), metric_hu(noisy)
    err = np.sqrt(((preds_m - clean_m[None]) ** 2).mean(axis=(2, 3)))  # [T, N]
    noise_err = np.sqrt(((noisy_m - clean_m[None]) ** 2).mean(axis=(2, 3)))
    n_eval = len(denoise_eval)
    mean_image = train_hu[used].mean(0)
    mean_err = float(np.sqrt(((metric_hu(eval_hu) - mean_image[None]) ** 2).mean(axis=(1, 2))).mean())
    bias = (preds - clip_hu(clean)[None]).mean(axis=(2, 3))  # [T, N], HU over the prior's full window
    den = {"timesteps": args.timesteps, "heldout": err[:, :n_eval].mean(1).tolist(),
           "heldout_bias": bias[:, :n_eval].mean(1).tolist(),
           "train": err[:, n_eval:].mean(1).tolist(), "noise": noise_err[:, :n_eval].mean(1).tolist(),
           "mean_image": mean_err, "n_heldout": n_eval, "n_train": len(denoise_train),
           "heldout_slices": [eval_names[i] for i in denoise_eval], "train_slices": denoise_train.tolist()}

    # figures
    real = train["hu"][np.sort(rng.choice(np.flatnonzero(used), args.n_samples, replace=False))]
    fig_samples(samples, real, figures / "prior_samples.png")
    fig_loss(records, figures / "prior_loss.png")
    fig_nearest(samples, train_hu, s_nn, figures / "prior_nearest.png")
    dists = {"samples": s_nn["full"], "heldout": h_nn["full"], "other_patient": other["full"], "neighbour": neighbours}
    fig_distances(dists, "full", figures / "prior_nn_distances.png")
    fig_denoise(den, clean[0], noisy[:, 0], preds[:, 0], args.timesteps, figures / "prior_denoise.png")

    real_intensity = sample_intensity(train["hu"][used])
    rows = [{"full": float(s_nn["full"][i]), "index": int(s_nn["full_index"][i]),
             "patient": str(train["patient"][s_nn["full_index"][i]]),
             "collection": str(train["collection"][s_nn["full_index"][i]]),
             "used": bool(used[s_nn["full_index"][i]]), "searched": float(s_nn["searched"][i]),
             "searched_index": int(s_nn["searched_index"][i]), "corr": float(s_nn["corr"][i]),
             "corr_index": int(s_nn["corr_index"][i])} for i in range(len(samples))]
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.prior_report", *_reproducible_argv(
            sys.argv[1:] if argv is None else argv)]),
        "prior": str(args.prior), "n_samples": args.n_samples, "delta_t": args.delta_t, "seed": args.seed,
        "training_info": info,
        "memorization": {
            "used_slices": int(used.sum()), "stack_slices": len(train_hu),
            "metric": "RMSE in HU, images clipped to [-1000, 1000]; 'searched' = 64x64 block means, min over "
                      f"shifts <= {SHIFT_64} px (64x64) and left-right flips",
            "samples": {"full": s_nn["full"].tolist(), "searched": s_nn["searched"].tolist(),
                        "corr": s_nn["corr"].tolist(), "rows": rows},
            "references": {
                "heldout": {k: h_nn[k].tolist() for k in ("full", "searched", "corr")},
                "other_patient": {k: other[k].tolist() for k in ("full", "searched", "corr")},
                "neighbour": {"full": neighbours.tolist(), "corr": neighbour_corr.tolist()},
            },
            "sample_intensity": sample_intensity(samples),
            "real_centre_hu": np.percentile(real_intensity["centre"], [5, 95]).tolist(),
            "real_border_hu": np.percentile(real_intensity["border"], [5, 95]).tolist(),
        },
        "denoising": den,
        "platform": f"{platform.machine()} CPU, {args.threads} threads",
        "torch": torch.__version__,
    }
    report["loss_summary"] = loss_summary(records)
    report["model_seconds"] = model_seconds
    report["seconds"] = time.perf_counter() - start + (model_seconds if args.cache is not None and
                                                       args.cache.is_file() else 0.0)
    (args.out_dir / "prior.md").write_text(render_markdown(report))
    summary = {k: v for k, v in report.items() if k != "training_info"}
    (args.out_dir / "prior.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out_dir / 'prior.md'} in {report['seconds'] / 60:.1f} min", flush=True)
    return report


if __name__ == "__main__":
    sys.exit(run_script(lambda: main() and 0))
