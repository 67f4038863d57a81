"""Whole volumes: slice-by-slice reconstruction in batches, resumable, sharded over torch.distributed processes.

:func:`reconstruct_volume` reconstructs the selected slices of a sinogram stack through :func:`ctbird.reconstruct`
and keeps every finished slice in a work folder (``slice_00012.npy`` in HU plus ``slice_00012.json`` with its
seed, settings key, input checksum and metrics, each written atomically, the JSON last). With ``resume=True`` the
finished slices whose recorded settings match are skipped; a mismatch is an error naming the differing settings.
Memory is bounded by one batch: sinograms are read slice by slice (a memory-mapped array or a :class:`SliceMap`
streams), results go to the work folder, and :class:`VolumeResult` reads them back one slice at a time.

Determinism: slices are cut into batches of ``batch_size`` consecutive selected slices, the same batches whatever
the number of processes; batch ``k`` runs on rank ``k % world_size``. Prior-based methods draw slice ``i``'s
latent from ``seed + i`` (``i`` the slice's index in the whole volume), so a result depends neither on the batch
nor on the number of processes (``ctbird.reconstruct(seed=[...])``: one generator per batch item). A batch is only
ever computed whole (resuming redoes a partly finished batch), so a result is also bitwise the same whatever the
number of processes or interruptions; only a different ``batch_size`` changes the floating-point reduction order
of the batched UNet calls (about 1e-5 on the prior's scale).

Scale-out: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) or with ``torch.distributed`` already
initialised, each rank reconstructs its batches (gloo on CPU, NCCL on CUDA with ``device = cuda:LOCAL_RANK``)
into the shared work folder, all ranks meet at a barrier, and rank 0 writes the final outputs
(:func:`write_volume_outputs`, through a staging folder renamed at the end, so an interrupted run leaves no
half-written output).

Consistency between slices: :func:`refine_z_tv` is a data-consistency step with total variation along z
(as DiffusionMBIR's), and :func:`slice_consistency` measures axial/coronal/sagittal PSNR and the z-gradient error.

``ctbird reconstruct --slices`` (:mod:`ctbird.cli_volume`) drives it from the command line, also under ``torchrun``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, InputError, OutputError
from .io.atomic import atomic_file, atomic_output_dir, write_text_atomic
from .io.deid import Deidentifier
from .metrics import score_ct
from .io.series import VolumeInput, parse_slices, slice_headers, write_derived_series, write_volume_npy
from .units import EVAL_HU_RANGE, clip_hu, hu_to_mu, mu_to_hu

#: Methods whose result depends on a random start (latents, DPS and DDS noise).
RANDOM_METHODS = ("bird", "bird-raw", "dps", "dds")
#: Upper bound of the automatic batch size.
MAX_AUTO_BATCH = 64
SETTINGS_FILE = "settings.json"
#: Default z-TV weight of :func:`refine_z_tv` (measured on a noisy 8-slice phantom stack: tests/test_volume.py).
Z_TV_WEIGHT = 0.03
#: Default anchor weight of :func:`refine_z_tv` (relative to ``||A||^2``, as :func:`ctbird.solvers.refine_data_consistency`'s).
Z_TV_ANCHOR = 0.002
Z_TV_FOLDER = "z_tv"


# --------------------------------------------------------------------------- lazy slices
class SliceMap(Sequence):
    """``fn(source[i])`` computed on access: a lazy, read-only per-slice view (e.g. simulated sinograms)."""

    def __init__(self, source: Sequence, fn: Callable[[Any], Any]) -> None:
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        if not isinstance(index, (int, np.integer)):
            raise TypeError("SliceMap takes integer indices.")
        return self.fn(self.source[int(index)])


def simulated_sinograms(hu: Sequence, geometry, *, image_size: int,
                        pixel_spacing_mm: float | tuple[float, float] = 1.0, dose: float | None = None,
                        seed: int = 0) -> tuple[SliceMap, SliceMap]:
    """Lazy simulated sinograms of an HU stack and the matching ground truth at the working size.

    Slice ``i`` is :func:`ctbird.simulate.simulate` of ``hu[i]`` (clipped to the prior window, brought to
    ``image_size``, projected; log-Poisson noise at ``dose`` seeded with ``seed + i``, so a slice's noise does not
    depend on the selection or the number of processes).

    Parameters
    ----------
    hu : sequence ``[S]`` of ``[H, W]`` HU
    geometry : operators.ParallelBeam or operators.FanBeam
        Resolved for ``image_size`` (pixel units).
    pixel_spacing_mm : float or (row, col)
        Spacing of the input slices; the working grid's is
        :func:`ctbird.io.working_pixel_spacing` ``(pixel_spacing_mm, hu[i].shape, image_size)``.

    Returns
    -------
    (sinograms, truth)
        ``sinograms[i]``: float32 ``[views, detectors]`` tensor; ``truth[i]``: float32 ``[N, N]`` HU.
    """
    from .io import to_working_size
    from .simulate import simulate

    def acquire(i: int) -> torch.Tensor:
        return simulate(np.asarray(hu[i]), image_size=image_size, pixel_spacing_mm=pixel_spacing_mm, geometry=geometry,
                        dose=dose, seed=seed + i).sinogram[0, 0]

    truth = SliceMap(hu, lambda image: to_working_size(clip_hu(np.asarray(image, dtype=np.float32)), image_size))
    return SliceMap(range(len(hu)), acquire), truth


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True when ``ok`` holds on every rank (so all ranks fail together instead of hanging at a barrier)."""
        if self.world_size == 1:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([0 if ok else 1], device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(flag)
        return int(flag.item()) == 0


#: How long ranks wait for each other at a barrier (a slow rank may still be reconstructing its last batch).
DISTRIBUTED_TIMEOUT = datetime.timedelta(hours=12)


def distributed_context(device: str | torch.device = "auto") -> DistributedContext:
    """The process group to shard over, initialising it from torchrun's environment when needed.

    * ``torch.distributed`` already initialised: its rank and world size.
    * ``WORLD_SIZE > 1`` with ``RANK`` in the environment (``torchrun``): ``init_process_group`` with NCCL when the
      device is CUDA (``cuda:LOCAL_RANK``), gloo otherwise, rendezvous from ``MASTER_ADDR``/``MASTER_PORT``.
    * otherwise: one process.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (single process only).
    """
    import torch.distributed as dist

    from .api import resolve_device

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    sharded = dist.is_available() and (dist.is_initialized() or (world_env > 1 and "RANK" in os.environ))
    dev = resolve_device(device)
    if not sharded:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=DISTRIBUTED_TIMEOUT)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              device=dev, backend=dist.get_backend())


