"""Measured sinograms (``.npy``/``.npz``) and their geometry files (``.toml``/``.json``).

Geometry file (flat keys; documented in ``docs/formats.md``)::

    type = "parallel"            # or "fan"
    views = 30
    detectors = 363              # optional; default ceil(image_size * sqrt(2))
    detector_spacing = 1.0       # optional; fan default: the magnification (one pixel at the axis)
    angle_range_deg = [0, 180]   # or angles_deg = [...], angle_range_rad / angles_rad,
                                 # or angle_range / angles (radians, as Geometry.to_dict writes them)
    source_distance = 1000.0     # fan only
    detector_distance = 500.0    # fan only
    pixel_spacing = 0.7          # optional: all lengths above are then in mm
    image_size = 256             # optional; default floor(detectors / sqrt(2))

The sinogram array is ``[views, detectors]`` or ``[slices, views, detectors]`` float; an ``.npz``
holds it under the key ``sinogram`` (or as its only array).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from operators.errors import GeometryError
from operators.geometry import Geometry, geometry_from_dict

from ..errors import ConfigError, InputError
from ..limits import check_sizes
from .plausibility import check_sinogram_values

_ANGLE_KEYS = ("angles_deg", "angle_range_deg", "angles_rad", "angle_range_rad", "angles", "angle_range")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _load_mapping(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"Geometry file {path} does not exist; pass a .toml or .json file (see docs/formats.md).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read geometry file {path}: {exc.strerror or exc}.") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            raise InputError(f"Geometry file {path} must end in .toml or .json, got {suffix or 'no suffix'!r}.")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"Geometry file {path} is not valid {suffix[1:].upper()}: {_one_line(exc)}") from exc
    if isinstance(data, dict) and isinstance(data.get("geometry"), dict):
        data = data["geometry"]
    if not isinstance(data, dict):
        raise InputError(f"Geometry file {path} must hold a table of fields, got {type(data).__name__}.")
    return data


def _number_list(value, key: str, path: Path) -> list[float]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise InputError(f"{path}: '{key}' must be a list of numbers, got {value!r}.")
    return [float(v) for v in value]


def geometry_from_mapping(data: dict, *, source: str = "geometry") -> tuple[Geometry, int | None]:
    """Build a geometry from a geometry-file mapping; returns ``(geometry, image_size or None)``."""
    path = Path(source)
    fields = dict(data)
    image_size = fields.pop("image_size", None)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise InputError(f"{source}: image_size must be a positive integer, got {image_size!r}.")
    given = [k for k in _ANGLE_KEYS if k in fields]
    if len(given) > 1:
        raise InputError(f"{source}: give only one of {list(_ANGLE_KEYS)}, got {given}.")
    if given:
        key = given[0]
        values = _number_list(fields.pop(key), key, path)
        in_radians = [math.radians(v) for v in values] if key.endswith("_deg") else values
        fields["angles" if key.startswith("angles") else "angle_range"] = tuple(in_radians)
        if key.startswith("angle_range") and len(in_radians) != 2:
            raise InputError(f"{source}: '{key}' must be [start, stop], got {values}.")
    kind = str(fields.get("type", "")).lower()
    if kind == "fan":
        missing = [k for k in ("source_distance", "detector_distance") if k not in fields]
        if missing:
            raise InputError(f"{source}: a fan-beam geometry needs {' and '.join(missing)} (source-to-axis and "
                             "axis-to-detector distances); defaults would silently reconstruct the wrong geometry.")
    for key in ("views", "detectors"):
        if key in fields and isinstance(fields[key], float) and fields[key].is_integer():
            fields[key] = int(fields[key])
    if "views" not in fields and "angles" in fields:
        fields["views"] = len(fields["angles"])
    try:
        geometry = geometry_from_dict(fields)
    except GeometryError as exc:
        raise InputError(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: invalid geometry ({_one_line(exc)}).") from exc
    try:
        check_sizes(views=geometry.views, detectors=geometry.detectors, image_size=image_size)
    except ConfigError as exc:
        raise InputError(f"{source}: {exc}") from exc
    return geometry, image_size


def read_geometry_file(path: str | os.PathLike) -> tuple[Geometry, int | None]:
    """Read a ``.toml``/``.json`` geometry file; returns ``(geometry, image_size or None)``."""
    file = Path(path).expanduser()
    return geometry_from_mapping(_load_mapping(file), source=str(file))


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"Sinogram file {path} does not exist; pass a .npy or .npz file.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":  # memory-mapped: the shape is checked before the data is read
            return np.load(path, allow_pickle=False, mmap_mode="r")
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "sinogram" in names:
                    return archive["sinogram"]
                if len(names) == 1:
                    return archive[names[0]]
                raise InputError(f"{path} holds arrays {names}; store the sinogram under the key 'sinogram'.")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError, TypeError) as exc:
        raise InputError(f"{path} is not a readable NumPy file ({_one_line(exc)}); it may be truncated.") from exc
    except Exception as exc:
        raise InputError(f"{path} is not a readable NumPy file ({_one_line(exc)}).") from exc
    raise InputError(f"Sinogram file {path} must end in .npy or .npz, got {suffix or 'no suffix'!r}.")


def default_image_size(geometry: Geometry) -> int:
    """Image size implied by a detector count: ``floor(detectors / sqrt(2))`` (at least 1)."""
    return max(1, int(math.floor(geometry.detectors / math.sqrt(2.0))))


def read_sinogram(path: str | os.PathLike, geometry_path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a sinogram and its geometry, checking that they agree.

    Returns
    -------
    (np.ndarray, Geometry)
        float32 ``[views, detectors]`` or ``[slices, views, detectors]`` and the geometry with
        ``detectors`` filled in (from the file or the image size).

    Raises
    ------
    InputError
        Unreadable files, non-numeric or non-finite data, negative line integrals far beyond noise, a
        fan geometry without distances, or a shape that disagrees with the geometry (the message names
        both). Unusual values (huge line integrals) are a :class:`~ctbird.io.plausibility.PlausibilityWarning`;
        record them with :func:`~ctbird.io.plausibility.collect_warnings`.
    """
    file = Path(path).expanduser()
    geometry, image_size = read_geometry_file(geometry_path)
    array = _load_array(file)
    if array.dtype.kind not in "fiu" or array.ndim not in (2, 3) or min(array.shape, default=0) < 1:
        raise InputError(f"{file}: expected a real [views, detectors] or [slices, views, detectors] array, "
                         f"got dtype {array.dtype} shape {array.shape}.")
    views, detectors = array.shape[-2:]
    if geometry.detectors is None:
        geometry = geometry.resolved(image_size) if image_size is not None else replace(geometry, detectors=detectors)
    if (views, detectors) != (geometry.views, geometry.detectors):
        raise InputError(f"{file} has {views} views x {detectors} detectors but the geometry {geometry_path} "
                         f"says {geometry.views} views x {geometry.detectors} detectors; they must match.")
    try:
        check_sizes(slices=array.shape[0] if array.ndim == 3 else 1)
    except ConfigError as exc:
        raise InputError(f"{file}: {exc}") from exc
    try:
        data = np.array(array, dtype=np.float32)
    except (ValueError, OSError) as exc:  # a memory-mapped file truncated after its header was read
        raise InputError(f"{file} is not a readable NumPy file ({_one_line(exc)}); it may be truncated.") from exc
    check_sinogram_values(data, str(file))
    return data, geometry
