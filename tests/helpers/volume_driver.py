"""Reconstruct an HU volume (``.npy`` ``[S, H, W]``) slice by slice with :mod:`ctbird.volume`.

A stand-in for ``ctbird reconstruct --slices`` until the CLI is wired; run it under ``torchrun`` to shard::

    torchrun --nproc_per_node 2 tests/helpers/volume_driver.py VOLUME.npy --work W --out O --method fbp,sirt

Each method simulates the same noiseless parallel-beam acquisition, reconstructs into ``W/<method>`` and rank 0
writes the outputs to ``O`` (:func:`ctbird.volume.write_volume_outputs`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import torch

    from ctbird.io.series import read_volume
    from ctbird.volume import reconstruct_volume, shutdown_distributed, simulated_sinograms, write_volume_outputs
    from operators import ParallelBeam

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("volume", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="fbp")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--slices", default="all")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--delta-t", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--timings", type=Path, default=None, help="Write {method: seconds} here (rank 0).")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    volume = read_volume(args.volume)
    geometry = ParallelBeam(views=args.views).resolved(args.size)
    sinograms, truth = simulated_sinograms(volume.hu, geometry, image_size=args.size, pixel_spacing_mm=1.0)
    results, timings = {}, {}
    for method in args.method.split(","):
        options = {}
        if method in ("bird", "bird+dc", "dps"):
            options = {"prior": args.prior, "iters": args.iters, "delta_t": args.delta_t}
        elif args.iters and method in ("sirt", "tv"):
            options = {"iters": args.iters}
        start = time.perf_counter()
        results[method] = reconstruct_volume(sinograms, geometry, image_size=args.size, pixel_spacing_mm=1.0,
                                             work_dir=args.work / method, method=method, slices=args.slices,
                                             seed=args.seed, batch_size=args.batch_size, resume=args.resume,
                                             truth=truth, progress=False, device="cpu", **options)
        timings[method] = time.perf_counter() - start
    write_volume_outputs(args.out, results, volume, force=True, truth=truth, summary={"views": args.views})
    if args.timings is not None and results[next(iter(results))].rank == 0:
        args.timings.write_text(json.dumps(timings))
    shutdown_distributed()


if __name__ == "__main__":
    main()
