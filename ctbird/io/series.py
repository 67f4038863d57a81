"""Whole volumes in and out: slice selection, 3-D readers and derived DICOM series.

Reading
-------
:func:`read_volume` reads any volume input into a :class:`VolumeInput`:

* a DICOM series folder or a (multi-frame) DICOM file, through :func:`ctbird.io.dicom.read_dicom` (decoding,
  rescaling, series selection). Slices are ordered by ``ImagePositionPatient`` projected on the slice normal
  (``row x column`` of ``ImageOrientationPatient``), whatever the file names or the frame order of an Enhanced CT
  file (per-frame functional groups are read where present); each slice keeps its own header, position,
  orientation and pixel spacing;
* a 3-D ``.npy``/``.npz`` HU image ``[S, H, W]`` (a 2-D ``[H, W]`` image is a one-slice volume);
* a sinogram stack ``[slices, views, detectors]`` with its geometry file, through
  :func:`ctbird.io.sinogram.read_sinogram` (which loads the whole stack).

:func:`parse_slices` turns ``all``, ``START:STOP`` or ``i,j,k`` into sorted unique indices.

Writing
-------
:func:`write_derived_series` writes one derived CT image per slice through
:func:`ctbird.io.dicom.write_derived_dicom`, all with one new ``SeriesInstanceUID``, the source's
``StudyInstanceUID`` and ``FrameOfReferenceUID`` (one new pair per volume for non-DICOM inputs or sources lacking
them; with ``anonymize`` one :class:`~ctbird.io.deid.Deidentifier` maps them consistently), the source positions,
orientation and thickness, and ``InstanceNumber`` in slice order, so a viewer
opens the folder as one series. :func:`write_volume_npy` writes an ``[S, H, W]`` float32 HU volume slice by slice.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import ConfigError, InputError, OutputError
from .atomic import atomic_file
from .deid import Deidentifier
from .dicom import read_dicom, write_derived_dicom
from .sinogram import default_image_size, read_geometry_file, read_sinogram

NUMPY_SUFFIXES = (".npy", ".npz")
#: Orientation of synthetic headers (non-DICOM inputs): axial, rows along +x, columns along +y.
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# --------------------------------------------------------------------------- slice selection
_RANGE = re.compile(r"^\s*(-?\d*)\s*:\s*(-?\d*)\s*$")


def parse_slices(text: str | Sequence[int] | None, count: int) -> list[int]:
    """Slice indices selected by ``text`` in a volume of ``count`` slices, sorted and unique.

    ``text`` is ``"all"`` (or ``None``), ``"START:STOP"`` (Python half-open range; either end may be omitted,
    negative ends count from the end), ``"i,j,k"`` (indices, negative from the end), or a sequence of ints.

    Raises
    ------
    ConfigError
        Unparsable text, an index out of ``0..count-1`` or an empty selection (one line naming the valid range).
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ConfigError(f"The volume has no slices (count={count!r}).")
    count = int(count)
    valid = f"valid: 0..{count - 1}, 'all', 'START:STOP' or 'i,j,k'"
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return list(range(count))
    if isinstance(text, str):
        match = _RANGE.match(text)
        if match:
            start_text, stop_text = match.groups()
            try:
                start = int(start_text) if start_text not in ("", "-") else 0
                stop = int(stop_text) if stop_text not in ("", "-") else count
            except ValueError:
                raise ConfigError(f"--slices {text!r} is not a range ({valid}).") from None
            start, stop = (v + count if v < 0 else v for v in (start, stop))
            if not (0 <= start < count) or not (0 < stop <= count) or stop <= start:
                raise ConfigError(f"--slices {text!r} selects no slice of a {count}-slice volume ({valid}).")
            return list(range(start, stop))
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [int(p) for p in parts if p]
        except ValueError:
            raise ConfigError(f"--slices {text!r} is not understood ({valid}).") from None
        if not values:
            raise ConfigError(f"--slices {text!r} selects no slice ({valid}).")
    else:
        values = list(text)
        if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"slices must be a non-empty sequence of integers, got {text!r}.")
    out = []
    for value in values:
        index = int(value) + count if value < 0 else int(value)
        if not 0 <= index < count:
            raise ConfigError(f"Slice {value} is out of range for a {count}-slice volume ({valid}).")
        out.append(index)
    return sorted(set(out))


