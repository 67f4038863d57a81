"""Pack a GPU-transportable subset of the CT prior training set.

The device machine accepts at most 64 MiB of working tree, and the shared training stack
(``ct256_train_hu.npz``, 1403 slices, 91 MB) does not fit.  This script keeps every second
slice of every series (all patients kept, neighbouring slices are nearly redundant anyway) at
full int16 HU precision and writes ``.gpu/ct_train_subset.npz`` plus, into ``.gpu/wheels/``,
the only wheels the GPU training needs that the device image lacks (diffusers,
importlib_metadata, pydicom).

Usage::

    python scripts/pack_training_subset.py [--source NPZ] [--out .gpu/ct_train_subset.npz]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path("/work/shared/data/ct/train/ct256_train_hu.npz")
WHEEL_PATTERNS = ("diffusers-*.whl", "importlib_metadata-*.whl", "pydicom-*.whl")


def pack(source: Path, out: Path, stride: int = 2) -> dict[str, int]:
    """Write every ``stride``-th slice of ``source`` (and its per-slice metadata) to ``out``."""
    data = np.load(source)
    keep = np.arange(0, data["images"].shape[0], stride)
    arrays = {key: data[key][keep] for key in data.files}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    patients_before = len(np.unique(data["patient"]))
    patients_after = len(np.unique(arrays["patient"]))
    if patients_after != patients_before:
        raise RuntimeError(f"subset lost patients: {patients_before} -> {patients_after}")
    return {"slices": int(keep.size), "patients": patients_after, "bytes": out.stat().st_size}


def copy_wheels(wheel_dir: Path, dest: Path) -> list[Path]:
    """Copy the training-needed wheels from ``wheel_dir`` into ``dest`` (one version each)."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for pattern in WHEEL_PATTERNS:
        matches = sorted(wheel_dir.glob(pattern))
        if len(matches) != 1:
            raise RuntimeError(f"expected exactly one {pattern} in {wheel_dir}, found {len(matches)}")
        target = dest / matches[0].name
        shutil.copy2(matches[0], target)
        copied.append(target)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=REPO / ".gpu" / "ct_train_subset.npz")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--wheels-from", type=Path, default=REPO / ".whl")
    args = parser.parse_args()
    info = pack(args.source, args.out, args.stride)
    print(f"wrote {args.out}: {info['slices']} slices, {info['patients']} patients, "
          f"{info['bytes'] / 2**20:.1f} MiB")
    wheels = copy_wheels(args.wheels_from, args.out.parent / "wheels")
    total = sum(p.stat().st_size for p in args.out.parent.rglob("*") if p.is_file())
    print(f"wheels: {', '.join(p.name for p in wheels)}; {args.out.parent} total {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
