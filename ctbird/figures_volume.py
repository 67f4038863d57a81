"""Orthogonal views of volumes: axial, coronal and sagittal planes (matplotlib Agg, no global pyplot state)."""

from __future__ import annotations

import io

import numpy as np

from .errors import InputError


def orthogonal_planes(volume: np.ndarray, center: tuple[int, int, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The axial ``[H, W]``, coronal ``[S, W]`` and sagittal ``[S, H]`` planes through ``center`` (slice, row, column;
    default the middle). Reads only those planes from a memory-mapped ``[S, H, W]`` array."""
    if np.ndim(volume) != 3:
        raise InputError(f"A volume must be [S, H, W], got shape {np.shape(volume)}.")
    s, h, w = volume.shape
    k, r, c = center if center is not None else (s // 2, h // 2, w // 2)
    if not (0 <= k < s and 0 <= r < h and 0 <= c < w):
        raise InputError(f"Plane centre {(k, r, c)} lies outside the volume {volume.shape}.")
    return (np.asarray(volume[k], dtype=np.float32), np.asarray(volume[:, r, :], dtype=np.float32),
            np.asarray(volume[:, :, c], dtype=np.float32))


def volume_figure(volumes: dict[str, np.ndarray], *, window: tuple[float, float] = (-1000.0, 1000.0),
                  pixel_spacing_mm: tuple[float, float] = (1.0, 1.0), slice_spacing_mm: float = 1.0,
                  center: tuple[int, int, int] | None = None, title: str | None = None) -> bytes:
    """PNG bytes of a grid: one row per volume, columns axial, coronal and sagittal.

    Parameters
    ----------
    volumes : dict name -> ``[S, H, W]`` HU (arrays or memory maps; same shape), in display order
    window : (lo, hi)
        Display window in HU.
    pixel_spacing_mm, slice_spacing_mm
        (row, column) and slice spacing: coronal and sagittal planes are drawn with the true aspect ratio.
    center : (slice, row, column), optional
        Where the planes cross (default: the middle); marked by thin lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not volumes:
        raise InputError("volume_figure needs at least one volume.")
    shapes = {np.shape(v) for v in volumes.values()}
    if len(shapes) != 1:
        raise InputError(f"All volumes must have one shape, got {sorted(shapes)}.")
    s, h, w = next(iter(shapes))
    k, r, c = center if center is not None else (s // 2, h // 2, w // 2)
    dr, dc = pixel_spacing_mm
    dz = slice_spacing_mm
    lo, hi = window
    figure = Figure(figsize=(9.0, 3.0 * len(volumes) + (0.4 if title else 0.0)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(volumes), 3, squeeze=False)
    for row, (name, volume) in enumerate(volumes.items()):
        axial, coronal, sagittal = orthogonal_planes(volume, (k, r, c))
        panels = (("axial", axial, dr / dc, (c, r)), ("coronal", coronal[::-1], dz / dc, (c, s - 1 - k)),
                  ("sagittal", sagittal[::-1], dz / dr, (r, s - 1 - k)))
        for ax, (plane, image, aspect, (x, y)) in zip(axes[row], panels):
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            ax.axvline(x, color="tab:orange", linewidth=0.5, alpha=0.6)
            ax.axhline(y, color="tab:orange", linewidth=0.5, alpha=0.6)
            ax.set_title(f"{name}: {plane}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


__all__ = ["volume_figure", "orthogonal_planes"]
