"""Private ASTRA helpers: lazy import, geometry translation, projector lifetime, autograd wrapper.

Nothing here imports :mod:`astra` at module import time; :func:`import_astra` does it on first use
and turns a missing installation into :class:`~operators.errors.BackendUnavailableError`.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .errors import BackendUnavailableError
from .geometry import FanBeam, ParallelBeam

INSTALL_HINT = (
    "Install the ASTRA Toolbox with `pip install astra-toolbox` (or `conda install -c astra-toolbox astra-toolbox`), "
    "or use backend='torch' (pure PyTorch, no extra dependency)."
)

#: CPU projector used for each geometry kind (the "matrix" backend uses the same ones).
CPU_PROJECTORS = {"parallel": "linear", "fan": "line_fanflat"}


def import_astra() -> Any:
    """Import and return the :mod:`astra` module, or raise :class:`BackendUnavailableError`."""
    try:
        import astra
    except ImportError as exc:
        raise BackendUnavailableError(f"The ASTRA Toolbox (module 'astra') is not importable: {exc}. {INSTALL_HINT}") from exc
    return astra


def astra_geometries(geometry: ParallelBeam | FanBeam, image_size: int) -> tuple[dict, dict]:
    """ASTRA ``(vol_geom, proj_geom)`` for a resolved, pixel-unit ``geometry`` and an ``N x N`` image.

    A nominal geometry maps to ASTRA's ``parallel``/``fanflat``; a calibrated one (``center_offset`` or
    ``angle_offsets`` set) to the equivalent ``parallel_vec``/``fanflat_vec`` with the calibrated angles and the
    detector centre moved by ``-center_offset`` cells along the detector.
    """
    astra = import_astra()
    vol_geom = astra.create_vol_geom(image_size, image_size)
    angles = geometry.angles_rad()
    if isinstance(geometry, ParallelBeam):
        proj_geom = astra.create_proj_geom("parallel", float(geometry.detector_spacing), int(geometry.detectors), angles)
    else:
        proj_geom = astra.create_proj_geom("fanflat", float(geometry.detector_spacing), int(geometry.detectors), angles,
                                           float(geometry.source_distance), float(geometry.detector_distance))
    if geometry.is_calibrated:
        proj_geom = astra.geom_2vec(proj_geom)
        vectors = proj_geom["Vectors"].copy()  # rows: (ray or source xy, detector centre xy, cell step xy)
        vectors[:, 2:4] -= geometry.center_offset * vectors[:, 4:6]
        proj_geom["Vectors"] = vectors
    return vol_geom, proj_geom


class AstraProjector:
    """An ASTRA 2-D projector id, deleted when this object is garbage collected.

    Parameters
    ----------
    geometry : ParallelBeam or FanBeam
        Resolved geometry in pixel units.
    image_size : int
        Image side ``N``.
    cuda_device : int or None
        ``None`` for the CPU projector (:data:`CPU_PROJECTORS`), else the CUDA device index for ASTRA's
        ``'cuda'`` projector.
    """

    def __init__(self, geometry: ParallelBeam | FanBeam, image_size: int, cuda_device: int | None = None) -> None:
        astra = import_astra()
        vol_geom, proj_geom = astra_geometries(geometry, image_size)
        if cuda_device is None:
            self.projector_id = astra.create_projector(CPU_PROJECTORS[geometry.kind], proj_geom, vol_geom)
        else:
            if not astra.use_cuda():
                raise BackendUnavailableError(
                    "backend='astra' got a CUDA tensor but this ASTRA build has no usable CUDA support "
                    "(astra.use_cuda() is False). Install a CUDA-enabled astra-toolbox, move the tensor to the CPU, "
                    "or use backend='matrix'/'torch' (both run on CUDA)."
                )
            self.projector_id = astra.create_projector("cuda", proj_geom, vol_geom, {"GPUIndex": int(cuda_device)})
        self.cuda_device = cuda_device
        self._finalizer = weakref.finalize(self, astra.projector.delete, [self.projector_id])

    def close(self) -> None:
        """Delete the ASTRA projector now (idempotent)."""
        self._finalizer()

    def run(self, data: torch.Tensor, adjoint: bool, out_shape: tuple[int, int]) -> torch.Tensor:
        """Forward-project (or back-project if ``adjoint``) a ``[M, h, w]`` stack, one slice at a time.

        Computation is float32 (ASTRA's only dtype); the result has ``data``'s dtype and device.
        """
        astra = import_astra()
        work = data.detach().to(torch.float32).contiguous()
        out = torch.empty((work.shape[0], *out_shape), dtype=torch.float32, device=work.device)
        if work.is_cuda:
            torch.cuda.current_stream(work.device).synchronize()
        direct = astra.projector.direct_BP if adjoint else astra.projector.direct_FP
        for i in range(work.shape[0]):
            direct(self.projector_id, work[i], out=out[i])
        return out.to(data.dtype)


class AstraProjectFunction(torch.autograd.Function):
    """``y = A x`` (or ``A^T x`` if ``adjoint``) through ASTRA; the backward pass runs the other direction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, owner: Any, adjoint: bool) -> torch.Tensor:  # noqa: D102
        ctx.owner = owner
        ctx.adjoint = adjoint
        return owner._astra_run(x, adjoint)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return AstraProjectFunction.apply(grad, ctx.owner, not ctx.adjoint), None, None
