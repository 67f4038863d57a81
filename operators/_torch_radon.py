"""Private pure-PyTorch ray-marching projector (the "torch" Radon backend).

Each ray is sampled at equally spaced points (``step`` pixels apart, midpoint rule) over a segment that
covers the image's support; the image is read by bilinear interpolation with zero padding
(``grid_sample``), so the projector is linear in the image and differentiable with respect to the ray
geometry (detector positions, angles).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Elements of one ``grid_sample`` output chunk (bounds peak memory for large batches).
CHUNK_ELEMENTS = 1 << 24


def ray_geometry(kind: str, angles: torch.Tensor, detector_positions: torch.Tensor,
                 source_distance: float | None = None, detector_distance: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest point to the rotation axis ``p0`` and unit direction ``r`` of every ray, both ``[V, D, 2]`` (x, y).

    ``angles`` ``[V]`` (radians) and ``detector_positions`` ``[D]`` (signed distance along the detector from its
    centre, pixel units) follow ASTRA's conventions (see :mod:`operators.radon`).
    """
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    u = detector_positions[None, :]
    if kind == "parallel":
        p0 = torch.stack((u * cos, u * sin), dim=-1)
        direction = torch.stack((sin, -cos), dim=-1).expand_as(p0)
        return p0, direction
    source = torch.stack((source_distance * sin, -source_distance * cos), dim=-1)            # [V, 1, 2]
    detector_point = torch.stack((-detector_distance * sin + u * cos, detector_distance * cos + u * sin), dim=-1)
    direction = detector_point - source
    direction = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
    t_closest = -(source * direction).sum(dim=-1, keepdim=True)
    return source + t_closest * direction, direction


def project(x: torch.Tensor, p0: torch.Tensor, direction: torch.Tensor, step: float = 0.5) -> torch.Tensor:
    """Line integrals of the bilinearly interpolated image ``x`` ``[B, C, N, N]`` along the rays -> ``[B, C, V, D]``.

    Pixel ``(row i, col j)`` has centre ``x = j + 0.5 - N/2``, ``y = N/2 - i - 0.5``; the result is in pixel
    length units.
    """
    b, c, n, _ = x.shape
    views, detectors = p0.shape[:2]
    half_length = (n + 1) / math.sqrt(2.0) + step
    samples = int(math.ceil(2 * half_length / step))
    dt = 2 * half_length / samples
    t = -half_length + (torch.arange(samples, dtype=x.dtype, device=x.device) + 0.5) * dt
    scale = torch.tensor([2.0 / n, -2.0 / n], dtype=x.dtype, device=x.device)
    image = x.reshape(1, b * c, n, n)
    chunk = max(1, CHUNK_ELEMENTS // max(1, b * c * detectors * samples))
    parts = []
    for start in range(0, views, chunk):
        a, d = p0[start:start + chunk].to(x.dtype), direction[start:start + chunk].to(x.dtype)
        points = a[:, :, None, :] + t[None, None, :, None] * d[:, :, None, :]            # [v, D, S, 2]
        grid = (points * scale).reshape(1, -1, samples, 2)
        values = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        parts.append(values.sum(dim=-1).reshape(b, c, -1, detectors) * dt)
    return torch.cat(parts, dim=2)
