"""Time BIRD on sparse-view CT (256² by default): seconds per iteration and per default run, by batch size and gradient mode.

For each batch size and gradient mode (``detached``: the UNet under no_grad, the reference code's choice;
``exact``: backpropagation through the UNet) BIRD runs ``--iters`` iterations on copies of one slice
(``data/samples/chest_tcga_0000.dcm``, 30 parallel views, noiseless) after one untimed warm-up run. Reports
seconds per iteration, the projected seconds of a default run (``ctbird.config.BirdConfig`` iterations at the
given delta_t), seconds per slice, and peak GPU memory. Writes ``bird_<tag>.json`` / ``.md`` under
``--out-dir`` (default ``docs/results/timing``).

Examples (repository root)::

    python -m benchmarks.studies.timing --device cuda --tag gpu --batch-sizes 1,16 --iters 20
    python -m benchmarks.studies.timing --device cpu --tag cpu --batch-sizes 1 --iters 3 --grad-modes detached
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import (RESULTS_DIR, SAMPLE_SLICE, fmt, markdown_table, parse_list, read_working_slice,
                               page_header, run_script, start_run, write_outputs)
from ctbird.simulate import simulate, simulation_geometry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes (default 1,16)")
    parser.add_argument("--grad-modes", default="detached,exact", help="detached and/or exact")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per configuration (default 20)")
    parser.add_argument("--delta-t", type=int, default=None, help="DDIM step (default ctbird.config.BirdConfig's)")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--size", type=int, default=256, help="image side N (default 256; the prior's own size)")
    parser.add_argument("--prior", default=None, help="prior folder (default the shipped one)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "timing",
                        help="output folder (default docs/results/timing)")
    parser.add_argument("--tag", default=None, help="file-name label (default the device type)")
    args = parser.parse_args(argv)
    from ctbird.config import BirdConfig

    args.delta_t = args.delta_t or BirdConfig().delta_t
    try:
        args.batch_sizes = parse_list(args.batch_sizes, int)
        args.grad_modes = parse_list(args.grad_modes)
    except ValueError as exc:
        parser.error(f"could not parse a list option: {exc}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or min(args.iters, args.views, args.size) < 1:
        parser.error("--batch-sizes, --iters, --views and --size must be positive.")
    if not args.grad_modes or set(args.grad_modes) - {"detached", "exact"}:
        parser.error(f"--grad-modes takes detached and/or exact, got {args.grad_modes}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ctbird.api import reconstruct
    from ctbird.priors import default_prior_path, load_prior
    from ctbird.config import BirdConfig

    device, record = start_run(args, argv)
    prior = load_prior(args.prior, device=str(device))
    size = args.size
    hu, spacing = read_working_slice(SAMPLE_SLICE, size)
    geometry = simulation_geometry("parallel", args.views, size)
    one = simulate(hu, image_size=size, pixel_spacing_mm=spacing, geometry=geometry, device=device).sinogram
    default_iters = BirdConfig().iters

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    for grad_mode in args.grad_modes:
        for batch in args.batch_sizes:
            sinogram = one.expand(batch, -1, -1, -1).contiguous()

            def run(iters: int):
                return reconstruct(sinogram, geometry, image_size=size, pixel_spacing_mm=spacing, prior=prior,
                                   method="bird-raw", iters=iters, delta_t=args.delta_t, grad_mode=grad_mode,
                                   device=device)  # BIRD's iterations; the refinement's steps are one UNet call each

            run(1)  # warm-up: kernels, caches, the operator norm
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            started = time.perf_counter()
            result = run(args.iters)
            sync()
            seconds = time.perf_counter() - started
            per_iter = seconds / args.iters
            rows.append({"grad_mode": grad_mode, "batch": batch, "iters": args.iters, "seconds": seconds,
                         "seconds_per_iter": per_iter, "default_run_seconds": per_iter * default_iters,
                         "default_run_seconds_per_slice": per_iter * default_iters / batch,
                         "nfe": int(result.nfe),
                         "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                                                 if device.type == "cuda" else None)})
            print(f"{grad_mode} batch {batch}: {per_iter:.4f} s/iteration", file=sys.stderr, flush=True)

    table = markdown_table(
        ["grad mode", "batch", "s / iteration", f"s / {default_iters}-iteration run", "s / slice", "peak GPU memory (GiB)"],
        [[r["grad_mode"], r["batch"], fmt(r["seconds_per_iter"], None, 4), fmt(r["default_run_seconds"]),
          fmt(r["default_run_seconds_per_slice"]),
          "–" if r["peak_gpu_memory_gib"] is None else fmt(r["peak_gpu_memory_gib"])] for r in rows])
    settings = {"sample": SAMPLE_SLICE.name, "image_size": size, "views": args.views, "delta_t": args.delta_t,
                "ddim_steps": len(prior.timestep_pairs(args.delta_t)), "timed_iters": args.iters,
                "default_iters": default_iters,
                "prior": str(args.prior) if args.prior else str(default_prior_path())}
    markdown = "\n".join([
        page_header(f"BIRD timing `{args.tag}`", "benchmarks.studies.timing", record),
        f"- Setting: `{SAMPLE_SLICE.name}` at {size}², {args.views} parallel views, delta_t {args.delta_t} "
        f"({settings['ddim_steps']} DDIM steps); {args.iters} timed iterations after a warm-up; a "
        f"{default_iters}-iteration run (ctbird.config.BirdConfig) is projected from the per-iteration time.",
        f"- Prior: `{settings['prior']}`", "", table, ""])
    json_path, md_path = write_outputs(args.out_dir, f"bird_{args.tag}",
                                       {"run": record, "settings": settings, "rows": rows}, markdown)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
