"""DICOM CT input and derived-image output.

Reading
-------
:func:`read_dicom` accepts a single file, a folder holding one series, or a multi-frame file.

* Slices of a folder are ordered by ``ImagePositionPatient`` projected on the slice normal
  (``row x column`` of ``ImageOrientationPatient``), falling back to ``InstanceNumber``, then to
  the file name. Files in the folder that are not DICOM (README, DICOMDIR without pixels...) are
  skipped.
* A folder holding several series is an error listing each ``SeriesInstanceUID`` with its slice
  count; pass ``series_uid=`` (CLI: ``--series``) to pick one. Guessing would silently reconstruct
  the wrong images.
* ``RescaleSlope``/``RescaleIntercept`` are applied (per-frame functional groups first, then shared
  groups, then the top level). Missing tags mean slope 1, intercept 0 and emit a ``UserWarning``
  (some scanners, e.g. GE HiSpeed, store HU directly with slope 1 / intercept 0).
* Missing ``PixelSpacing`` means 1.0 mm with a ``UserWarning``.
* Values outside the field of view (-2048, -3024 HU...) are kept; clip downstream with
  :func:`ctbird.units.clip_hu`.
* Compressed transfer syntaxes are decoded through pydicom's pixel decoders; JPEG / JPEG-LS /
  JPEG 2000 need the ``jpeg`` extra (``pip install "ctbird[jpeg]"``).

Every failure (missing file, non-DICOM, corrupt or truncated file, no pixel data, non-CT
modality, colour data, inconsistent series) raises :class:`ctbird.errors.InputError` with a
one-line message.

Writing
-------
:func:`write_derived_dicom` writes one reconstructed slice as a CT ``DERIVED\\SECONDARY`` image with
new SOP Instance / Series UIDs, a ``SourceImageSequence`` pointing at the source slice, int16 storage
with ``RescaleSlope``/``RescaleIntercept`` in HU, explicit VR little endian and a valid file meta; every
Type 1/2 attribute of the CT Image IOD is present (validated with dicom3tools' ``dciodvfy``).
With ``anonymize`` the carried header goes through :class:`ctbird.io.deid.Deidentifier`.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from ..errors import InputError, OutputError
from .atomic import write_bytes_atomic
from .deid import Deidentifier, mark_deidentified, valid_uid_or_replacement
from .plausibility import check_hu_values, check_rescale_slope, collect_warnings

#: Largest accepted image side and frame count (guards against absurd headers).
MAX_SIDE = 16384
MAX_FRAMES = 20000
JPEG_EXTRA_HINT = 'pip install "ctbird[jpeg]"'

_PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                 "PatientWeight", "PatientSize", "OtherPatientIDs", "OtherPatientNames", "EthnicGroup",
                 "PatientComments", "PatientAddress", "PatientTelephoneNumbers")
_STUDY_TAGS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
               "ReferringPhysicianName", "StudyDescription", "PhysiciansOfRecord")
_CARRIED_TAGS = _PATIENT_TAGS + _STUDY_TAGS + (
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "InstitutionName",
    "StationName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions", "BodyPartExamined",
    "PatientPosition", "SliceThickness", "KVP", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceLocation", "AcquisitionNumber", "InstanceNumber", "SpecificCharacterSet",
)


@dataclass
class CTVolume:
    """A CT volume read from DICOM.

    Attributes
    ----------
    hu : np.ndarray
        float32 ``[S, H, W]`` in Hounsfield units (outside-FOV padding kept).
    pixel_spacing_mm : (float, float)
        (row, column) spacing in mm.
    datasets : list of pydicom.Dataset
        Headers (pixel data removed): one per slice for a series, one for a multi-frame file.
    source_paths : list of Path
        The file of each entry of ``datasets``.
    warnings : list of str
        Unusual but possible values met while reading (missing rescale, extreme slope or HU...), also
        emitted as ``UserWarning``; for the terminal and ``metrics.json``.
    """

    hu: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    datasets: list[Dataset] = field(repr=False)
    source_paths: list[Path]
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    def header(self, index: int) -> Dataset:
        """The header of slice ``index`` (for multi-frame files the frame's position is filled in)."""
        if len(self.datasets) == self.n_slices:
            return self.datasets[index]
        ds = self.datasets[0]
        flat = Dataset()
        for keyword in _CARRIED_TAGS + ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality",
                                        "WindowCenter", "WindowWidth"):
            if keyword in ds:
                setattr(flat, keyword, ds.data_element(keyword).value)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            value = _functional_group_value(ds, index, keyword)
            if value is not None:
                setattr(flat, keyword, value)
        flat.InstanceNumber = index + 1
        flat.ReferencedFrameNumber = index + 1
        return flat


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