# --------------------------------------------------------------------------- reading
@dataclass
class VolumeInput:
    """A volume to reconstruct (images with ground truth, or measured sinograms).

    Attributes
    ----------
    kind : {"dicom", "image", "sinogram"}
    hu : np.ndarray or None
        ``[S, H, W]`` HU (``dicom``/``image``; float32, or the ``.npy``'s dtype memory-mapped), sorted along the
        slice normal.
    sinograms : np.ndarray or None
        ``[S, views, detectors]`` float32 line integrals (``sinogram``).
    geometry, image_size
        Acquisition geometry and reconstruction grid side (``sinogram`` inputs).
    pixel_spacing_mm : (float, float)
        In-plane (row, column) spacing of slice 0.
    positions_mm : np.ndarray ``[S, 3]`` or None
        ``ImagePositionPatient`` of each slice (DICOM).
    orientation : tuple of 6 floats
        ``ImageOrientationPatient`` (row direction, column direction).
    slice_spacing_mm : float
        Distance between neighbouring slice centres along the normal (median; ``SliceThickness`` or 1.0 mm when
        unknown).
    headers : list of pydicom.Dataset or None
        One header per slice (DICOM), for the derived series.
    input_paths : list of Path
        What was read (never written).
    """

    kind: str
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    orientation: tuple[float, ...] = AXIAL_ORIENTATION
    hu: np.ndarray | None = None
    sinograms: np.ndarray | None = None
    geometry: object = None
    image_size: int | None = None
    positions_mm: np.ndarray | None = None
    headers: list[Dataset] | None = field(default=None, repr=False)
    input_paths: list[Path] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int((self.hu if self.hu is not None else self.sinograms).shape[0])


def _floats(value, count: int) -> np.ndarray | None:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except Exception:
        return None
    return array if array.shape == (count,) and np.isfinite(array).all() else None


def _slice_spacing(positions: np.ndarray | None, normal: np.ndarray, headers: list[Dataset]) -> float:
    if positions is not None and len(positions) > 1:
        steps = np.abs(np.diff(positions @ normal))
        steps = steps[steps > 1e-6]
        if steps.size:
            return float(np.median(steps))
    thickness = headers[0].get("SliceThickness") if headers else None
    try:
        value = float(thickness)
        if np.isfinite(value) and value > 0:
            return value
    except (TypeError, ValueError):
        pass
    return 1.0


def read_dicom_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> VolumeInput:
    """Read a DICOM series folder or a (multi-frame) file as a volume sorted along the slice normal."""
    volume = read_dicom(path, series_uid=series_uid)
    headers = [volume.header(i) for i in range(volume.n_slices)]
    orientation = _floats(headers[0].get("ImageOrientationPatient", AXIAL_ORIENTATION), 6)
    if orientation is None:
        orientation = np.asarray(AXIAL_ORIENTATION)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [_floats(h.get("ImagePositionPatient", ()), 3) for h in headers]
    positions_mm = np.stack(positions) if all(p is not None for p in positions) else None
    hu = volume.hu
    if positions_mm is not None and len(headers) > 1:
        depth = positions_mm @ normal
        if len(set(np.round(depth, 6).tolist())) != len(depth):
            raise InputError(f"{path}: several slices share one position along the slice normal; pass one series "
                             "(or one acquisition) at a time.")
        order = np.argsort(depth, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):  # multi-frame files keep their frame order on read
            hu = hu[order]
            headers = [headers[i] for i in order]
            positions_mm = positions_mm[order]
    return VolumeInput(kind="dicom", hu=hu, pixel_spacing_mm=volume.pixel_spacing_mm,
                       slice_spacing_mm=_slice_spacing(positions_mm, normal, headers),
                       orientation=tuple(float(v) for v in orientation), positions_mm=positions_mm, headers=headers,
                       input_paths=[Path(path)])