def shutdown_distributed() -> None:
    """Destroy the default process group if one is initialised (call once at the end of a torchrun script)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- batch size
def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free bytes, else the host's available physical memory (2 GiB if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def auto_batch_size(image_size: int, views: int, detectors: int, *, method: str, device: torch.device,
                    n_samples: int = 1, prior_size: int | None = None) -> int:
    """Slices per batch: a quarter of the free memory over an estimate of one slice's working set.

    The estimate counts float32 values: a classical method holds about 16 images ``N x N`` and 8 sinograms;
    a prior-based one about 2000 images at the prior's size per restart (the UNet's activations kept for the
    backward pass through the DDIM chain). Clamped to ``1..MAX_AUTO_BATCH``. It is a rough, safe-side guide:
    pass ``batch_size`` to override it.
    """
    if method in RANDOM_METHODS:
        per_slice = 2000 * (prior_size or image_size) ** 2 * max(1, n_samples) + 8 * views * detectors
    else:
        per_slice = 16 * image_size ** 2 + 8 * views * detectors
    budget = available_memory_bytes(device) // 4
    return int(min(MAX_AUTO_BATCH, max(1, budget // (4 * per_slice))))


# --------------------------------------------------------------------------- settings records
def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _tensor_digest(array) -> str:
    value = array.detach().cpu().contiguous().numpy() if isinstance(array, torch.Tensor) else np.ascontiguousarray(array)
    return _digest(value.tobytes() + str(value.shape).encode() + str(value.dtype).encode())


def _recordable(value: Any) -> Any:
    """A JSON-able stand-in for a setting (priors and tensors by content digest)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_recordable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _recordable(v) for k, v in value.items()}
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return {"sha1": _tensor_digest(value)}
    if isinstance(value, torch.nn.Module):
        digest = hashlib.sha1()
        for name, tensor in value.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"module": type(value).__name__, "sha1": digest.hexdigest()[:16]}
    if hasattr(value, "to_dict"):
        return _recordable(value.to_dict())
    raise ConfigError(f"Cannot record the setting {value!r} ({type(value).__name__}) for resuming.")


def _settings_key(settings: dict) -> str:
    return _digest(json.dumps(settings, sort_keys=True).encode())


def _slice_stem(index: int) -> str:
    return f"slice_{index:05d}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


