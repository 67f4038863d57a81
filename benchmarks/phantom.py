"""Classical baselines on the Shepp-Logan phantom: FBP (every filter), SIRT and TV.

Noiseless parallel-beam sinogram from ``operators.Radon`` (matrix backend); PSNR and
SSIM with ``data_range=1.0``, the phantom's ``[0, 1]`` span, on the raw (unclipped)
reconstructions. Writes ``baselines.md``, ``baselines.json`` and ``figures/baselines.png`` under
``--out-dir`` (default ``docs/results/phantom``).

Example (repository root)::

    python -m benchmarks.phantom --size 256 --views 30 --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS_DIR, main_module, run_script, save_png, score_unit, write_outputs
from ctbird.baselines import TV_WEIGHT, default_tv_weight, fbp, sirt, tv
from ctbird.phantoms import shepp_logan
from operators.fbp import FILTERS
from operators.geometry import ParallelBeam
from operators.radon import Radon

DATA_RANGE = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side N (default 256)")
    parser.add_argument("--views", type=int, default=30, help="parallel-beam views over [0, pi) (default 30)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "phantom",
                        help="output folder (default docs/results/phantom)")
    from ctbird.config import SIRTConfig, TVConfig

    parser.add_argument("--sirt-iters", type=int, default=SIRTConfig().iters,
                        help="SIRT iterations (default ctbird.config.SIRTConfig's, %(default)s)")
    parser.add_argument("--tv-iters", type=int, default=TVConfig().iters,
                        help="TV (Chambolle-Pock) iterations (default ctbird.config.TVConfig's, %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.size < 16 or args.views < 1 or args.sirt_iters < 0 or args.tv_iters < 0:
        parser.error("--size must be >= 16 and --views >= 1; iteration counts must be >= 0.")
    return args


def timed(device: torch.device, run):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def versions() -> dict[str, str]:
    import astra
    import skimage

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__, "astra-toolbox": astra.__version__, "platform": platform.platform()}


def write_figure(path: Path, truth: np.ndarray, images: dict[str, np.ndarray], scores: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + len(images)
    fig, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 4.8), constrained_layout=True)
    axes[0, 0].imshow(truth, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("ground truth", fontsize=9)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, "|error|\n(0 to 0.25)", ha="center", va="center", fontsize=9)
    for col, (name, image) in enumerate(images.items(), start=1):
        axes[0, col].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(f"{name}\n{scores[name]['psnr_db']:.2f} dB / {scores[name]['ssim']:.3f}", fontsize=9)
        axes[1, col].imshow(np.abs(image - truth), cmap="magma", vmin=0, vmax=0.25)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    save_png(path, fig, dpi=80)
    plt.close(fig)


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# Classical baselines on Shepp-Logan",
        "",
        f"Modified Shepp-Logan phantom (scikit-image), {cfg['size']}x{cfg['size']} px, values in [0, 1]; "
        f"noiseless parallel-beam sinogram, {cfg['views']} views over [0, pi), {cfg['detectors']} detector cells "
        f"(`operators.Radon`, backend `{cfg['radon_backend']}`, ASTRA 'linear' projector). "
        "PSNR and SSIM use `data_range=1.0` (the phantom's [0, 1] span) on the raw, unclipped reconstructions; "
        "SSIM with the Wang et al. settings (Gaussian window, sigma 1.5). Seconds are wall-clock on "
        f"`{cfg['device']}` (torch threads: {cfg['threads']}), excluding the system-matrix build; TV includes "
        "the power-method operator norm.",
        "",
        "| method | PSNR (dB) | SSIM | seconds |",
        "|---|---:|---:|---:|",
    ]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['psnr_db']:.2f} | {row['ssim']:.4f} | {row['seconds']:.2f} |")
    lines += [
        "",
        f"SIRT: {cfg['sirt_iters']} iterations, non-negative. TV: {cfg['tv_iters']} Chambolle-Pock iterations, "
        f"non-negative, default weight `lam = {TV_WEIGHT} * ||A||^2 * s` (s = best constant-image fit of the data; "
        f"here lam = {cfg['tv_lam']:.4g}).",
        "",
        "![baselines](figures/baselines.png)",
        "",
        "Reproduce:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + f". Run {report['date']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    geometry = ParallelBeam(args.views)
    radon = Radon(geometry, args.size, backend="matrix", device=device)
    truth = shepp_logan(args.size).to(device)
    sinogram = radon(truth)

    runs = {f"FBP ({name})": (lambda name=name: fbp(sinogram, geometry, args.size, filter=name)) for name in FILTERS}
    runs[f"SIRT ({args.sirt_iters} it)"] = lambda: sirt(sinogram, radon, iters=args.sirt_iters)
    runs[f"TV ({args.tv_iters} it)"] = lambda: tv(sinogram, radon, iters=args.tv_iters)

    results, images = {}, {}
    for name, run in runs.items():
        recon, seconds = timed(device, run)
        scores = score_unit(recon, truth)
        results[name] = {"psnr_db": scores["psnr"], "ssim": scores["ssim"], "seconds": seconds}
        images[name] = recon[0, 0].cpu().numpy()
        print(f"{name:24s} PSNR {results[name]['psnr_db']:6.2f} dB  SSIM {results[name]['ssim']:.4f}  "
              f"{seconds:6.2f} s", flush=True)

    report = {
        "config": {"phantom": "shepp_logan (skimage, modified)", "size": args.size, "views": args.views,
                   "detectors": radon.geometry.detectors, "geometry": radon.geometry.to_dict(),
                   "radon_backend": radon.backend, "noise": None, "data_range": DATA_RANGE,
                   "sirt_iters": args.sirt_iters, "tv_iters": args.tv_iters, "tv_weight": TV_WEIGHT,
                   "tv_lam": float(default_tv_weight(sinogram, radon).flatten()[0]),
                   "device": str(device), "threads": torch.get_num_threads()},
        "results": results,
        "command": shlex.join(["python", "-m", main_module(), *(sys.argv[1:] if argv is None else argv)]),
        "versions": versions(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    figure = args.out_dir / "figures" / "baselines.png"
    write_figure(figure, truth[0, 0].cpu().numpy(), images, results)
    json_path, md_path = write_outputs(args.out_dir, "baselines", report, markdown(report))
    print(f"wrote {md_path}, {json_path}, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