def read_hu_stack(path: str | os.PathLike, *, pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
                  slice_spacing_mm: float = 1.0) -> VolumeInput:
    """Read a ``.npy``/``.npz`` HU image ``[S, H, W]`` (or ``[H, W]``; ``.npz`` key ``hu``, ``images`` or the only
    array). ``.npy`` files are memory-mapped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{file} does not exist; pass a .npy/.npz HU volume [S, H, W].")
    try:
        if file.suffix.lower() == ".npy":
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(file, allow_pickle=False) as archive:
                names = list(archive.files)
                key = "hu" if "hu" in names else "images" if "images" in names else names[0] if len(names) == 1 else None
                if key is None:
                    raise InputError(f"{file} holds {names}; store the HU volume under 'hu'.")
                array = archive[key]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{file} is not a readable NumPy file ({' '.join(str(exc).split())[:160]}).") from exc
    if array.dtype.kind not in "fiu" or array.ndim not in (2, 3) or min(array.shape) < 1:
        raise InputError(f"{file}: expected an HU volume [S, H, W] or image [H, W], got dtype {array.dtype} "
                         f"shape {array.shape}. For a sinogram pass --geometry-file.")
    stack = array[None] if array.ndim == 2 else array
    return VolumeInput(kind="image", hu=stack, pixel_spacing_mm=tuple(float(v) for v in pixel_spacing_mm),
                       slice_spacing_mm=float(slice_spacing_mm), input_paths=[file])


def read_sinogram_stack(path: str | os.PathLike, geometry_path: str | os.PathLike, *,
                        slice_spacing_mm: float | None = None) -> VolumeInput:
    """Read a ``[slices, views, detectors]`` (or ``[views, detectors]``) sinogram and its geometry file.

    The array is read through :func:`ctbird.io.sinogram.read_sinogram` (which checks it against the geometry).
    """
    data, geometry = read_sinogram(path, geometry_path)
    _, image_size = read_geometry_file(geometry_path)
    stack = data[None] if data.ndim == 2 else data
    pixel = float(geometry.pixel_spacing or 1.0)
    return VolumeInput(kind="sinogram", sinograms=stack, geometry=geometry,
                       image_size=image_size or default_image_size(geometry), pixel_spacing_mm=(pixel, pixel),
                       slice_spacing_mm=float(slice_spacing_mm or pixel), input_paths=[Path(path), Path(geometry_path)])


def read_volume(path: str | os.PathLike, *, geometry_path: str | os.PathLike | None = None,
                series_uid: str | None = None) -> VolumeInput:
    """Read any volume input: a sinogram stack when ``geometry_path`` is given, a ``.npy``/``.npz`` HU stack,
    else DICOM (series folder, single- or multi-frame file)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"{file} does not exist; pass a DICOM series folder or file, an HU .npy volume or a sinogram.")
    if geometry_path is not None:
        if file.suffix.lower() not in NUMPY_SUFFIXES:
            raise InputError(f"A geometry file goes with a .npy/.npz sinogram, got {file.name}.")
        return read_sinogram_stack(file, geometry_path)
    if file.is_file() and file.suffix.lower() in NUMPY_SUFFIXES:
        return read_hu_stack(file)
    return read_dicom_volume(file, series_uid=series_uid)


# --------------------------------------------------------------------------- writing
def slice_headers(volume: VolumeInput, indices: Sequence[int], *, shape: tuple[int, int]) -> list[Dataset]:
    """Source headers of the selected slices, for :func:`write_derived_series`.

    DICOM: the source headers (copies carrying one shared new ``StudyInstanceUID``/``FrameOfReferenceUID`` where the
    source lacks them, so the slices still form one series). Other inputs: synthetic ones (one new study, positions
    along z) that a viewer can stack.
    """
    from pydicom.uid import generate_uid

    if volume.headers is not None:
        headers = [volume.headers[i] for i in indices]
        missing = [key for key in ("StudyInstanceUID", "FrameOfReferenceUID")
                   if any(not str(h.get(key) or "").strip() for h in headers)]
        if not missing:
            return headers
        shared = {key: generate_uid() for key in missing}
        out = []
        for header in headers:
            filled = copy.deepcopy(header)  # Dataset.copy() would share the elements with the source
            for key, value in shared.items():
                if not str(filled.get(key) or "").strip():
                    setattr(filled, key, value)
            out.append(filled)
        return out
    study, frame = generate_uid(), generate_uid()
    rows, cols = shape
    out = []
    for index in indices:
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                        "ReferringPhysicianName", "PositionReferenceIndicator"):
            setattr(ds, keyword, "")
        ds.StudyInstanceUID = study
        ds.FrameOfReferenceUID = frame
        ds.ImageOrientationPatient = list(AXIAL_ORIENTATION)
        # centre the image on the axis: the position is the centre of the top-left pixel
        ds.ImagePositionPatient = [-(cols - 1) / 2 * volume.pixel_spacing_mm[1],
                                   -(rows - 1) / 2 * volume.pixel_spacing_mm[0], index * volume.slice_spacing_mm]
        ds.SliceThickness = volume.slice_spacing_mm
        ds.InstanceNumber = index + 1
        out.append(ds)
    return out


