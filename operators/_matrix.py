"""Private helpers of the "matrix" Radon backend: ASTRA system matrix, disk cache, sparse autograd.

The system matrix ``A`` ([views*detectors, N*N], row-major sinogram / image indexing) is built once by
ASTRA's CPU projector and cached on disk under ``$CTBIRD_CACHE_DIR`` (default ``~/.cache/ctbird/radon``),
keyed by a SHA-256 of the geometry, image size, projector type and ASTRA version.

The cache is bounded: ``$CTBIRD_CACHE_MAX_BYTES`` (default 2 GiB; ``0`` disables caching). After each new
matrix is saved, the least recently used files (oldest modification time; a cache hit refreshes it) are
deleted until the folder fits; a matrix larger than the bound is not cached at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from ._astra import CPU_PROJECTORS, astra_geometries, import_astra
from .geometry import FanBeam, ParallelBeam

CACHE_FORMAT = 1
CACHE_MAX_BYTES_DEFAULT = 2 * 1024 ** 3


def cache_dir() -> Path:
    """The matrix cache folder: ``$CTBIRD_CACHE_DIR`` or ``~/.cache/ctbird/radon``."""
    env = os.environ.get("CTBIRD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ctbird" / "radon"


def cache_max_bytes() -> int:
    """The cache size bound in bytes: ``$CTBIRD_CACHE_MAX_BYTES`` or :data:`CACHE_MAX_BYTES_DEFAULT`."""
    env = os.environ.get("CTBIRD_CACHE_MAX_BYTES")
    if env is None or not env.strip():
        return CACHE_MAX_BYTES_DEFAULT
    try:
        value = int(float(env))
    except ValueError:
        value = -1
    if value < 0:
        warnings.warn(f"Ignoring CTBIRD_CACHE_MAX_BYTES={env!r} (expected a number of bytes >= 0); using "
                      f"{CACHE_MAX_BYTES_DEFAULT}.", stacklevel=2)
        return CACHE_MAX_BYTES_DEFAULT
    return value


def evict(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used ``*.npz`` files of ``folder`` until it holds ``<= max_bytes``."""
    entries = []
    for path in folder.glob("*.npz"):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def cache_key(geometry: ParallelBeam | FanBeam, image_size: int) -> str:
    """Hex digest identifying the system matrix of ``geometry`` (resolved, pixel units) for ``N x N`` images."""
    astra = import_astra()
    spec = {
        "format": CACHE_FORMAT,
        "geometry": geometry.to_dict(),
        "angles": [float(a).hex() for a in geometry.angles_rad()],
        "image_size": int(image_size),
        "projector": CPU_PROJECTORS[geometry.kind],
        "astra": str(getattr(astra, "__version__", "unknown")),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def build_with_astra(geometry: ParallelBeam | FanBeam, image_size: int) -> scipy.sparse.csr_matrix:
    """Build the CSR system matrix with ASTRA's CPU projector, freeing every ASTRA object."""
    astra = import_astra()
    vol_geom, proj_geom = astra_geometries(geometry, image_size)
    projector_id = astra.create_projector(CPU_PROJECTORS[geometry.kind], proj_geom, vol_geom)
    try:
        matrix_id = astra.projector.matrix(projector_id)
        try:
            matrix = astra.matrix.get(matrix_id)
        finally:
            astra.matrix.delete(matrix_id)
    finally:
        astra.projector.delete(projector_id)
    matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    return matrix


def _load(path: Path, shape: tuple[int, int]) -> scipy.sparse.csr_matrix | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            indptr, indices, data = f["indptr"], f["indices"], f["data"]
            stored_shape = tuple(int(s) for s in f["shape"])
        if stored_shape != shape or indptr.shape != (shape[0] + 1,) or indices.shape != data.shape \
                or indptr[-1] != data.size or (indices.size and (indices.min() < 0 or indices.max() >= shape[1])):
            raise ValueError("inconsistent arrays")
        return scipy.sparse.csr_matrix((data.astype(np.float32), indices.astype(np.int32), indptr.astype(np.int32)),
                                       shape=shape)
    except Exception as exc:  # any unreadable/corrupt file is rebuilt
        warnings.warn(f"Ignoring unreadable Radon matrix cache file {path} ({exc}); rebuilding it.", stacklevel=3)
        return None


def _save(path: Path, matrix: scipy.sparse.csr_matrix) -> None:
    limit = cache_max_bytes()
    size = 8 * matrix.nnz + 4 * (matrix.shape[0] + 1)
    if size > limit:
        if limit > 0:
            warnings.warn(f"Not caching the {size / 2**20:.0f} MiB Radon matrix: it exceeds CTBIRD_CACHE_MAX_BYTES="
                          f"{limit}; raise the bound to keep it between runs.", stacklevel=3)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, indptr=matrix.indptr.astype(np.int32), indices=matrix.indices.astype(np.int32),
                         data=matrix.data.astype(np.float32), shape=np.asarray(matrix.shape, dtype=np.int64))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        evict(path.parent, limit, keep=path)
    except OSError as exc:
        warnings.warn(f"Could not write the Radon matrix cache {path} ({exc}); set CTBIRD_CACHE_DIR to a writable "
                      "folder to avoid rebuilding the matrix every time.", stacklevel=3)


def system_matrix(geometry: ParallelBeam | FanBeam, image_size: int, use_cache: bool = True
                  ) -> tuple[scipy.sparse.csr_matrix, bool]:
    """The ``[views*detectors, N*N]`` float32 CSR system matrix and whether it came from the disk cache."""
    shape = (geometry.views * geometry.detectors, image_size * image_size)
    path = cache_dir() / f"{cache_key(geometry, image_size)}.npz" if use_cache else None
    if path is not None and path.is_file():
        matrix = _load(path, shape)
        if matrix is not None:
            try:
                os.utime(path)  # most recently used: evicted last
            except OSError:
                pass
            return matrix, True
    matrix = build_with_astra(geometry, image_size)
    if path is not None:
        _save(path, matrix)
    return matrix, False


def to_torch_csr(matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
    """A torch sparse CSR tensor (int32 indices, float32 values) sharing nothing with ``matrix``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.ascontiguousarray(matrix.indptr, dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(matrix.indices, dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(matrix.data, dtype=np.float32)),
            size=matrix.shape,
        )


def cast_csr(matrix: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``matrix`` with values cast to ``dtype`` (indices and device unchanged)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(matrix.crow_indices(), matrix.col_indices(), matrix.values().to(dtype),
                                       size=matrix.shape)


class SparseMatmul(torch.autograd.Function):
    """``matrix @ dense`` whose backward is ``matrix_t @ grad`` (itself differentiable, for higher orders)."""

    @staticmethod
    def forward(ctx, dense: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.matrices = (matrix, matrix_t)
        return torch.sparse.mm(matrix, dense.contiguous())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        matrix, matrix_t = ctx.matrices
        return SparseMatmul.apply(grad, matrix_t, matrix), None, None
