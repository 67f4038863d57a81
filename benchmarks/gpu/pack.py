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

``--parts K --hu-step Q`` packs the *whole* stack instead, for a session that brings it over in K calls: HU are
rounded to multiples of Q (Q = 2: at most 1 HU off, far below the 20 HU of noise the prior sees at its smallest
diffusion step) and each part, an ``.npz`` inside an xz stream, is written to ``.gpu/train_part{k}.npz.xz``. On the
GPU machine ``python -m benchmarks.gpu.pack --unpack PART... --out-dir DIR`` turns them back into ordinary
:mod:`ctbird.stacks` files, one per part, which ``ctbird train-prior`` reads together.

``--eval-slices K`` also writes ``.gpu/ct_eval_subset.npz``: an evenly spread subset of K evaluation slices
of ``../shared/data/ct/eval`` at 256² (a :mod:`ctbird.stacks` file with ``labels`` and ``pixel_spacing_mm``, from
``benchmarks.common.slice_stack``), which ``python -m benchmarks.ct --data`` reads on the GPU machine (the native DICOM files are too large to travel). ``--no-wheels`` skips the wheels when
the device run installs them from a carried ``.whl/`` instead.

Usage (repository root)::

    python -m benchmarks.gpu.pack [--source NPZ] [--out .gpu/ct_train_subset.npz] [--stride N] [--offset K]
                                  [--parts K --hu-step Q] [--eval-slices K] [--no-wheels]
    python -m benchmarks.gpu.pack --unpack .gpu/train_part1.npz.xz [...] --out-dir /tmp/ctdata
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, SHARED_DATA, load_ct_slices, run_script, slice_stack
from ctbird.errors import InputError
from ctbird.stacks import PER_SLICE_KEYS, SliceStack, read_slice_stack, write_slice_stack

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


def pack_parts(source: Path, out_dir: Path, parts: int, hu_step: int) -> list[tuple[Path, int]]:
    """Split the whole ``source`` stack into ``parts`` interleaved parts (slices k, k + parts, ...), HU rounded to
    multiples of ``hu_step``, each an ``.npz`` in an xz stream ``out_dir/train_part{k}.npz.xz``.

    Returns (path, size in bytes) of each part."""
    stack = read_slice_stack(source)
    if parts < 1 or hu_step < 1:
        raise InputError(f"--parts and --hu-step must be >= 1, got {parts} and {hu_step}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(parts):
        part = stack.subset(np.arange(k, len(stack), parts))
        steps = np.round(np.asarray(part.images, dtype=np.float64) / hu_step).astype(np.int16)
        description = (f"Slices {k}, {k + parts}, {k + 2 * parts}, ... of {source.name} ({len(stack)} slices; "
                       f"{parts} parts together are the whole stack), HU rounded to multiples of {hu_step} for "
                       f"transport, made by python -m benchmarks.gpu.pack --parts {parts} --hu-step {hu_step}")
        buffer = io.BytesIO()
        np.savez(buffer, images_in_steps=steps, hu_step=np.int16(hu_step), description=np.array(description),
                 **{key: np.asarray(value) for key in PER_SLICE_KEYS if (value := getattr(part, key)) is not None})
        path = out_dir / f"train_part{k + 1}.npz.xz"
        path.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
        written.append((path, path.stat().st_size))
    return written


def unpack_part(path: Path, out_dir: Path) -> tuple[Path, int]:
    """Turn one ``train_part{k}.npz.xz`` of :func:`pack_parts` back into a :mod:`ctbird.stacks` file in ``out_dir``.

    Returns (the stack file, its slice count)."""
    if not path.is_file():
        raise InputError(f"training part {path} not found: make it with --parts and carry it to this machine.")
    with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as arrays:
        images = arrays["images_in_steps"].astype(np.int16) * np.int16(arrays["hu_step"])
        stack = SliceStack(images=images, description=str(arrays["description"]),
                           **{key: arrays[key] for key in PER_SLICE_KEYS if key in arrays.files})
    target = out_dir / path.name.removesuffix(".xz")
    write_slice_stack(target, stack)
    return target, len(stack)


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
    parser.add_argument("--parts", type=int, default=0,
                        help="pack the whole stack in this many parts (.gpu/train_part{k}.npz.xz) instead of a subset")
    parser.add_argument("--hu-step", type=int, default=1, help="with --parts: round HU to multiples of this")
    parser.add_argument("--unpack", type=Path, nargs="+", default=None, metavar="PART",
                        help="turn parts made by --parts back into stack files in --out-dir, and stop")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/ctdata"), help="with --unpack: where to write")
    parser.add_argument("--eval-slices", type=int, default=0, help="also pack this many evaluation slices (256²)")
    args = parser.parse_args()
    if args.unpack:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for part in args.unpack:
            target, slices = unpack_part(part, args.out_dir)
            print(f"unpacked {part} -> {target}: {slices} slices")
        return 0
    if not 0 <= args.offset < args.stride:
        parser.error(f"--offset must be in [0, --stride), got {args.offset} with stride {args.stride}.")
    if not args.source.is_file():
        parser.error(f"training stack not found: {args.source} (pass --source).")
    if args.parts:
        args.out.unlink(missing_ok=True)  # a subset from an earlier pack would travel too
        for path, size in pack_parts(args.source, args.out.parent, args.parts, args.hu_step):
            print(f"wrote {path}: {size / 2**20:.1f} MiB")
    else:
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
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    tree = sum((REPO_ROOT / name).stat().st_size for name in tracked.decode().split("\0") if name and (REPO_ROOT / name).is_file())
    carried = [args.out.parent] + ([args.wheels_from] if args.no_wheels else [])
    files = [p for folder in carried for p in folder.rglob("*") if p.is_file()]
    parts = [p for p in files if p.name.startswith("train_part")]
    if parts:  # a session carries one part per call, beside the tree and the few wheels that call needs
        total = tree + max(p.stat().st_size for p in parts)
        what = "the largest train part; each call adds the wheels it carries"
    else:
        total = tree + sum(p.stat().st_size for p in files)
        what = " + ".join(map(str, carried))
    print(f"travels: {total / 2**20:.1f} MiB (tracked tree {tree / 2**20:.1f} MiB + {what})")
    if total > TRANSPORT_LIMIT:
        raise InputError("over the 64 MiB transport limit: use a larger --stride or more --parts.")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
