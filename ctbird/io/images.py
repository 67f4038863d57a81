"""Image files (PNG/JPEG/NPY) and resampling to the prior's working size.

* :func:`read_image`: PNG/JPEG/TIFF, grey or RGB(A), 8 or 16 bit -> float32 ``[C, H, W]`` in ``[0, 1]``
  (alpha is dropped, palette images are expanded to RGB).
* :func:`write_png`: HU images through a display window (``ctbird.units.WINDOWS`` name or ``(lo, hi)``),
  or ``[0, 1]`` images as they are; 8 or 16 bit; grey ``[H, W]``/``[1, H, W]`` or RGB ``[3, H, W]``.
* :func:`to_working_size` / :func:`from_working_size`: bring a slice to the prior's ``size x size`` and back.
  Exactly ``2 * size`` inputs are 2x2 block-averaged (how the training set was made); other sizes are
  resized with anti-aliased bilinear interpolation. Non-square slices are padded to a square with air
  (-1024 HU for CT; 0 for photographs) centred, and the padding is cropped away again on the way back.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..units import HU_MIN, WINDOWS
from .atomic import write_bytes_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
AIR_HU = HU_MIN  # the bottom of the prior window: what readers clip outside-FOV padding to


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photograph or greyscale picture as float32 ``[C, H, W]`` in ``[0, 1]`` (C = 1 or 3)."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{file} does not exist or is not a file; pass a PNG or JPEG image.")
    try:
        with Image.open(file) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            if mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif mode in ("LA", "1"):
                img = img.convert("L")
            array = np.asarray(img)
            mode = img.mode
    except UnidentifiedImageError as exc:
        raise InputError(f"{file} is not a readable image (PNG/JPEG/TIFF expected).") from exc
    except Exception as exc:
        raise InputError(f"{file}: cannot decode the image ({' '.join(str(exc).split())[:160]}); it may be truncated.") from exc
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16 or mode.startswith("I;16"):
        scaled = array.astype(np.float32) / 65535.0
    elif mode == "I":
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        scaled = np.clip(array.astype(np.float32) / peak, 0.0, 1.0)
    elif mode == "F":
        scaled = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise InputError(f"{file}: unsupported image mode {mode!r}; save it as 8/16-bit grey or RGB PNG.")
    if not np.isfinite(scaled).all():
        raise InputError(f"{file}: the image holds NaN or infinite values.")
    if scaled.ndim == 2:
        return np.ascontiguousarray(scaled[None])
    if scaled.ndim == 3 and scaled.shape[2] == 3:
        return np.ascontiguousarray(scaled.transpose(2, 0, 1))
    raise InputError(f"{file}: unexpected image layout {array.shape}; expected grey or RGB.")


def resolve_window(window: str | tuple[float, float] | None) -> tuple[float, float] | None:
    """A window preset name (``ctbird.units.WINDOWS``), ``"LO,HI"`` text or ``(lo, hi)`` -> ``(lo, hi)``."""
    if window is None:
        return None
    if isinstance(window, str):
        if window in WINDOWS:
            return WINDOWS[window]
        parts = window.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"Unknown window {window!r}; use one of {sorted(WINDOWS)} or 'LO,HI' in HU.") from None
    else:
        lo, hi = (float(v) for v in window)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"Window must be (lo, hi) with hi > lo, got ({lo}, {hi}).")
    return (lo, hi)


def encode_png(image: np.ndarray, *, window: str | tuple[float, float] | None = None, bits: int = 8) -> bytes:
    """PNG bytes of ``image`` (see :func:`write_png`)."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    elif array.ndim == 3 and array.shape[2] in (1, 3):
        array = array[..., 0] if array.shape[2] == 1 else array
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise OutputError(f"write_png expects [H, W], [1|3, H, W] or [H, W, 1|3], got shape {np.shape(image)}.")
    bounds = resolve_window(window)
    if bounds is not None:
        array = (array - bounds[0]) / (bounds[1] - bounds[0])
    array = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)
    if bits == 8:
        pil = Image.fromarray(np.round(array * 255.0).astype(np.uint8))
    elif bits == 16:
        if array.ndim == 3:
            raise OutputError("16-bit PNG output supports greyscale images only; use bits=8 for RGB.")
        pil = Image.fromarray(np.round(array * 65535.0).astype(np.uint16))
    else:
        raise OutputError(f"bits must be 8 or 16, got {bits}.")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(image: np.ndarray, path: str | os.PathLike, *, window: str | tuple[float, float] | None = None,
              bits: int = 8) -> None:
    """Write ``image`` as PNG (atomically).

    Parameters
    ----------
    image : np.ndarray
        ``[H, W]``, ``[1|3, H, W]`` or ``[H, W, 3]``; in HU when ``window`` is given, else in ``[0, 1]``.
    window : str or (lo, hi), optional
        Display window in HU (preset name from ``ctbird.units.WINDOWS`` or bounds); values are clipped.
    bits : 8 or 16
        Bit depth (16 bit for greyscale only).
    """
    write_bytes_atomic(path, encode_png(image, window=window, bits=bits))


def _pad_to_square(image: np.ndarray, fill: float) -> np.ndarray:
    h, w = image.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(top, side - h - top), (left, side - w - left)]
    return np.pad(image, pad, constant_values=fill)


def to_working_size(image: np.ndarray, size: int = 256, *, fill: float = AIR_HU) -> np.ndarray:
    """Resample ``[..., H, W]`` to ``[..., size, size]`` float32.

    Exact ``2 * size`` squares are 2x2 block-averaged (the training set's reduction); other sizes are
    padded to a square with ``fill`` and resized with anti-aliased bilinear interpolation.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim < 2 or min(array.shape[-2:]) < 1:
        raise InputError(f"to_working_size expects an image [..., H, W], got shape {array.shape}.")
    h, w = array.shape[-2:]
    if h != w:
        array = _pad_to_square(array, fill)
    side = array.shape[-1]
    if side == size:
        return array.copy()
    if side == 2 * size:
        lead = array.shape[:-2]
        return array.reshape(*lead, size, 2, size, 2).mean(axis=(-3, -1)).astype(np.float32)
    from skimage.transform import resize

    out_shape = array.shape[:-2] + (size, size)
    return resize(array, out_shape, order=1, anti_aliasing=side > size, preserve_range=True).astype(np.float32)


def from_working_size(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_working_size`: ``[..., size, size]`` -> ``[..., H, W]`` float32 (bilinear)."""
    from skimage.transform import resize

    array = np.asarray(image, dtype=np.float32)
    h, w = (int(v) for v in shape)
    side = max(h, w)
    if array.shape[-1] != side:
        out_shape = array.shape[:-2] + (side, side)
        array = resize(array, out_shape, order=1, anti_aliasing=array.shape[-1] > side, preserve_range=True)
        array = array.astype(np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    return np.ascontiguousarray(array[..., top:top + h, left:left + w])


def working_pixel_spacing(spacing_mm: tuple[float, float], shape: tuple[int, int], size: int) -> float:
    """Pixel spacing (mm) of the working-size image made from a ``shape`` slice with ``spacing_mm``."""
    h, w = shape
    return float(max(h * spacing_mm[0], w * spacing_mm[1]) / size)