# --------------------------------------------------------------------------- results
@dataclass
class VolumeResult:
    """A reconstructed volume, kept slice by slice in ``work_dir``.

    Attributes
    ----------
    method : str
    indices : list of int
        Reconstructed slices (indices in the input volume), in slice order.
    work_dir : Path
    image_size : int
        Side ``N`` of each ``[N, N]`` HU slice.
    pixel_spacing_mm : float
    settings : dict
        What the slices were reconstructed with (recorded in ``settings.json``).
    slices_run, slices_skipped : int
        Slices reconstructed / found finished (``resume``) by this process.
    seconds : float
        Wall-clock time of this process's :func:`reconstruct_volume` call.
    rank, world_size : int
    z_tv : dict or None
        Settings of the :func:`refine_z_tv` step when it was applied (then :meth:`slice` returns refined slices).
    """

    method: str
    indices: list[int]
    work_dir: Path
    image_size: int
    pixel_spacing_mm: float
    settings: dict
    slices_run: int = 0
    slices_skipped: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    z_tv: dict | None = None
    _records: list[dict] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.slice(k)

    def slice(self, k: int, *, refined: bool = True) -> np.ndarray:
        """The ``k``-th reconstructed slice ``[N, N]`` float32 HU (z-TV refined when applied and ``refined``)."""
        stem = _slice_stem(self.indices[k]) + ".npy"
        folder = self.work_dir / Z_TV_FOLDER if (self.z_tv is not None and refined) else self.work_dir
        return np.load(folder / stem)

    def load(self, *, refined: bool = True) -> np.ndarray:
        """The whole volume ``[S, N, N]`` float32 HU in memory."""
        return np.stack([self.slice(k, refined=refined) for k in range(len(self))])

    def uncertainty(self, k: int) -> np.ndarray | None:
        """Per-pixel std ``[N, N]`` in HU across restarts (``n_samples > 1``), else None."""
        path = self.work_dir / (_slice_stem(self.indices[k]) + "_std.npy")
        return np.load(path) if path.is_file() else None

    def records(self) -> list[dict]:
        """Per-slice records (index, seed, seconds, nfe, metrics...), in slice order."""
        if self._records is None:
            self._records = [_read_json(self.work_dir / (_slice_stem(i) + ".json")) or {} for i in self.indices]
        return self._records

    def metrics(self) -> dict:
        """``{"slices": [per-slice records], "mean": {metric: mean over slices}}`` (plus ``z_tv`` when applied)."""
        records = self.records()
        keys = sorted({k for r in records for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))})
        mean = {k: float(np.mean([r["metrics"][k] for r in records if k in (r.get("metrics") or {})])) for k in keys}
        summary = {"method": self.method, "slices": records, "mean": mean,
                   "seconds_per_slice": float(np.mean([r.get("seconds", 0.0) for r in records])) if records else None}
        if self.z_tv is not None:
            summary["z_tv"] = self.z_tv
        return summary


# --------------------------------------------------------------------------- reconstruction
def _prepare_work_dir(work: Path, settings: dict, resume: bool, ctx: DistributedContext) -> None:
    """Check (all ranks) and record (rank 0) the run's settings."""
    record_path = work / SETTINGS_FILE
    error: str | None = None
    previous = _read_json(record_path) if record_path.is_file() else None
    if record_path.is_file() and previous is None:
        error = f"{record_path} is unreadable; empty the work folder {work} or choose another."
    elif previous is not None and not resume:
        error = (f"The work folder {work} holds an earlier run; pass resume=True (--resume) to continue it, "
                 "or choose an empty work folder.")
    elif previous is not None:
        old = previous.get("settings", {})
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            error = (f"Cannot resume from {work}: its run used different settings ({', '.join(changed)}); "
                     "use the same settings or another work folder.")
    if not ctx.all_ok(error is None):
        raise ConfigError(error or f"Another process refused the work folder {work}.")
    ctx.barrier()  # every rank has looked before rank 0 writes
    if ctx.is_main and previous is None:
        work.mkdir(parents=True, exist_ok=True)
        write_text_atomic(record_path, json.dumps({"settings": settings, "key": _settings_key(settings)}, indent=2) + "\n")
    ctx.barrier()


def _finished(work: Path, index: int, key: str, sinogram_sha1: str) -> bool:
    record = _read_json(work / (_slice_stem(index) + ".json"))
    if record is None or not (work / (_slice_stem(index) + ".npy")).is_file():
        return False
    if record.get("settings_key") != key or record.get("sinogram_sha1") != sinogram_sha1:
        raise ConfigError(f"{work}: slice {index} was reconstructed from other settings or another input; "
                          "use another work folder.")
    return True


