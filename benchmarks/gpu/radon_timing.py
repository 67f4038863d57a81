"""Radon backends on a CUDA GPU: build time, forward/adjoint time, agreement, ASTRA-CUDA gradient wiring.

For each image side N (default 256): batch 16 of N x N images, 30 views, parallel and fan beam (source and
detector at 2.34 N and 1.17 N from the axis), every backend (matrix, torch, astra); prints one line per
backend with the forward/adjoint time (mean of 5 after one warm-up) and the relative difference from the
matrix backend. Run by ``scripts/gpu/operator_check.sh`` (which sets up ASTRA's CUDA libraries).

Usage::

    python -m benchmarks.gpu.radon_timing [N ...]
"""

import argparse
import time

import torch

from operators import FanBeam, ParallelBeam, Radon

BATCH, VIEWS, REPEATS = 16, 30, 5


def mean_seconds(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / REPEATS


def check_astra_gradients(op, x: torch.Tensor, n: int) -> None:
    xx = x[:2].clone().requires_grad_(True)
    (0.5 * op(xx).square().sum()).backward()
    expected = op.adjoint(op(x[:2]))
    print("  astra cuda grad wiring rel", float((xx.grad - expected).norm() / expected.norm()))
    xd = torch.randn(1, 1, n, n, device="cuda")
    yd = torch.randn(1, *op.out_shape, device="cuda")
    print("  astra cuda adjointness (float32)", op.adjointness_error(xd, yd, op_norm=None))


def main(sizes: list[int]) -> None:
    for n in sizes:
        print(f"--- {n}x{n}, batch {BATCH}, {VIEWS} views", flush=True)
        x = torch.rand(BATCH, 1, n, n, device="cuda")
        for geometry in (ParallelBeam(views=VIEWS), FanBeam(views=VIEWS, source_distance=2.34 * n,
                                                            detector_distance=1.17 * n)):
            reference = None
            for backend in ("matrix", "torch", "astra"):
                try:
                    started = time.perf_counter()
                    op = Radon(geometry, n, backend=backend, device="cuda")
                    torch.cuda.synchronize()
                    build = time.perf_counter() - started
                    y = op(x)
                    forward = mean_seconds(lambda: op(x))
                    adjoint = mean_seconds(lambda: op.adjoint(y))
                    reference = y if reference is None else reference
                    print(f"{geometry.kind} {backend} build {build:.2f}s fwd(B={BATCH}) {forward * 1e3:.2f}ms "
                          f"adj {adjoint * 1e3:.2f}ms rel-vs-matrix {float((y - reference).norm() / reference.norm()):.2e}",
                          flush=True)
                    if backend == "astra":
                        check_astra_gradients(op, x, n)
                except Exception as exc:  # report every backend, even after one fails
                    print(geometry.kind, backend, "FAILED", type(exc).__name__, exc, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[256], help="image sides N (default 256)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (run it through scripts/gpu/operator_check.sh on the GPU machine).")
    if min(args.sizes) < 16:
        parser.error(f"image sides must be >= 16, got {args.sizes}.")
    main(args.sizes)
