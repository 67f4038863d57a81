"""Pack a GPU-transportable subset of the CT prior training set.

The device machine accepts at most 64 MiB of working tree, and the shared training stack
(``ct256_train_hu.npz``, 1403 slices, 91 MB) does not fit.  This script keeps every second
slice of every series (all patients kept, neighbouring slices are nearly redundant anyway) at
full int16 HU precision and writes ``.gpu/ct_train_subset.npz`` plus, into ``.gpu/wheels/``,
the only wheels the GPU training needs that the device image lacks (diffusers,
importlib_metadata, pydicom).

The wheels come from ``--wheels-from`` (default ``.whl/``), fetched on a machine with a package index by
``python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl
diffusers==0.42.1 importlib_metadata==10.2.0 pydicom==3.0.2``.

Everything that travels (the tracked working tree, which includes the shipped prior, plus ``.gpu/``) must
stay under 64 MiB: the script prints the total and fails above it. ``--stride 3 --offset 1`` keeps a third
of the slices, the ones the shipped prior (``--stride 2 --offset 0``) saw least, for a continuation run.

``--eval-slices K`` also writes ``.gpu/ct_eval_subset.npz``: an evenly spread subset of K evaluation slices
of ``../shared/data/ct/eval`` at 256² (a :mod:`ctbird.stacks` file with ``labels`` and ``pixel_spacing_mm``, from
``benchmarks.common.slice_stack``), which ``python -m benchmarks.ct --data`` reads on the GPU machine (the native DICOM files are too large to travel). ``--no-wheels`` skips the wheels when
the device run installs them from a carried ``.whl/`` instead.

Usage (repository root)::

    python -m benchmarks.gpu.pack [--source NPZ] [--out .gpu/ct_train_subset.npz] [--stride N] [--offset K]
                                  [--eval-slices K] [--no-wheels]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, SHARED_DATA, load_ct_slices, run_script, slice_stack
from ctbird.errors import InputError
from ctbird.stacks import read_slice_stack, write_slice_stack

DEFAULT_SOURCE = SHARED_DATA / "ct" / "train" / "ct256_train_hu.npz"
TRANSPORT_LIMIT = 64 * 2**20
WHEEL_PATTERNS = ("diffusers-*.whl", "importlib_metadata-*.whl", "pydicom-*.whl")


def pack(source: Path, out: Path, stride: int = 2, offset: int = 0) -> dict[str, int]:
    """Write every ``stride``-th slice of ``source``, starting at ``offset`` (and its metadata) to ``out``."""
    stack = read_slice_stack(source)
    if stack.patient is None:
        raise InputError(f"{source} has no 'patient' array: cannot check that the subset keeps every patient.")
    keep = np.arange(offset, len(stack), stride)
    description = (f"Slices {offset}, {offset + stride}, {offset + 2 * stride}, ... of {source.name} ({len(stack)} "
                   f"slices), made by python -m benchmarks.gpu.pack --stride {stride} --offset {offset}")
    subset = dataclasses.replace(stack.subset(keep), description=description)
    patients_before, patients_after = len(np.unique(stack.patient)), len(np.unique(subset.patient))
    if patients_after != patients_before:
        raise InputError(f"subset lost patients: {patients_before} -> {patients_after}; use a smaller --stride.")
    size = write_slice_stack(out, subset)
    return {"slices": int(keep.size), "patients": patients_after, "bytes": size}


def copy_wheels(wheel_dir: Path, dest: Path) -> list[Path]:
    """Copy the training-needed wheels from ``wheel_dir`` into ``dest`` (one version each)."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for pattern in WHEEL_PATTERNS:
        matches = sorted(wheel_dir.glob(pattern))
        if len(matches) != 1:
            raise InputError(f"expected exactly one {pattern} in {wheel_dir}, found {len(matches)} (or pass --no-wheels).")
        target = dest / matches[0].name
        shutil.copy2(matches[0], target)
        copied.append(target)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu" / "ct_train_subset.npz")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--wheels-from", type=Path, default=REPO_ROOT / ".whl")
    parser.add_argument("--no-wheels", action="store_true", help="do not copy wheels into .gpu/wheels")
    parser.add_argument("--eval-slices", type=int, default=0, help="also pack this many evaluation slices (256²)")
    args = parser.parse_args()
    if not 0 <= args.offset < args.stride:
        parser.error(f"--offset must be in [0, --stride), got {args.offset} with stride {args.stride}.")
    if not args.source.is_file():
        parser.error(f"training stack not found: {args.source} (pass --source).")
    info = pack(args.source, args.out, args.stride, args.offset)
    print(f"wrote {args.out}: {info['slices']} slices, {info['patients']} patients, "
          f"{info['bytes'] / 2**20:.1f} MiB")
    if args.eval_slices > 0:
        eval_out = args.out.parent / "ct_eval_subset.npz"
        slices = load_ct_slices(SHARED_DATA / "ct" / "eval", args.eval_slices, 256, synthetic=False)
        size = write_slice_stack(eval_out, slice_stack(slices, f"{len(slices)} evaluation slices of ../shared/data/ct/eval "
                                                               "at 256², made by python -m benchmarks.gpu.pack"))
        print(f"wrote {eval_out}: {args.eval_slices} evaluation slices, {size / 2**20:.1f} MiB")
    if args.no_wheels:
        shutil.rmtree(args.out.parent / "wheels", ignore_errors=True)
    else:
        wheels = copy_wheels(args.wheels_from, args.out.parent / "wheels")
        print(f"wheels: {', '.join(p.name for p in wheels)}")
    carried = [args.out.parent] + ([args.wheels_from] if args.no_wheels else [])
    total = sum(p.stat().st_size for folder in carried for p in folder.rglob("*") if p.is_file())
    print(f"{' + '.join(str(folder) for folder in carried)}: {total / 2**20:.1f} MiB")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    tree = sum((REPO_ROOT / name).stat().st_size for name in tracked.decode().split("\0") if name and (REPO_ROOT / name).is_file())
    print(f"travels: {(tree + total) / 2**20:.1f} MiB (tracked tree {tree / 2**20:.1f} MiB + carried folders)")
    if tree + total > TRANSPORT_LIMIT:
        raise InputError("over the 64 MiB transport limit: use a larger --stride (e.g. --stride 3).")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