def write_derived_series(images: Sequence[np.ndarray] | Callable[[int], np.ndarray], headers: Sequence[Dataset],
                         folder: str | os.PathLike, *, method_name: str, pixel_spacing_mm: tuple[float, float],
                         anonymize: bool = False, window: tuple[float, float] = (-1000.0, 1000.0),
                         description: str | None = None, deidentifier: Deidentifier | None = None,
                         burned_in_annotation: bool = False) -> str:
    """Write a derived DICOM series: one file ``IMG00001.dcm``... per slice.

    Parameters
    ----------
    images : sequence of ``[H, W]`` HU arrays, or ``f(k) -> [H, W]``
        Slice ``k`` of the output (read one at a time, so a memory-mapped volume streams).
    headers : sequence of pydicom.Dataset
        Source header of each slice (:func:`slice_headers`), in slice order.
    folder : path
        Existing (staging) folder.
    method_name, pixel_spacing_mm, anonymize, window, description, burned_in_annotation
        As for :func:`ctbird.io.dicom.write_derived_dicom`.
    deidentifier : Deidentifier, optional
        The run's UID mapper under ``anonymize`` (pass one to share it between several series of a run); one new
        mapper for the series if omitted. Either way every slice maps to the same study and frame of reference.

    Returns
    -------
    str
        The new ``SeriesInstanceUID``.
    """
    from pydicom.uid import generate_uid

    out = Path(folder)
    if not out.is_dir():
        raise OutputError(f"Cannot write the series into {out}: not a folder.")
    get = images if callable(images) else images.__getitem__
    series_uid = generate_uid()
    mapper = (deidentifier or Deidentifier()) if anonymize else None
    for k, header in enumerate(headers):
        write_derived_dicom(np.asarray(get(k), dtype=np.float32), header, out / f"IMG{k + 1:05d}.dcm",
                            method_name=method_name, pixel_spacing_mm=pixel_spacing_mm, anonymize=anonymize,
                            series_uid=series_uid, window=window, description=description, instance_number=k + 1,
                            deidentifier=mapper, burned_in_annotation=burned_in_annotation)
    return series_uid


def write_volume_npy(images: Sequence[np.ndarray] | Callable[[int], np.ndarray], count: int,
                     path: str | os.PathLike) -> None:
    """Write ``count`` ``[H, W]`` slices as one float32 ``[S, H, W]`` ``.npy`` (atomically, one slice in memory)."""
    get = images if callable(images) else images.__getitem__
    first = np.asarray(get(0), dtype=np.float32)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (int(count), *first.shape)}
    with atomic_file(path) as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for k in range(count):
            image = first if k == 0 else np.asarray(get(k), dtype=np.float32)
            if image.shape != first.shape:
                raise OutputError(f"Slice {k} has shape {image.shape}, slice 0 {first.shape}; a volume needs one size.")
            handle.write(np.ascontiguousarray(image).tobytes())


__all__ = ["VolumeInput", "parse_slices", "read_volume", "read_dicom_volume", "read_hu_stack", "read_sinogram_stack",
           "slice_headers", "write_derived_series", "write_volume_npy", "AXIAL_ORIENTATION"]