def _as_sinogram(value, views: int, detectors: int, index: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value),
                             dtype=torch.float32)
    if tuple(tensor.shape) != (views, detectors):
        raise InputError(f"Slice {index}'s sinogram has shape {list(tensor.shape)}; the geometry needs "
                         f"[{views}, {detectors}].")
    return tensor


def reconstruct_volume(sinograms: Sequence, geometry, *, image_size: int, work_dir: str | os.PathLike,
                       method: str = "bird", slices: str | Sequence[int] | None = None,
                       pixel_spacing_mm: float | None = None, seed: int = 0, batch_size: int | None = None,
                       resume: bool = False, truth: Sequence | None = None,
                       progress: bool | Callable[[dict], None] = True, device: str | torch.device = "auto",
                       z_tv: float | None = None, z_tv_iters: int = 50, **options: Any) -> VolumeResult:
    """Reconstruct the selected slices of a sinogram stack, in batches, resumably, over all ranks.

    Parameters
    ----------
    sinograms : sequence ``[S]`` of ``[views, detectors]``
        Line integrals per slice, as for :func:`ctbird.reconstruct` (an array ``[S, V, D]``, a memory map, or a
        lazy :class:`SliceMap`; read one slice at a time).
    geometry, image_size, pixel_spacing_mm
        As for :func:`ctbird.reconstruct`.
    work_dir : path
        Folder keeping every finished slice (shared by all ranks). Reusing it needs ``resume=True``.
    method : str
        One of :data:`ctbird.api.CT_METHODS`.
    slices : "all", "START:STOP", "i,j,k", sequence of int or None
        Selection (:func:`ctbird.io.series.parse_slices`); ``None`` = all.
    seed : int
        Slice ``i`` (index in the whole stack) is seeded with ``seed + i``.
    batch_size : int or None
        Slices per :func:`ctbird.reconstruct` call; ``None`` = the recorded one when resuming, else
        :func:`auto_batch_size`. Batches are the same for any number of processes; each is one
        :func:`ctbird.reconstruct` call.
    resume : bool
        Continue the run recorded in ``work_dir``; its settings must match. Finished batches are skipped, a batch
        with any unfinished slice is computed again whole (so the volume equals an uninterrupted run's bitwise).
    truth : sequence ``[S]`` of ``[N, N]`` HU or None
        Ground truth at the working size (simulations): per-slice PSNR/SSIM/RMSE are recorded.
    progress : bool or callable
        A tqdm bar counting this process's slices on rank 0, or ``progress(dict(done, total, index, rank, skipped))``
        after every slice (finished or found finished) on every rank.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``; under torchrun each rank uses ``cuda:LOCAL_RANK``.
    z_tv, z_tv_iters : float or None, int
        Apply :func:`refine_z_tv` with this weight after all slices are done (rank 0; needs contiguous slices).
    **options
        Passed to :func:`ctbird.reconstruct` (``config``, ``prior``, ``iters``, ``delta_t``, ``n_samples``,
        ``radon_backend``, ``refine_from_t``...). A prior given as a path is loaded once.

    Returns
    -------
    VolumeResult
        On every rank (the slices live in ``work_dir``).
    """
    import ctbird

    from .api import CT_METHODS

    started = time.perf_counter()
    if method not in CT_METHODS:
        raise ConfigError(f"method must be one of {CT_METHODS}, got {method!r}.")
    for reserved in ("seed", "callback", "device"):
        if reserved in options:
            raise ConfigError(f"reconstruct_volume sets {reserved!r} itself; do not pass it in options.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
    count = len(sinograms)
    indices = parse_slices(slices, count)
    if z_tv is not None:
        if isinstance(z_tv, bool) or not isinstance(z_tv, (int, float)) or not (math.isfinite(z_tv) and z_tv >= 0):
            raise ConfigError(f"z_tv must be a finite weight >= 0 (or None), got {z_tv!r}.")
        _check_contiguous(indices)
    if truth is not None and len(truth) != count:
        raise InputError(f"truth has {len(truth)} slices but the sinogram stack has {count}.")
    ctx = distributed_context(device)
    work = Path(work_dir).expanduser().resolve()
    spacing = float(pixel_spacing_mm if pixel_spacing_mm is not None else (getattr(geometry, "pixel_spacing", None) or 1.0))
    if method in RANDOM_METHODS:
        from .priors import load_prior

        options["prior"] = load_prior(options.get("prior"), device=str(ctx.device)).to(ctx.device)
    views, detectors = int(geometry.views), int(geometry.detectors)
    recorded = _read_json(work / SETTINGS_FILE) if resume else None
    if batch_size is None and recorded is not None:
        batch_size = recorded.get("settings", {}).get("batch_size")
    if batch_size is None:
        prior = options.get("prior")
        batch_size = auto_batch_size(image_size, views, detectors, method=method, device=ctx.device,
                                     n_samples=options.get("n_samples") or getattr(options.get("config"), "n_samples", 1),
                                     prior_size=getattr(prior, "image_size", None))
        batch_size = _agree(ctx, batch_size)
    settings = {"method": method, "geometry": _recordable(geometry), "image_size": image_size,
                "pixel_spacing_mm": spacing, "seed": seed, "batch_size": batch_size,
                "options": {k: _recordable(v) for k, v in sorted(options.items())}}
    _prepare_work_dir(work, settings, resume, ctx)
    key = _settings_key(settings)

    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    mine = batches[ctx.rank::ctx.world_size]
    total = sum(len(b) for b in mine)
    bar = None
    if progress is True and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="slice", desc=f"{method} (rank 0/{ctx.world_size})" if ctx.world_size > 1 else method)
    done = run = skipped = 0
    failure: BaseException | None = None
    try:
        for batch in mine:
            ys = [_as_sinogram(sinograms[i], views, detectors, i) for i in batch]
            digests = [_tensor_digest(y) for y in ys]
            finished = [_finished(work, i, key, d) for i, d in zip(batch, digests)]
            if all(finished):  # a batch is computed whole or not at all: its results do not depend on interruptions
                for i in batch:
                    skipped, done = skipped + 1, done + 1
                    _report(bar, progress, done, total, i, ctx.rank, skipped=True)
                continue
            seeds = [seed + i for i in batch] if method in RANDOM_METHODS else seed
            result = ctbird.reconstruct(torch.stack(ys)[:, None], geometry, image_size=image_size,
                                        pixel_spacing_mm=spacing, method=method, seed=seeds, device=ctx.device, **options)
            for item, i in enumerate(batch):
                hu = result.image[item, 0].detach().cpu().numpy().astype(np.float32)
                stem = work / _slice_stem(i)
                _save_npy(stem.with_suffix(".npy"), hu)
                if result.uncertainty is not None:
                    _save_npy(work / (_slice_stem(i) + "_std.npy"), result.uncertainty[item, 0].detach().cpu().numpy())
                record = {"index": i, "seed": seed + i if method in RANDOM_METHODS else None, "settings_key": key,
                          "sinogram_sha1": digests[item], "rank": ctx.rank, "batch": batch,
                          "seconds": result.seconds / len(batch), "nfe": result.nfe}
                if "final_loss" in result.info:
                    record["final_loss"] = result.info["final_loss"][item]
                if truth is not None:
                    record["metrics"] = score_ct(hu, np.asarray(truth[i], dtype=np.float32), data_range=EVAL_HU_RANGE)
                write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=2, default=_json_default) + "\n")
                run, done = run + 1, done + 1
                _report(bar, progress, done, total, i, ctx.rank, skipped=False)
    except Exception as exc:  # let the other ranks fail at the check below instead of waiting forever
        failure = exc
    finally:
        if bar is not None:
            bar.close()
    if not ctx.all_ok(failure is None):
        if failure is not None:
            raise failure
        raise OutputError("Another process failed; finished slices are kept in the work folder (resume=True).")
    ctx.barrier()
    missing = [i for i in indices if not (work / (_slice_stem(i) + ".json")).is_file()]
    if missing:
        raise OutputError(f"{len(missing)} slice(s) missing from {work} after all processes finished "
                          f"(first: {missing[0]}); is the work folder shared by all processes?")
    result = VolumeResult(method=method, indices=indices, work_dir=work, image_size=image_size,
                          pixel_spacing_mm=spacing, settings=settings, slices_run=run, slices_skipped=skipped,
                          rank=ctx.rank, world_size=ctx.world_size)
    if z_tv is not None:
        if ctx.is_main:
            apply_z_tv(result, sinograms, geometry, weight=z_tv, iters=z_tv_iters, device=ctx.device)
        ctx.barrier()
        result.z_tv = {"weight": z_tv, "anchor": Z_TV_ANCHOR, "iters": z_tv_iters}
    result.seconds = time.perf_counter() - started
    return result