_GROUP_SEQUENCES = {
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
}


def _functional_group_value(ds: Dataset, frame: int, keyword: str):
    """``keyword`` for ``frame`` from per-frame groups, shared groups, then the top level (or None)."""
    sequence = _GROUP_SEQUENCES[keyword]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    candidates = []
    if per_frame is not None and frame < len(per_frame):
        candidates.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        candidates.append(shared[0])
    for group in candidates:
        inner = group.get(sequence)
        if inner and keyword in inner[0]:
            return inner[0].data_element(keyword).value
    return ds.get(keyword)


def _read_dataset(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError as exc:
        raise InputError(f"{path} is not a DICOM file ({_one_line(exc)}).") from exc
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or _one_line(exc)}.") from exc
    except Exception as exc:  # pydicom raises many types on corrupt data
        raise InputError(f"{path} is a corrupt or truncated DICOM file ({_one_line(exc)}).") from exc


def _check_ct_image(ds: Dataset, path: Path) -> None:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality != "CT":
        raise InputError(f"{path} is an {modality} image; ctbird reconstructs CT (Modality must be CT).")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path} holds no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')}); pass a CT image file.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:
        raise InputError(f"{path} has missing or invalid image size tags (Rows/Columns): {_one_line(exc)}.") from exc
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise InputError(f"{path} has an invalid image size {rows}x{cols} (expected 1..{MAX_SIDE} per side).")
    if not 1 <= frames <= MAX_FRAMES:
        raise InputError(f"{path} has an invalid NumberOfFrames {frames} (expected 1..{MAX_FRAMES}).")
    if samples != 1:
        raise InputError(f"{path} has {samples} samples per pixel (colour); CT images are greyscale.")


