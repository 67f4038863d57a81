"""Comparison figures (matplotlib, Agg backend, no global pyplot state)."""

from __future__ import annotations

import io

import numpy as np

#: PNG text chunks of ctbird figures: none (no software string, no title or path in metadata), so that an
#: anonymized run's figures carry nothing but pixels.
PNG_METADATA = {"Software": None}


def comparison_figure(images: dict[str, np.ndarray], *, reference: np.ndarray | None = None,
                      window: tuple[float, float] = (0.0, 1.0), metrics: dict[str, dict] | None = None,
                      uncertainty: dict[str, np.ndarray] | None = None, sinogram: np.ndarray | None = None,
                      extra: dict[str, np.ndarray] | None = None, title: str | None = None,
                      unit: str = "HU", error_range: float | None = None) -> bytes:
    """PNG bytes (no text chunks) of a grid: reference, each result (with PSNR/SSIM in the title), error maps,
    uncertainty maps, the measured sinogram and extra panels (e.g. an estimated blur kernel).

    Parameters
    ----------
    images : dict name -> ``[H, W]`` (grey, in ``unit``) or ``[3, H, W]`` (RGB in ``[0, 1]``)
        Results in display order.
    reference : array, optional
        Ground truth, same layout; enables the error-map row.
    window : (lo, hi)
        Display range of images (HU window for CT, ``(0, 1)`` for photographs).
    metrics : dict name -> {"psnr", "ssim", ...}, optional
    uncertainty : dict name -> ``[H, W]`` std map, optional
    sinogram : ``[views, detectors]``, optional
    extra : dict title -> ``[h, w]`` image shown with its own colour range, optional
    error_range : float, optional
        Colour limit of the absolute-error maps; default: the window's width / 4.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def show(ax, image, label, *, vmin=None, vmax=None, cmap="gray"):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[0] == 3:
            ax.imshow(np.clip(array.transpose(1, 2, 0), 0.0, 1.0))
        else:
            array = array[0] if array.ndim == 3 else array
            handle = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto" if label == "measured sinogram" else "equal")
            if cmap != "gray" or label == "measured sinogram":
                ax.figure.colorbar(handle, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])

    lo, hi = window
    top = ([("ground truth", reference)] if reference is not None else []) + list(images.items())
    rows: list[list[tuple]] = [[(name, img, {"vmin": lo, "vmax": hi}) for name, img in top]]
    for idx, (name, _) in enumerate(top):
        stats = (metrics or {}).get(name)
        if stats:
            parts = [f"{stats['psnr']:.2f} dB" if "psnr" in stats else "", f"SSIM {stats['ssim']:.3f}" if "ssim" in stats else ""]
            rows[0][idx] = (f"{name}\n" + ", ".join(p for p in parts if p), rows[0][idx][1], rows[0][idx][2])
    if reference is not None:
        limit = error_range if error_range is not None else (hi - lo) / 4.0
        errors = []
        for name, img in images.items():
            diff = np.abs(np.asarray(img, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
            if diff.ndim == 3:
                diff = diff.mean(axis=0)
            errors.append((f"|{name} - truth| ({unit})", diff, {"vmin": 0.0, "vmax": limit, "cmap": "magma"}))
        rows.append([None, *errors])  # each error map sits under its own result (column 0 is the truth)
    third = [("measured sinogram", np.asarray(sinogram), {"cmap": "gray"})] if sinogram is not None else []
    third += [(f"{name} uncertainty (std, {unit})", std, {"vmin": 0.0, "cmap": "viridis"})
              for name, std in (uncertainty or {}).items() if std is not None]
    third += [(label, img, {"cmap": "viridis"}) for label, img in (extra or {}).items()]
    if reference is not None and third:
        rows[1][0] = third.pop(0)  # the free slot under the ground truth
    if third:
        rows.append(third)
    columns = max(len(r) for r in rows)
    figure = Figure(figsize=(2.8 * columns, 2.9 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            if c < len(row) and row[c] is not None:
                label, image, style = row[c]
                show(axes[r][c], image, label, **style)
            else:
                axes[r][c].axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=PNG_METADATA)
    return buffer.getvalue()

