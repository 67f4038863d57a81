"""Whole volumes: slices per minute for 1 and more processes, and the z-TV consistency table.

Throughput: the first ``--slices`` slices of a real series (``--series``, default the eval head-and-neck planning CT)
are simulated at ``--views`` parallel views and reconstructed by each of ``--methods`` with
:func:`ctbird.volume.reconstruct_volume`, once per process count of ``--processes`` (``torchrun --standalone
--nproc_per_node P``, gloo on the CPU; each process gets ``--threads`` / P torch threads so every run uses the same
cores). The time is rank 0's wall clock around the call, the prior loaded and one FBP slice run first; BIRD runs the CLI's CPU preset
(``--bird-iters`` overrides its iterations). Slices per minute = slices / time.

Consistency between slices: a contiguous run of ``--z-tv-slices`` slices of a training patient (from
``ct/train/ct256_train_hu.npz``) tunes the weight of :func:`ctbird.volume.apply_z_tv` per method over
``--z-tv-weights`` (best mean of the coronal and sagittal PSNR); the eval series is then reported with and without
it (:func:`ctbird.volume.slice_consistency`: axial/coronal/sagittal PSNR, z-gradient RMSE in HU).

Writes ``docs/results/volume/<tag>.md`` and ``.json``. Example (repository root)::

    python -m benchmarks.volume --slices 8 --size 256 --processes 1,2 --tag cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS_DIR, SHARED_DATA, fmt, markdown_table, parse_list, record_markdown,
                               require_positive, run_record, run_script, write_outputs)

EVAL_SERIES = Path("ct") / "eval" / "head_neck_cetuximab"
TRAIN_FILE = Path("ct") / "train" / "ct256_train_hu.npz"
SMOKE_NOTE = ("**Smoke run**: a small size on a CPU shared with other jobs, to check that the benchmark works. "
              "The numbers are not measurements; rerun without `--smoke` on an idle machine.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"shared data root (default {SHARED_DATA})")
    parser.add_argument("--series", type=Path, default=None, help=f"series to time and report (default DATA/{EVAL_SERIES})")
    parser.add_argument("--synthetic", action="store_true", help="phantom stacks instead of real series (tests)")
    parser.add_argument("--slices", type=int, default=8, help="slices timed per run (default 8)")
    parser.add_argument("--size", type=int, default=256, help="reconstruction grid side N (default 256)")
    parser.add_argument("--views", type=int, default=30, help="parallel-beam views (default 30)")
    parser.add_argument("--dose", type=float, default=None, help="I0 for log-Poisson noise (default noiseless)")
    parser.add_argument("--methods", default="fbp,sirt,bird", help="methods timed (default fbp,sirt,bird)")
    parser.add_argument("--processes", default="1,2", help="process counts (default 1,2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (gloo) or cuda (NCCL, one GPU per process) (default cpu)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in all (default: cores)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="slices per batch (default 1: on a CPU batching saves little, and the automatic size "
                             "would put a short series in one batch, on one process)")
    parser.add_argument("--prior", default=None, help="prior folder (default: the shipped CT prior)")
    parser.add_argument("--bird-iters", type=int, default=None, help="BIRD iterations (default: the CPU preset's)")
    parser.add_argument("--z-tv-slices", type=int, default=8, help="contiguous slices of the z-TV table (default 8)")
    parser.add_argument("--z-tv-methods", default="sirt,bird", help="methods of the z-TV table (default sirt,bird)")
    parser.add_argument("--z-tv-weights", default="0.01,0.03,0.1,0.3", help="z-TV weights tried on the training series")
    parser.add_argument("--train-patient", default="LIDC-IDRI-0002", help="training patient tuning the z-TV weight")
    parser.add_argument("--smoke", action="store_true", help="mark the page as a smoke run (not a measurement)")
    parser.add_argument("--tag", default="cpu", help="page name (default cpu)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR / "volume", help="default docs/results/volume")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    require_positive(parser, args, ("slices", "size", "views", "threads", "batch_size", "bird_iters", "z_tv_slices"))
    if args.z_tv_slices < 2:
        parser.error("--z-tv-slices must be >= 2 (consistency between slices).")
    return args


# ----------------------------------------------------------------------------------------- inputs
def phantom_stack(slices: int, size: int) -> np.ndarray:
    """Shepp-Logan slices whose contrast varies along z: ``[S, N, N]`` HU."""
    from ctbird.phantoms import shepp_logan

    image = shepp_logan(size)[0, 0].numpy()
    return np.stack([-1000.0 + 1000.0 * image * (0.7 + 0.3 * np.cos(np.pi * z / 2))
                     for z in np.linspace(-1.0, 1.0, slices)]).astype(np.float32)


def eval_series(args, count: int) -> tuple[np.ndarray, tuple[float, float], str]:
    """The first ``count`` slices of the reported series: HU ``[S, H, W]``, pixel spacing, label."""
    from ctbird.io.series import read_volume

    if args.synthetic:
        return phantom_stack(count, args.size), (1.0, 1.0), "phantom"
    from ctbird.errors import InputError

    path = args.series or args.data / EVAL_SERIES
    if not path.exists():
        raise InputError(f"{path} not found; pass --data (the shared data root), --series or --synthetic.")
    volume = read_volume(path)
    if volume.n_slices < count:
        raise InputError(f"{path} holds {volume.n_slices} slices; ask for at most that many.")
    label = str(path.relative_to(args.data)) if path.is_relative_to(args.data) else path.name
    return np.asarray(volume.hu[:count], dtype=np.float32), volume.pixel_spacing_mm, label


def train_series(args, count: int) -> tuple[np.ndarray, tuple[float, float], str]:
    """``count`` contiguous slices from the middle of a training patient's series."""
    if args.synthetic:
        return phantom_stack(count, args.size)[::-1].copy(), (1.0, 1.0), "phantom (reversed)"
    from ctbird.errors import InputError

    path = args.data / TRAIN_FILE
    if not path.is_file():
        raise InputError(f"{path} not found; pass --data (the shared data root) or --synthetic.")
    with np.load(path) as archive:
        rows = np.flatnonzero(archive["patient"] == args.train_patient)
        if rows.size < count:
            raise InputError(f"Patient {args.train_patient} has {rows.size} training slices, fewer than {count}.")
        start = rows[rows.size // 2 - count // 2]
        hu = archive["images"][start:start + count].astype(np.float32)
        spacing = float(archive["pixel_spacing_mm"][start])
    return hu, (spacing, spacing), f"{TRAIN_FILE} patient {args.train_patient}, slices {start}..{start + count - 1}"


def method_options(method: str, args, prior) -> dict:
    """``reconstruct_volume`` options: the CLI's CPU preset for BIRD (``--bird-iters`` overriding), defaults else."""
    from ctbird.config import METHOD_CONFIGS, BirdConfig
    from ctbird.methods import get_method

    cls = METHOD_CONFIGS[method]
    config = cls.preset("cpu-fast") if issubclass(cls, BirdConfig) else cls()
    if args.bird_iters is not None and issubclass(cls, BirdConfig):
        config = config.replace(iters=args.bird_iters)
    return {"config": config, **({"prior": prior} if get_method(method).needs_prior else {})}


# ----------------------------------------------------------------------------------------- throughput
def worker(spec_path: Path) -> int:
    """One process of a timed run (under torchrun or alone): rank 0 writes ``{method: seconds}``."""
    import torch

    from ctbird.priors import load_prior
    from ctbird.simulate import simulation_geometry
    from ctbird.volume import distributed_context, reconstruct_volume, shutdown_distributed, simulated_sinograms

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    ctx = distributed_context(args.device)
    hu = np.load(spec["stack"], mmap_mode="r")
    geometry = simulation_geometry("parallel", args.views, args.size)
    sinograms, _ = simulated_sinograms(hu, geometry, image_size=args.size, pixel_spacing_mm=tuple(spec["spacing"]),
                                       dose=args.dose)
    prior = load_prior(args.prior, device=str(ctx.device)) if any(m in spec["prior_methods"] for m in spec["methods"]) \
        else None
    reconstruct_volume(sinograms, geometry, image_size=args.size, work_dir=Path(spec["work"]) / "warm-up", method="fbp",
                       slices=[0], progress=False, device=ctx.device)  # imports and first-call set-up, untimed
    seconds = {}
    for method in spec["methods"]:
        ctx.barrier()
        start = time.perf_counter()
        reconstruct_volume(sinograms, geometry, image_size=args.size, pixel_spacing_mm=spec["pixel_mm"],
                           work_dir=Path(spec["work"]) / method, method=method, batch_size=args.batch_size,
                           progress=False, device=ctx.device, **method_options(method, args, prior))
        seconds[method] = time.perf_counter() - start
    if ctx.is_main:
        Path(spec["result"]).write_text(json.dumps(seconds))
    shutdown_distributed()
    return 0


def time_processes(args, hu: np.ndarray, spacing, scratch: Path) -> list[dict]:
    """Slices per minute of each method for each process count."""
    from ctbird.io import working_pixel_spacing
    from ctbird.methods import get_method

    methods = parse_list(args.methods)
    stack = scratch / "stack.npy"
    np.save(stack, hu)
    rows = []
    for processes in parse_list(args.processes, int):
        threads = max(1, args.threads // processes)
        spec = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "stack": str(stack), "spacing": list(spacing), "threads": threads, "methods": methods,
                "pixel_mm": working_pixel_spacing(spacing, hu.shape[1:], args.size),
                "prior_methods": [m for m in methods if get_method(m).needs_prior],
                "work": str(scratch / f"work{processes}"), "result": str(scratch / f"seconds{processes}.json")}
        spec_path = scratch / f"spec{processes}.json"
        spec_path.write_text(json.dumps(spec))
        launcher = [sys.executable] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        completed = subprocess.run([*launcher, "-m", "benchmarks.volume", "--worker", str(spec_path)], env=env,
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{processes}-process run failed:\n{completed.stderr[-3000:]}")
        seconds = json.loads(Path(spec["result"]).read_text())
        for method in methods:
            rows.append({"method": method, "processes": processes, "threads_per_process": threads,
                         "slices": len(hu), "seconds": seconds[method],
                         "slices_per_minute": 60.0 * len(hu) / seconds[method]})
    return rows


# ----------------------------------------------------------------------------------------- z-TV
def consistency_rows(args, prior, scratch: Path) -> tuple[list[dict], dict]:
    """The z-TV table: weights tuned on the training series per method, the eval series with and without."""
    from ctbird.io import working_pixel_spacing
    from ctbird.simulate import simulation_geometry
    from ctbird.volume import apply_z_tv, reconstruct_volume, simulated_sinograms, slice_consistency

    geometry = simulation_geometry("parallel", args.views, args.size)
    weights = parse_list(args.z_tv_weights, float)
    rows, tuned = [], {}
    for role, (hu, spacing, label) in (("train", train_series(args, args.z_tv_slices)),
                                       ("eval", eval_series(args, args.z_tv_slices))):
        sinograms, truth = simulated_sinograms(hu, geometry, image_size=args.size, pixel_spacing_mm=spacing,
                                               dose=args.dose)
        reference = [truth[i] for i in range(len(hu))]
        for method in parse_list(args.z_tv_methods):
            result = reconstruct_volume(sinograms, geometry, image_size=args.size,
                                        pixel_spacing_mm=working_pixel_spacing(spacing, hu.shape[1:], args.size),
                                        work_dir=scratch / f"z-{role}-{method}", method=method, progress=False,
                                        device=args.device, batch_size=args.batch_size, **method_options(method, args, prior))
            scores = {None: slice_consistency(result.load(refined=False), reference)}
            for weight in (weights if role == "train" else [tuned[method]]):
                apply_z_tv(result, sinograms, geometry, weight=weight, device=args.device)
                scores[weight] = slice_consistency(result.load(), reference)
            if role == "train":
                tuned[method] = max(weights, key=lambda w: scores[w]["coronal_psnr"] + scores[w]["sagittal_psnr"])
            for weight, score in scores.items():
                rows.append({"series": role, "label": label, "method": method, "z_tv_weight": weight, **score})
    return rows, tuned


# ----------------------------------------------------------------------------------------- page
def page(args, record: dict, speed: list[dict], consistency: list[dict], tuned: dict, series_label: str) -> str:
    lines = [f"# Whole volumes: slices per minute and consistency between slices ({args.tag})", ""]
    if args.smoke:
        lines += [SMOKE_NOTE, ""]
    lines += [record_markdown(record), "",
              f"## Slices per minute ({args.slices} slices of `{series_label}`, {args.size}², {args.views} views)", "",
              "Rank 0's wall clock around `reconstruct_volume`, the prior loaded; "
              + (f"{args.threads} torch threads in all, split over the processes (`torchrun --standalone`, gloo)"
                 if args.device == "cpu" else "one GPU per process (`torchrun --standalone`, NCCL)")
              + ". BIRD: the CLI's CPU preset"
              + (f" with {args.bird_iters} iterations." if args.bird_iters else "."), ""]
    lines.append(markdown_table(["method", "processes", "threads each", "seconds", "slices / min"],
                                [[r["method"], r["processes"], r["threads_per_process"], fmt(r["seconds"], digits=1),
                                  fmt(r["slices_per_minute"], digits=1)] for r in speed]))
    lines += ["", f"## Consistency between slices ({args.z_tv_slices} contiguous slices)", "",
              "z-TV weight tuned per method on the training series (best mean of coronal and sagittal PSNR over "
              f"{args.z_tv_weights}): " + ", ".join(f"{m} {w}" for m, w in tuned.items()) + ". PSNR on HU clipped to "
              "[-1000, 1000], at the working size; z-gradient error: RMSE of the slice-to-slice difference (HU).", ""]
    lines.append(markdown_table(
        ["series", "method", "z-TV", "axial PSNR", "coronal PSNR", "sagittal PSNR", "z-gradient RMSE (HU)"],
        [[r["series"], r["method"], "none" if r["z_tv_weight"] is None else r["z_tv_weight"], fmt(r["axial_psnr"]),
          fmt(r["coronal_psnr"]), fmt(r["sagittal_psnr"]), fmt(r["z_gradient_rmse_hu"], digits=1)]
         for r in consistency]))
    labels = sorted({(r["series"], r["label"]) for r in consistency})
    lines += ["", "Series: " + "; ".join(f"{role}: `{label}`" for role, label in labels) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    import torch

    from ctbird.methods import get_method
    from ctbird.priors import load_prior

    torch.set_num_threads(args.threads)
    record = run_record(torch.device(args.device), argv)
    hu, spacing, label = eval_series(args, args.slices)
    with tempfile.TemporaryDirectory(prefix="ctbird-volume-bench-") as scratch:
        speed = time_processes(args, hu, spacing, Path(scratch))
        needs_prior = any(get_method(m).needs_prior for m in parse_list(args.z_tv_methods))
        prior = load_prior(args.prior, device=args.device) if needs_prior else None
        consistency, tuned = consistency_rows(args, prior, Path(scratch))
    payload = {"record": record, "smoke": args.smoke, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                                   for k, v in vars(args).items() if k != "worker"},
               "series": label, "throughput": speed, "consistency": consistency, "z_tv_tuned": tuned}
    json_path, md_path = write_outputs(args.out_dir, args.tag, payload, page(args, record, speed, consistency, tuned,
                                                                             label))
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