def _decode_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored values as ``[frames, rows, cols]`` (before rescale)."""
    try:
        transfer_syntax = ds.file_meta.TransferSyntaxUID
    except AttributeError:
        transfer_syntax = None
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        try:
            decoder = pydicom.pixels.get_decoder(transfer_syntax)
        except NotImplementedError as exc:
            raise InputError(f"{path} uses the unsupported transfer syntax {transfer_syntax.name}.") from exc
        if not decoder.is_available:
            raise InputError(
                f"{path} is compressed ({transfer_syntax.name}) and no decoder is installed; "
                f"run: {JPEG_EXTRA_HINT}"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(ds.pixel_array)
    except MemoryError as exc:
        raise InputError(f"{path}: pixel data too large to decode ({ds.Rows}x{ds.Columns}).") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot decode the pixel data ({_one_line(exc)}); the file may be corrupt or truncated.") from exc
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if pixels.shape == (rows, cols) and frames == 1:
        pixels = pixels[None]
    if pixels.shape != (frames, rows, cols):
        raise InputError(f"{path}: decoded pixel array has shape {pixels.shape}, header says {frames}x{rows}x{cols}.")
    return pixels


def _float_tag(value, default: float, what: str, path: Path) -> float:
    try:
        number = float(value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value)
    except Exception as exc:
        raise InputError(f"{path}: invalid {what} {value!r}.") from exc
    if not np.isfinite(number):
        raise InputError(f"{path}: {what} is not finite ({value!r}).")
    if what == "RescaleSlope":
        check_rescale_slope(number, str(path))
    return number


def _to_hu(pixels: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    out = np.empty(pixels.shape, dtype=np.float32)
    warned = False
    for frame in range(pixels.shape[0]):
        slope = _functional_group_value(ds, frame, "RescaleSlope")
        intercept = _functional_group_value(ds, frame, "RescaleIntercept")
        if (slope is None or intercept is None) and not warned:
            warnings.warn(f"{path} has no RescaleSlope/RescaleIntercept; assuming slope 1, intercept 0 "
                          "(stored values are HU).", UserWarning, stacklevel=4)
            warned = True
        slope_f = 1.0 if slope is None else _float_tag(slope, 1.0, "RescaleSlope", path)
        intercept_f = 0.0 if intercept is None else _float_tag(intercept, 0.0, "RescaleIntercept", path)
        with np.errstate(over="ignore", invalid="ignore"):
            out[frame] = pixels[frame].astype(np.float64) * slope_f + intercept_f
    check_hu_values(out, str(path))
    return out


def _pixel_spacing(ds: Dataset, path: Path) -> tuple[float, float]:
    spacing = _functional_group_value(ds, 0, "PixelSpacing")
    if spacing is None:
        spacing = ds.get("ImagerPixelSpacing")
    if spacing is None:
        warnings.warn(f"{path} has no PixelSpacing; assuming 1.0 mm.", UserWarning, stacklevel=4)
        return (1.0, 1.0)
    try:
        row, col = (float(v) for v in spacing)
    except Exception as exc:
        raise InputError(f"{path}: invalid PixelSpacing {spacing!r} (expected two numbers in mm).") from exc
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        raise InputError(f"{path}: invalid PixelSpacing {spacing!r} (expected two positive numbers in mm).")
    return (row, col)


def _slice_position(ds: Dataset) -> float | None:
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except Exception:
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    value = float(position @ normal)
    return value if np.isfinite(value) else None


def _sort_key_builder(datasets: list[Dataset], paths: list[Path]):
    positions = [_slice_position(ds) for ds in datasets]
    if all(p is not None for p in positions) and len(set(positions)) == len(positions):
        return positions
    numbers = []
    for ds in datasets:
        try:
            numbers.append(int(ds.InstanceNumber))
        except Exception:
            numbers = None
            break
    if numbers is not None and len(set(numbers)) == len(numbers):
        return numbers
    return [str(p.name) for p in paths]


def _check_bits(ds: Dataset, path: Path) -> None:
    """Raise when ``BitsStored``/``HighBit`` contradict ``BitsAllocated`` or the stored (native) values."""
    try:
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        high_bit = int(ds.get("HighBit", stored - 1))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    except Exception as exc:
        raise InputError(f"{path}: invalid BitsAllocated/BitsStored/HighBit ({_one_line(exc)}).") from exc
    if not 1 <= stored <= allocated or high_bit != stored - 1:
        raise InputError(f"{path}: BitsStored {stored} / HighBit {high_bit} contradict BitsAllocated {allocated}; "
                         "the header is corrupt.")
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if stored == allocated or allocated not in (8, 16, 32) or "PixelData" not in ds or \
            (transfer is not None and transfer.is_compressed):
        return
    if any(0x6000 <= element.tag.group <= 0x601E for element in ds):
        return  # overlays may live in the unused high bits (retired usage): nothing to check
    order = "<" if transfer is None or transfer.is_little_endian else ">"
    raw = np.frombuffer(ds.PixelData, dtype=np.dtype(f"{order}u{allocated // 8}"),
                        count=len(ds.PixelData) // (allocated // 8)).astype(np.uint64)
    if raw.size == 0:
        return
    high = raw >> np.uint64(stored)
    all_ones = np.uint64((1 << (allocated - stored)) - 1)
    sign_bit = (raw >> np.uint64(stored - 1)) & np.uint64(1)
    # unused bits must be zero, or (signed data) a sign extension of a negative value
    fine = (high == 0) | (signed & (high == all_ones) & (sign_bit == 1))
    if not bool(fine.all()):
        bad = raw[~fine]
        raise InputError(f"{path}: stored values use bits above BitsStored {stored} (e.g. raw {int(bad.max())} with "
                         f"BitsAllocated {allocated}); the header would relabel the pixel range (corrupt BitsStored).")


def _load_file(path: Path) -> tuple[np.ndarray, Dataset]:
    ds = _read_dataset(path)
    _check_ct_image(ds, path)
    _check_bits(ds, path)
    hu = _to_hu(_decode_pixels(ds, path), ds, path)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    return hu, ds


def _list_series(series: Counter, shown: int = 5) -> str:
    """``uid (n files), ...`` for the largest series, with a count of the rest."""
    listed = ", ".join(f"{uid or '<no SeriesInstanceUID>'} ({n} files)" for uid, n in series.most_common(shown))
    return listed + (f" and {len(series) - shown} more" if len(series) > shown else "")


def read_dicom(path: str | os.PathLike, *, series_uid: str | None = None) -> CTVolume:
    """Read a CT DICOM file, series folder or multi-frame file.

    Parameters
    ----------
    path : path
        A DICOM file (single- or multi-frame) or a folder holding one series.
    series_uid : str, optional
        For folders holding several series: the ``SeriesInstanceUID`` to read.

    Returns
    -------
    CTVolume
        ``hu`` float32 ``[S, H, W]``, spacing in mm, headers and source paths.

    Raises
    ------
    InputError
        On any unusable input (see the module docstring).
    """
    with collect_warnings() as notes:
        try:
            volume = _read_dicom(Path(path).expanduser(), series_uid)
        except InputError:
            raise
        except Exception as exc:  # corrupt headers make pydicom raise almost anything
            raise InputError(f"{path}: corrupt or unsupported DICOM data ({_one_line(exc)}).") from exc
    volume.warnings = notes
    return volume


def _read_dicom(root: Path, series_uid: str | None) -> CTVolume:
    if not root.exists():
        raise InputError(f"{root} does not exist; pass a DICOM file or a folder holding one series.")
    if root.is_file():
        hu, ds = _load_file(root)
        return CTVolume(hu=hu, pixel_spacing_mm=_pixel_spacing(ds, root), datasets=[ds], source_paths=[root])
    if not root.is_dir():
        raise InputError(f"{root} is neither a file nor a folder.")
    candidates = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    headers: list[tuple[Path, Dataset]] = []
    for candidate in candidates:
        try:
            header = pydicom.dcmread(candidate, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        except Exception as exc:
            raise InputError(f"{candidate} is a corrupt or truncated DICOM file ({_one_line(exc)}).") from exc
        if "Rows" not in header and "SeriesInstanceUID" not in header:
            continue  # DICOMDIR and other non-image objects
        headers.append((candidate, header))
    if not headers:
        raise InputError(f"{root} holds no DICOM image files.")
    series = Counter(str(h.get("SeriesInstanceUID", "")) for _, h in headers)
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"{root} has no series {series_uid}; it holds: {_list_series(series)}.")
        headers = [(p, h) for p, h in headers if str(h.get("SeriesInstanceUID", "")) == series_uid]
    elif len(series) > 1:
        raise InputError(f"{root} holds {len(series)} series: {_list_series(series)}; pick one with --series UID "
                         "(series_uid=...) or separate them into folders.")
    loaded = [(p, *_load_file(p)) for p, _ in headers]
    if len(loaded) > 1 and any(hu.shape[0] != 1 for _, hu, _ in loaded):
        raise InputError(f"{root} mixes multi-frame files with other files; pass the multi-frame file itself.")
    shapes = {hu.shape[1:] for _, hu, _ in loaded}
    if len(shapes) > 1:
        raise InputError(f"{root}: slices have different sizes {sorted(shapes)}; a series must have one image size.")
    positions = [_slice_position(ds) for _, _, ds in loaded]
    if len(loaded) > 1 and all(p is not None for p in positions):
        seen: dict[float, Path] = {}
        for (file, _, _), position in zip(loaded, positions):
            key = round(position, 3)
            if key in seen:
                raise InputError(f"{root}: {seen[key].name} and {file.name} are at the same slice position "
                                 f"({position:g} mm); a series has one slice per position (duplicate or mixed "
                                 "acquisitions?).")
            seen[key] = file
    keys = _sort_key_builder([ds for _, _, ds in loaded], [p for p, _, _ in loaded])
    order = sorted(range(len(loaded)), key=lambda i: keys[i])
    paths = [loaded[i][0] for i in order]
    datasets = [loaded[i][2] for i in order]
    hu = np.concatenate([loaded[i][1] for i in order], axis=0)
    return CTVolume(hu=hu, pixel_spacing_mm=_pixel_spacing(datasets[0], paths[0]), datasets=datasets, source_paths=paths)


def _source_uids(source: Dataset | None) -> tuple[str, str]:
    """SOP Class/Instance UIDs of the source (the file meta's when the dataset's are empty)."""
    if source is None:
        return "", ""
    meta = getattr(source, "file_meta", None) or Dataset()
    sop_class = str(source.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    sop_instance = str(source.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "")
    return sop_class, sop_instance


def _storage(hu: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values with slope/intercept: 1-HU steps when the range fits, else scaled."""
    finite = np.nan_to_num(hu.astype(np.float64), nan=-1024.0, posinf=32767.0, neginf=-32768.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= -32768 and hi <= 32767:
        slope, intercept = 1.0, 0.0
    else:
        intercept = (lo + hi) / 2.0
        slope = max((hi - lo) / 65534.0, 1e-6)
    stored = np.clip(np.round((finite - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def _format_ds(value: float) -> str:
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"[:16]


#: Type 2 attributes of the CT Image IOD's Patient, General Study, General Series, Frame of Reference,
#: General Equipment, General Image, Image Plane and CT Image modules: present, empty where unknown.
TYPE2_DEFAULTS = {
    "PatientName": "", "PatientID": "", "PatientBirthDate": "", "PatientSex": "",
    "StudyDate": "", "StudyTime": "", "ReferringPhysicianName": "", "StudyID": "", "AccessionNumber": "",
    "Laterality": "", "PatientPosition": "", "PositionReferenceIndicator": "", "Manufacturer": "",
    "SliceThickness": None, "KVP": None, "AcquisitionNumber": None, "ContentDate": "", "ContentTime": "",
}
#: BodyPartExamined values of unpaired structures (PS3.16 Annex L; the ones dciodvfy knows): Laterality
#: (General Series, Type 2C) must then be absent. For any other or unknown body part it is present, empty.
UNPAIRED_BODY_PARTS = frozenset(
    "ABDOMEN BRAIN CHEST HEAD NECK PELVIS SPINE CSPINE TSPINE LSPINE SSPINE COCCYX HEART LIVER PANCREAS SPLEEN "
    "STOMACH BLADDER PROSTATE UTERUS HEADNECK CHESTABDOMEN CHESTABDPELVIS ABDOMENPELVIS WHOLEBODY SKULL AORTA "
    "COLON ESOPHAGUS GALLBLADDER LARYNX MEDIASTINUM RECTUM STERNUM THYROID TRACHEA JAW NOSE DUODENUM ILEUM "
    "JEJUNUM PHARYNX TONGUE VAGINA PENIS CERVIX".split())
#: Defined terms of ImageType for CT (PS3.3 C.8.2.1.1.1): DERIVED (value 1), SECONDARY (value 2), AXIAL (value 3).
DERIVED_IMAGE_TYPE = ["DERIVED", "SECONDARY", "AXIAL"]


def write_derived_dicom(hu: np.ndarray, source: Dataset | None, path: str | os.PathLike, *, method_name: str,
                        pixel_spacing_mm: tuple[float, float] | None = None, anonymize: bool = False,
                        series_uid: str | None = None, description: str | None = None,
                        window: tuple[float, float] = (-1000.0, 1000.0), instance_number: int | None = None,
                        deidentifier: Deidentifier | None = None, burned_in_annotation: bool = False) -> Dataset:
    """Write one reconstructed slice as a derived CT DICOM image (atomically).

    Every Type 1 and Type 2 attribute of the CT Image IOD is present (Type 2 ones empty where unknown,
    :data:`TYPE2_DEFAULTS`); malformed UIDs carried from the source are replaced (deterministically, so
    the slices of one study stay together); ``ImageType`` is ``DERIVED\\SECONDARY\\AXIAL``.

    Parameters
    ----------
    hu : np.ndarray
        ``[H, W]`` image in HU.
    source : pydicom.Dataset or None
        Header of the source slice (``CTVolume.header(i)``); ``None`` for non-DICOM inputs
        (PNG/NPY images, sinograms), which get a minimal valid CT header with new study UIDs.
    path : path
        Output ``.dcm`` file.
    method_name : str
        Reconstruction method (named in ``SeriesDescription`` and ``DerivationDescription``).
    pixel_spacing_mm : (float, float), optional
        Spacing of ``hu``; default: the source spacing scaled by the change in size, or 1.0 mm.
    anonymize : bool
        Apply the Basic Application Confidentiality Profile (:mod:`ctbird.io.deid`) to everything carried
        from the source, the source reference included; no creation dates are written.
    series_uid : str, optional
        Series Instance UID shared by the images of one output series; new if omitted.
    description : str, optional
        ``DerivationDescription``; defaults to a sentence naming the method.
    window : (lo, hi)
        Display window stored in ``WindowCenter``/``WindowWidth``.
    instance_number : int, optional
        ``InstanceNumber``; default: the source's, or 1.
    deidentifier : Deidentifier, optional
        The run's UID mapper (one per run keeps a series a series); a new one per call if omitted.
    burned_in_annotation : bool
        Write ``BurnedInAnnotation = YES`` (the source declared text in its pixels; see
        :func:`ctbird.io.deid.check_burned_in_annotation`).

    Returns
    -------
    pydicom.Dataset
        The written dataset.
    """
    image = np.asarray(hu)
    if image.ndim != 2 or min(image.shape) < 1:
        raise OutputError(f"write_derived_dicom expects a 2-D [H, W] HU image, got shape {image.shape}.")
    rows, cols = image.shape
    now = datetime.now()
    ds = Dataset()
    mapper = (deidentifier or Deidentifier()) if anonymize else None
    if source is not None:
        for keyword in _CARRIED_TAGS:
            if keyword in source:
                setattr(ds, keyword, copy.deepcopy(source.data_element(keyword).value))
        if mapper is not None:
            mapper.apply(ds, mark=False)
    if "StudyInstanceUID" not in ds or not ds.StudyInstanceUID:
        ds.StudyInstanceUID = generate_uid()
    if "FrameOfReferenceUID" not in ds or not ds.FrameOfReferenceUID:
        ds.FrameOfReferenceUID = generate_uid()
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, valid_uid_or_replacement(ds.get(keyword)))
    if not _has_numbers(ds, "ImagePositionPatient", 3):
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    if not _has_numbers(ds, "ImageOrientationPatient", 6):
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if source is None and not anonymize:
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.StudyTime = now.strftime("%H%M%S")
    if pixel_spacing_mm is None:
        if source is not None and source.get("PixelSpacing") is not None and source.get("Rows") and source.get("Columns"):
            old_row, old_col = (float(v) for v in source.PixelSpacing)
            pixel_spacing_mm = (old_row * int(source.Rows) / rows, old_col * int(source.Columns) / cols)
        elif source is not None and source.get("PixelSpacing") is not None:
            pixel_spacing_mm = tuple(float(v) for v in source.PixelSpacing)
        else:
            pixel_spacing_mm = (1.0, 1.0)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = valid_uid_or_replacement(series_uid) if series_uid else generate_uid()
    ds.Modality = "CT"
    ds.ImageType = list(DERIVED_IMAGE_TYPE)
    ds.SeriesDescription = f"ctbird {method_name} reconstruction"[:64]
    ds.SeriesNumber = 9000 + (sum(method_name.encode()) % 900)
    ds.InstanceNumber = instance_number if instance_number is not None else int(ds.get("InstanceNumber") or 1)
    ds.DerivationDescription = (description or f"Sparse-view reconstruction by ctbird ({method_name})")[:1024]
    if not anonymize:
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.InstanceCreationDate = ds.ContentDate
        ds.InstanceCreationTime = ds.ContentTime
    for keyword, empty in TYPE2_DEFAULTS.items():
        if keyword not in ds:
            setattr(ds, keyword, empty)
    if str(ds.get("BodyPartExamined") or "").strip().upper() in UNPAIRED_BODY_PARTS:
        del ds.Laterality
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    source_class, source_instance = _source_uids(source)
    if source_instance:
        ref = Dataset()
        ref.ReferencedSOPClassUID = valid_uid_or_replacement(source_class or CTImageStorage)
        ref.ReferencedSOPInstanceUID = mapper.uid(source_instance) if mapper is not None \
            else valid_uid_or_replacement(source_instance)
        if "ReferencedFrameNumber" in source:
            ref.ReferencedFrameNumber = source.ReferencedFrameNumber
        ds.SourceImageSequence = Sequence([ref])
    stored, slope, intercept = _storage(image)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [_format_ds(float(v)) for v in pixel_spacing_mm]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _format_ds(slope)
    ds.RescaleIntercept = _format_ds(intercept)
    ds.RescaleType = "HU"
    lo, hi = float(window[0]), float(window[1])
    ds.WindowCenter = _format_ds((lo + hi) / 2.0)
    ds.WindowWidth = _format_ds(hi - lo)
    ds.PixelData = stored.tobytes()
    if anonymize:
        mark_deidentified(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except Exception as exc:
        raise OutputError(f"Cannot encode the derived DICOM for {path}: {_one_line(exc)}") from exc
    write_bytes_atomic(path, buffer.getvalue())
    return ds


def _has_numbers(ds: Dataset, keyword: str, count: int) -> bool:
    try:
        values = [float(v) for v in ds.get(keyword) or []]
    except (TypeError, ValueError):
        return False
    return len(values) == count and all(np.isfinite(values))