def _report(bar, progress, done: int, total: int, index: int, rank: int, *, skipped: bool) -> None:
    if bar is not None:
        bar.update(1)
    if callable(progress):
        progress({"done": done, "total": total, "index": index, "rank": rank, "skipped": skipped})


def _agree(ctx: DistributedContext, value: int) -> int:
    """The smallest ``value`` over all ranks (every rank must cut the same batches)."""
    if ctx.world_size == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


# --------------------------------------------------------------------------- consistency between slices
def _z_diff(x: torch.Tensor) -> torch.Tensor:
    """Forward differences along the slice axis 0 (zero at the last slice)."""
    out = torch.zeros_like(x)
    out[:-1] = x[1:] - x[:-1]
    return out


def _z_diff_adjoint(g: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(g)
    out[:-1] -= g[:-1]
    out[1:] += g[:-1]
    return out


@torch.no_grad()
def refine_z_tv(x_init: torch.Tensor, sinograms: torch.Tensor, radon, *, weight: float = Z_TV_WEIGHT,
                anchor: float = Z_TV_ANCHOR, iters: int = 50, nonneg: bool = True, op_norm: float | None = None,
                step_ratio: float = 1.0) -> torch.Tensor:
    """Data consistency with total variation along z, across neighbouring slices (as DiffusionMBIR's ADMM-TV step).

    Minimizes, by Chambolle-Pock from ``x_init``,
    ``0.5 ||A x - y||^2 + 0.5 a ||x - x_init||^2 + lam sum |x[s+1] - x[s]|`` (``x >= 0`` when ``nonneg``)
    with ``a = anchor * ||A||^2`` and ``lam = weight * ||A||^2 * mean(|x_init|)``: the data term pulls each slice
    toward its measurement, the anchor keeps the per-slice (prior) reconstruction's detail, and the z-TV term removes
    slice-to-slice jumps that neither the data nor the 2-D prior constrain.

    Parameters
    ----------
    x_init : Tensor ``[S, 1, N, N]``
        Per-slice reconstructions in the sinograms' units (attenuation per pixel length), slices in order.
    sinograms : Tensor ``[S, 1, views, detectors]``
    radon : operators.LinearOperator
        The 2-D projector (applied to all slices as a batch).
    weight, anchor : float
        z-TV and anchor weights, relative as above.
    iters : int
        Iterations (each one ``A`` and one ``A^T`` over the whole stack).

    Returns
    -------
    Tensor ``[S, 1, N, N]``
    """
    from .baselines import operator_norm

    if x_init.dim() != 4 or sinograms.shape[0] != x_init.shape[0]:
        raise InputError(f"refine_z_tv needs x_init [S, 1, N, N] and sinograms [S, 1, V, D] with the same S, got "
                         f"{list(x_init.shape)} and {list(sinograms.shape)}.")
    for name, value in (("weight", weight), ("anchor", anchor), ("step_ratio", step_ratio)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"refine_z_tv: {name} must be a finite number >= 0, got {value!r}.")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ConfigError(f"refine_z_tv: iters must be an integer >= 0, got {iters!r}.")
    norm = (operator_norm(radon) if op_norm is None else float(op_norm)) * 1.01
    scale = float(x_init.abs().mean()) or 1.0
    lam = weight * scale  # in the unit-norm scaling below (||A / norm|| <= 1)
    a = anchor
    y = sinograms / norm
    k_norm = math.sqrt(1.0 + 4.0)  # ||D_z||^2 <= 4
    tau, sigma = 0.99 * step_ratio / k_norm, 0.99 / (step_ratio * k_norm)
    x = x_init.clone()
    x_bar = x.clone()
    dual_data = torch.zeros_like(sinograms)
    dual_z = torch.zeros_like(x)
    for _ in range(iters):
        dual_data = (dual_data + sigma * (radon(x_bar) / norm - y)) / (1.0 + sigma)
        dual_z = (dual_z + sigma * _z_diff(x_bar)).clamp(-lam, lam)
        v = x - tau * (radon.adjoint(dual_data) / norm + _z_diff_adjoint(dual_z))
        x_new = (v + tau * a * x_init) / (1.0 + tau * a)
        if nonneg:
            x_new.clamp_(min=0)
        x_bar = 2.0 * x_new - x
        x = x_new
    return x


def _check_contiguous(indices: Sequence[int]) -> None:
    if any(b - a != 1 for a, b in zip(indices, indices[1:])):
        raise ConfigError("z-TV couples neighbouring slices: select a contiguous range (START:STOP or all).")


def apply_z_tv(result: VolumeResult, sinograms: Sequence, geometry, *, weight: float = Z_TV_WEIGHT, iters: int = 50,
               anchor: float = Z_TV_ANCHOR, chunk: int = 32, halo: int = 4, device: str | torch.device = "cpu",
               radon_backend: str = "matrix") -> VolumeResult:
    """Refine a finished :class:`VolumeResult` with :func:`refine_z_tv`, ``chunk`` slices at a time.

    Each chunk is refined with ``halo`` neighbouring slices on both sides (discarded afterwards), so memory stays at
    ``chunk + 2 * halo`` slices. Refined slices go to ``work_dir/z_tv/`` and ``result.slice`` returns them.
    The selection must be contiguous (neighbours in the stack).
    """
    from operators.radon import Radon

    _check_contiguous(result.indices)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1 or halo < 0:
        raise ConfigError(f"chunk must be >= 1 and halo >= 0, got {chunk!r}, {halo!r}.")
    dev = torch.device(device)
    radon = Radon(geometry, result.image_size, backend=radon_backend, channels=1, device=dev)
    views, detectors = int(geometry.views), int(geometry.detectors)
    spacing = result.pixel_spacing_mm
    folder = result.work_dir / Z_TV_FOLDER
    folder.mkdir(exist_ok=True)
    count = len(result)
    for start in range(0, count, chunk):
        lo, hi = max(0, start - halo), min(count, start + chunk + halo)
        x = torch.from_numpy(np.stack([result.slice(k, refined=False) for k in range(lo, hi)]))[:, None].to(dev)
        y = torch.stack([_as_sinogram(sinograms[result.indices[k]], views, detectors, result.indices[k])
                         for k in range(lo, hi)])[:, None].to(dev)
        mu = hu_to_mu(x) * spacing
        refined = mu_to_hu(refine_z_tv(mu, y, radon, weight=weight, anchor=anchor, iters=iters) / spacing)
        for k in range(start, min(count, start + chunk)):
            _save_npy(folder / (_slice_stem(result.indices[k]) + ".npy"), refined[k - lo, 0].cpu().numpy())
    result.z_tv = {"weight": weight, "anchor": anchor, "iters": iters}
    return result


def slice_consistency(volume_hu: Sequence, truth_hu: Sequence, *,
                      data_range: tuple[float, float] = EVAL_HU_RANGE) -> dict:
    """How well a volume agrees with the truth across slices, reading one slice at a time.

    Parameters
    ----------
    volume_hu, truth_hu : sequences ``[S]`` of ``[H, W]`` HU (arrays ``[S, H, W]``, memory maps, :class:`VolumeResult`)
    data_range : (lo, hi)
        Both are clipped to it; PSNR's peak is ``hi - lo`` (as :func:`ctbird.metrics.psnr` with a tuple range).

    Returns
    -------
    dict
        ``axial_psnr``, ``coronal_psnr``, ``sagittal_psnr``: dB, the mean over the planes of each orientation of the
        plane's PSNR, leaving out planes reconstructed exactly (after clipping: typically air outside the patient,
        whose infinite PSNR would swamp the mean; ``inf`` when every plane is exact); ``z_gradient_rmse_hu``: RMSE of
        the forward difference along z, in HU.
    """
    count = len(volume_hu)
    if len(truth_hu) != count or count < 2:
        raise InputError(f"slice_consistency needs two volumes with the same number (>= 2) of slices, got {count} "
                         f"and {len(truth_hu)}.")
    lo, hi = data_range
    span = hi - lo
    axial: list[float] = []
    coronal = sagittal = None
    gradient_sq, previous = 0.0, None
    for k in range(count):
        x = np.clip(np.asarray(volume_hu[k], dtype=np.float64), lo, hi)
        t = np.clip(np.asarray(truth_hu[k], dtype=np.float64), lo, hi)
        if x.shape != t.shape or x.ndim != 2:
            raise InputError(f"Slice {k}: volume {x.shape} and truth {t.shape} must be the same [H, W].")
        error = x - t
        squared = error ** 2
        axial.append(float(squared.mean()))
        coronal = squared.sum(axis=1) if coronal is None else coronal + squared.sum(axis=1)  # per row r
        sagittal = squared.sum(axis=0) if sagittal is None else sagittal + squared.sum(axis=0)  # per column c
        if previous is not None:
            gradient_sq += float(((error - previous) ** 2).mean())
        previous = error
    height, width = previous.shape

    def mean_psnr(mses) -> float:
        inexact = [m for m in np.asarray(mses).ravel() if m > 0]
        return float(np.mean([10.0 * math.log10(span * span / m) for m in inexact])) if inexact else math.inf

    return {"axial_psnr": mean_psnr(axial), "coronal_psnr": mean_psnr(coronal / (count * width)),
            "sagittal_psnr": mean_psnr(sagittal / (count * height)),
            "z_gradient_rmse_hu": math.sqrt(gradient_sq / (count - 1))}


# --------------------------------------------------------------------------- outputs
def write_volume_outputs(out: str | os.PathLike, results: dict[str, VolumeResult], volume: VolumeInput, *,
                         force: bool = False, anonymize: bool = False, window: tuple[float, float] = (-1000.0, 1000.0),
                         summary: dict | None = None, truth: Sequence | None = None,
                         burned_in_annotation: bool = False) -> Path | None:
    """Write the final outputs (rank 0 only; other ranks return None) through a staging folder renamed at the end.

    Writes, per method, ``<method>.npy`` (``[S, H, W]`` float32 HU at the input's in-plane size), ``<method>/``
    (a derived DICOM series, :func:`ctbird.io.series.write_derived_series`) and ``<method>_std.npy`` when there is an
    uncertainty; then ``metrics.json`` (``summary`` plus, per method, per-slice records, their mean and, with
    ``truth`` (``[S]`` of ``[N, N]`` HU at the working size, indexed like the input), :func:`slice_consistency`) and
    ``volume.png`` (:func:`ctbird.figures_volume.volume_figure`). With ``anonymize`` one
    :class:`~ctbird.io.deid.Deidentifier` serves every series, so all of them stay in one (remapped) study.

    Returns
    -------
    Path or None
        The output folder (rank 0).
    """
    from .figures_volume import volume_figure
    from .io import from_working_size

    if not results:
        raise ConfigError("write_volume_outputs needs at least one result.")
    first = next(iter(results.values()))
    if first.rank != 0:
        return None
    indices = first.indices
    if any(r.indices != indices for r in results.values()):
        raise ConfigError("All results must cover the same slices.")
    if volume.hu is not None:
        output_shape = tuple(int(v) for v in volume.hu.shape[1:])
        spacing = tuple(float(v) for v in volume.pixel_spacing_mm)
    else:
        output_shape = (first.image_size, first.image_size)
        spacing = (first.pixel_spacing_mm, first.pixel_spacing_mm)
    headers = slice_headers(volume, indices, shape=output_shape)
    metrics: dict[str, Any] = dict(summary or {})
    metrics.update({"slices": indices, "slice_spacing_mm": volume.slice_spacing_mm, "methods": {}})
    deidentifier = Deidentifier() if anonymize else None
    with atomic_output_dir(out, force=force) as staging:
        planes = {}
        for method, result in results.items():
            def image(k: int, result=result) -> np.ndarray:
                return from_working_size(result.slice(k), output_shape)

            write_volume_npy(image, len(indices), staging / f"{method}.npy")
            if all(result.uncertainty(k) is not None for k in range(len(indices))):
                write_volume_npy(lambda k, result=result: from_working_size(result.uncertainty(k), output_shape),
                                 len(indices), staging / f"{method}_std.npy")
            series = staging / method
            series.mkdir()
            stored = np.load(staging / f"{method}.npy", mmap_mode="r")
            series_uid = write_derived_series(stored, headers, series, method_name=method, pixel_spacing_mm=spacing,
                                              anonymize=anonymize, window=window, deidentifier=deidentifier,
                                              burned_in_annotation=burned_in_annotation)
            entry = result.metrics()
            entry["series_instance_uid"] = series_uid
            if truth is not None and len(indices) > 1:
                entry["consistency"] = slice_consistency(result, SliceMap(indices, truth.__getitem__))
            metrics["methods"][method] = entry
            planes[method] = stored
        write_text_atomic(staging / "metrics.json", json.dumps(metrics, indent=2, default=_json_default) + "\n")
        figure = volume_figure(planes, window=window, pixel_spacing_mm=spacing, slice_spacing_mm=volume.slice_spacing_mm)
        (staging / "volume.png").write_bytes(figure)
        del planes, stored
    return Path(out).expanduser().resolve()


__all__ = ["reconstruct_volume", "VolumeResult", "SliceMap", "simulated_sinograms", "distributed_context",
           "DistributedContext", "shutdown_distributed", "auto_batch_size", "refine_z_tv", "apply_z_tv",
           "slice_consistency", "write_volume_outputs", "RANDOM_METHODS"]
