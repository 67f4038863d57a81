"""Limits checked before any work: hard caps, memory and disk estimates, devices, plausible doses.

Call order (CLI and API): :func:`validate_device` -> :func:`check_sizes` -> :func:`estimate_run` ->
:func:`check_run_fits`. Each refusal is one :class:`ctbird.errors.ConfigError` (or ``OutputError`` for
the disk) line that says what to change. The caps exist so that absurd requests (``--views 100000``, a
20000-view sinogram, a 20000² image) end in a ctbird error instead of ``std::bad_alloc`` or NumPy's
``ArrayMemoryError``; the estimate refuses what is within the caps but cannot fit in this machine.

Estimates are deliberately simple upper-bound-style sums (documented per term in
:class:`RunEstimate.parts`); they are not a profiler.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, OutputError

#: Hard caps (far above any clinical or micro-CT scan: 2-4k views, 1-4k detectors, 512-2048² slices).
MAX_VIEWS = 10_000
MAX_DETECTORS = 16_384
MAX_IMAGE_SIZE = 4_096
MAX_SLICES = 20_000
MAX_BATCH = 1_024
#: Non-zeros of the exact system matrix per (view, detector, image side): measured with ASTRA's
#: 'linear' parallel projector (1.26; the fan 'line_fanflat' one is 0.57), rounded up.
MATRIX_NNZ_PER_RAY_PER_SIDE = 1.3
#: Bytes per non-zero: float32 value + int32 column index, held by scipy and by torch (x2), and a
#: transient third copy while ASTRA's matrix is converted (x3 at peak).
MATRIX_BYTES_PER_NNZ_PEAK = 24
#: Activation memory of one diffusion-prior pass with gradients, per working-image pixel (a 256² UNet
#: with 64 base channels keeps roughly 40 float32 feature maps of 64 channels alive for backprop).
PRIOR_BYTES_PER_PIXEL = 12 * 1024
PRIOR_METHODS = ("bird", "bird-raw", "dps", "dds")
#: Fraction of the available memory a run may plan to use.
HEADROOM = 0.85
#: Photon counts per detector element below which nearly every reading is 0 or 1 photon.
LOW_DOSE_I0 = 100.0
HIGH_DOSE_I0 = 1e9

_GIB = 1024 ** 3


def _fmt(nbytes: float) -> str:
    for unit, size in (("TiB", 1024 ** 4), ("GiB", _GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def validate_device(device) -> "torch.device":  # noqa: F821 - torch imported lazily
    """``None``/``"auto"`` -> CUDA when available else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` checked.

    Raises
    ------
    ConfigError
        Unknown or unsupported device types (``"mps"``, ``"meta"``, ``"tpu"``...), CUDA requested but not
        available, a CUDA index that does not exist.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'.") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"Device {device!r} is not supported (ctbird's operators run on CPU and CUDA); "
                          "use 'cpu', 'cuda', 'cuda:N' or 'auto'.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) exist "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    return dev


def _check_int(name: str, value, maximum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if value > maximum:
        raise ConfigError(f"{name} = {value} is above ctbird's limit of {maximum}; {hint}.")
    return value


def check_sizes(*, views: int | None = None, detectors: int | None = None, image_size: int | None = None,
                slices: int = 1, batch: int = 1) -> None:
    """Refuse sizes beyond the hard caps (:data:`MAX_VIEWS`...) with one line naming the option to change."""
    if views is not None:
        _check_int("views", views, MAX_VIEWS, "use fewer views (--views) or subsample the sinogram's angles")
    if detectors is not None:
        _check_int("detectors", detectors, MAX_DETECTORS, "bin the detector (sum neighbouring columns)")
    if image_size is not None:
        _check_int("image_size", image_size, MAX_IMAGE_SIZE, "reconstruct a smaller image (image_size)")
    _check_int("slices", slices, MAX_SLICES, "process the volume in parts (--slices)")
    _check_int("batch", batch, MAX_BATCH, "use a smaller batch")


@dataclass(frozen=True)
class RunEstimate:
    """Planned peak memory and output size of a run, in bytes, with the terms that make them up."""

    memory_bytes: int
    disk_bytes: int
    parts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        terms = ", ".join(f"{name} {_fmt(size)}" for name, size in sorted(self.parts.items(), key=lambda kv: -kv[1]))
        return f"about {_fmt(self.memory_bytes)} of memory ({terms}) and {_fmt(self.disk_bytes)} of disk"


def estimate_run(*, views: int, detectors: int, image_size: int, method: str = "fbp", batch: int = 1,
                 slices: int = 1, backend: str = "matrix", prior_size: int | None = None,
                 outputs_per_slice: int = 4) -> RunEstimate:
    """Estimate the peak memory and disk use of reconstructing ``slices`` slices.

    Parameters
    ----------
    views, detectors, image_size : int
        Sinogram ``[views, detectors]`` and reconstruction ``image_size x image_size``.
    method : str
        A ``ctbird.api.CT_METHODS`` name; the prior methods (:data:`PRIOR_METHODS`) add UNet activations.
    batch : int
        Slices (or samples) processed together.
    slices : int
        Slices of the run (memory holds the volume and its sinograms; disk holds every output).
    backend : str
        Radon backend; ``"matrix"`` adds the sparse system matrix (:data:`MATRIX_NNZ_PER_RAY_PER_SIDE`).
    prior_size : int, optional
        Working size of the prior (default: ``image_size``).
    outputs_per_slice : int
        Files written per slice and method (NPY float32, PNG, DICOM int16, uncertainty...).
    """
    check_sizes(views=views, detectors=detectors, image_size=image_size, slices=slices, batch=batch)
    f32 = 4
    pixels = image_size * image_size
    parts = {
        "volume and sinograms": slices * (pixels + views * detectors) * f32 * 2,
        "working arrays": batch * (4 * pixels + 3 * views * detectors) * f32,
    }
    if backend == "matrix":
        nnz = MATRIX_NNZ_PER_RAY_PER_SIDE * views * detectors * image_size
        parts["system matrix"] = int(nnz * MATRIX_BYTES_PER_NNZ_PEAK)
    if method in PRIOR_METHODS:
        side = prior_size or image_size
        parts["prior activations"] = batch * side * side * PRIOR_BYTES_PER_PIXEL
    disk = slices * (outputs_per_slice * pixels * f32 + views * detectors * f32) + 1024 * 1024
    return RunEstimate(memory_bytes=int(sum(parts.values())), disk_bytes=int(disk), parts={k: int(v) for k, v in parts.items()})


def available_memory_bytes() -> int | None:
    """Memory the run may still take: ``MemAvailable`` of /proc/meminfo (cgroup limit if lower), else sysconf."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                continue
            room = int(limit_text) - int(Path(usage_file).read_text().strip())
            if 0 < room < available:
                available = room
            break
        except (OSError, ValueError):
            continue
    return available


def available_device_memory_bytes(device) -> int | None:
    """Free memory of a CUDA device (``torch.cuda.mem_get_info``); ``None`` for the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def free_disk_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that will hold ``path`` (its first existing ancestor)."""
    probe = Path(path).expanduser().resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(shutil.disk_usage(probe).free)
    except OSError:
        return None


def check_run_fits(estimate: RunEstimate, *, device="cpu", out: str | os.PathLike | None = None,
                   available_bytes: int | None = None) -> None:
    """Refuse a run whose estimate exceeds :data:`HEADROOM` of the free memory (device or host) or disk.

    ``available_bytes`` overrides the measured free memory (tests, or a scheduler's allocation).

    Raises
    ------
    ConfigError
        Not enough memory: the message gives the estimate's largest terms and what to reduce.
    OutputError
        Not enough free disk for the outputs under ``out``.
    """
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if available_bytes is None:
        available_bytes = available_device_memory_bytes(dev) if dev.type == "cuda" else available_memory_bytes()
    where = f"free on {dev}" if dev.type == "cuda" else "available"
    if available_bytes is not None and estimate.memory_bytes > HEADROOM * available_bytes:
        largest = max(estimate.parts, key=estimate.parts.get)
        advice = {
            "system matrix": "use fewer views or detectors, a smaller image_size, or the 'astra'/'torch' Radon backend",
            "prior activations": "use a smaller batch",
            "volume and sinograms": "process fewer slices at a time (--slices)",
            "working arrays": "use a smaller batch or image_size",
        }[largest]
        raise ConfigError(f"This run needs {estimate.describe()}, but only {_fmt(available_bytes)} is {where}; "
                          f"{advice}.")
    if out is not None:
        free = free_disk_bytes(out)
        if free is not None and estimate.disk_bytes > free:
            raise OutputError(f"The outputs need about {_fmt(estimate.disk_bytes)} but only {_fmt(free)} is free "
                              f"on the disk holding {out}; free some space or choose another --out.")


def check_dose(i0: float | None) -> list[str]:
    """Warnings for an implausible photon count per detector element (``--dose`` I0); errors if not positive/finite."""
    if i0 is None:
        return []
    if isinstance(i0, bool) or not isinstance(i0, (int, float)) or not math.isfinite(i0) or i0 <= 0:
        raise ConfigError(f"dose (I0, photons per detector element) must be a positive finite number, got {i0!r}.")
    if i0 < LOW_DOSE_I0:
        return [f"dose I0 = {i0:g} photons per detector element is extremely low (clinical CT: 1e4-1e6); "
                "nearly every reading is 0 or 1 photon and the sinogram is mostly noise."]
    if i0 > HIGH_DOSE_I0:
        return [f"dose I0 = {i0:g} photons per detector element is far above any scanner (1e4-1e6); "
                "the noise is negligible - omit --dose for a noise-free simulation."]
    return []
