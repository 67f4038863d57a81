"""Stacks of HU slices: their ``.npz`` file format and the one pre-processing that training and inference share.

File format (``.npz``, written by :func:`write_slice_stack`, read by :func:`read_slice_stack`):

* ``images``: ``[S, H, W]`` HU (int16 or float); the only required array;
* optional per-slice arrays of length ``S``: ``pixel_spacing_mm`` (float), ``labels`` (e.g. source file names),
  ``patient``, ``collection``, ``series`` (strings);
* optional ``description``: a 0-d string saying how the stack was made (quoted by the prior's model card).

A ``.npy`` file, or an ``.npz`` holding a single array, is read as ``images`` without metadata.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.images import AIR_HU, to_working_size
from .units import clip_hu

#: Optional per-slice arrays of a stack file, in the order they are written.
PER_SLICE_KEYS: tuple[str, ...] = ("pixel_spacing_mm", "labels", "patient", "collection", "series")


@dataclasses.dataclass(frozen=True)
class SliceStack:
    """HU slices ``images`` ``[S, H, W]`` with optional per-slice metadata (arrays of length ``S``) and a description."""

    images: np.ndarray
    pixel_spacing_mm: np.ndarray | None = None
    labels: np.ndarray | None = None
    patient: np.ndarray | None = None
    collection: np.ndarray | None = None
    series: np.ndarray | None = None
    description: str | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | list[int]) -> SliceStack:
        """The slices ``index`` (integer positions) with their metadata; the description is kept."""
        index = np.asarray(index, dtype=np.int64)
        per_slice = {key: value[index] for key in PER_SLICE_KEYS if (value := getattr(self, key)) is not None}
        return dataclasses.replace(self, images=self.images[index], **per_slice)


def read_slice_stack(path: str | os.PathLike) -> SliceStack:
    """Read an HU stack (``.npz`` in the format of this module, or ``.npy``); ``[H, W]`` arrays become one slice.

    Raises
    ------
    InputError
        Unreadable file, no ``images`` array among several, not a non-empty real ``[S, H, W]`` array, or a
        per-slice array whose length is not ``S``.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as a NumPy file: {exc}") from exc
    metadata: dict[str, object] = {}
    if isinstance(loaded, np.ndarray):
        images = loaded
    else:
        with loaded:
            if "images" in loaded.files:
                key = "images"
            elif len(loaded.files) == 1:
                key = loaded.files[0]
            else:
                raise InputError(f"{path} holds arrays {loaded.files}; expected one named 'images' "
                                 "(int/float HU, [slices, H, W]). Rename the HU stack to 'images'.")
            images = loaded[key]
            metadata = {name: loaded[name] for name in PER_SLICE_KEYS if name in loaded.files}
            if "description" in loaded.files:
                description = loaded["description"]
                if description.ndim != 0:
                    raise InputError(f"{path}: 'description' must be a single string, got shape {description.shape}.")
                metadata["description"] = str(description)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or 0 in images.shape:
        raise InputError(f"{path}: expected non-empty HU slices [slices, H, W] or [H, W], "
                         f"got an array of shape {tuple(images.shape)}")
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise InputError(f"{path}: expected real HU values, got dtype {images.dtype}")
    for name in PER_SLICE_KEYS:
        if name in metadata and metadata[name].shape != (images.shape[0],):
            raise InputError(f"{path}: '{name}' must hold one value per slice ({images.shape[0]}), "
                             f"got shape {metadata[name].shape}.")
    return SliceStack(images=images, **metadata)


def write_slice_stack(path: str | os.PathLike, stack: SliceStack) -> int:
    """Write ``stack`` as a compressed ``.npz`` (images as int16 when they are whole HU numbers); returns its size in bytes."""
    images = np.asarray(stack.images)
    if np.issubdtype(images.dtype, np.floating) and np.array_equal(images, np.round(images)) \
            and images.min(initial=0) >= np.iinfo(np.int16).min and images.max(initial=0) <= np.iinfo(np.int16).max:
        images = images.astype(np.int16)
    arrays: dict[str, np.ndarray] = {"images": images}
    arrays.update({key: np.asarray(value) for key in PER_SLICE_KEYS if (value := getattr(stack, key)) is not None})
    if stack.description is not None:
        arrays["description"] = np.array(stack.description)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path.stat().st_size


def working_slices(hu: np.ndarray, size: int) -> tuple[np.ndarray, str]:
    """The one pre-processing of CT slices for the prior, in training and at inference.

    ``hu`` ``[..., H, W]`` is clipped to the prior's HU window (:func:`ctbird.units.clip_hu`: outside-FOV padding
    such as -2048 becomes air) and brought to ``[..., size, size]`` float32 HU by
    :func:`ctbird.io.to_working_size`: a non-square slice is first padded to a square with air (-1024 HU),
    centred; an exact ``2 * size`` square is 2x2 block-averaged; other sides are resized with anti-aliased
    bilinear interpolation.

    Padding, not cropping: the padded square keeps the whole field of view, so no anatomy is cut off, the
    reconstruction grid covers everything the detector saw, and the pixel spacing stays isotropic. Air is what
    surrounds the body in a CT slice anyway, and training on slices padded the same way shows the prior exactly
    what inference will show it (a centre crop in training but padding at inference would not).

    Returns
    -------
    slices : np.ndarray
        float32 ``[..., size, size]`` HU.
    description : str
        What was done, e.g. ``"pad to 512x512 with air, 2x2 block average"`` (``"none"`` when nothing).
    """
    hu = np.asarray(hu)
    if hu.ndim < 2 or min(hu.shape[-2:]) < 1:
        raise InputError(f"working_slices expects slices [..., H, W], got shape {hu.shape}.")
    height, width = hu.shape[-2:]
    side = max(height, width)
    steps = [f"pad to {side}x{side} with air"] if height != width else []
    if side == 2 * size:
        steps.append("2x2 block average")
    elif side != size:
        steps.append(f"anti-aliased bilinear resize {side}->{size}")
    return to_working_size(clip_hu(hu.astype(np.float32, copy=False)), size, fill=AIR_HU), ", ".join(steps) or "none"


__all__ = ["SliceStack", "PER_SLICE_KEYS", "read_slice_stack", "write_slice_stack", "working_slices"]
