"""De-identification: the DICOM Basic Application Confidentiality Profile and scrubbed non-DICOM metadata.

DICOM
-----
:class:`Deidentifier` applies the Basic Application Confidentiality Profile of DICOM PS3.15 Annex E
(Table E.1-1, "Basic Prof." column) to a header, recursively through every sequence:

* ``Z``: replace with an empty value; ``X``: remove; ``K``: keep; ``U``: replace the UID by another one,
  consistently within the run (:meth:`Deidentifier.uid`). The table's ``D`` (dummy value) choices are
  taken as ``Z`` or ``X`` (never a made-up value) and ``C`` (clean) as ``X``: ctbird cannot judge free text.
* :data:`BASIC_PROFILE` hard-codes the table's rows for the attributes a CT image can carry (patient,
  study, series, equipment, operators, dates and times, descriptions, request/procedure attributes,
  referenced-image sequences and every instance UID). Where the table offers a choice (``X/Z``,
  ``Z/D``, ``X/Z/D``...) the least revealing one that keeps a Type 2 attribute present is used.
* Every other element whose value representation can identify is handled by one rule: person names
  (``PN``) are emptied; dates, times and date-times (``DA``/``TM``/``DT``) are removed (Type 2 ones
  listed in the table are emptied instead: dates are **removed, never shifted**); UIDs (``UI``) that
  are not well-known DICOM UIDs (SOP classes, transfer syntaxes, coding schemes) are remapped.
* All private elements (odd groups) and overlay/curve groups are removed.
* ``PatientIdentityRemoved`` is set to ``YES``, ``DeidentificationMethod`` names the profile and
  ``DeidentificationMethodCodeSequence`` holds ``(113100, DCM, "Basic Application Confidentiality
  Profile")``.

UIDs are remapped with a keyed hash: ``2.25.<int of HMAC-SHA256(key, uid)[:16 bytes]>``. One
:class:`Deidentifier` per run means every slice of a series maps to the same new Series/Study/Frame of
reference UIDs (a series stays a series), while a fresh random key per run means two runs cannot be
linked to each other or to the source.

Burned-in annotation: :func:`check_burned_in_annotation` refuses a source that declares text in its
pixels (``BurnedInAnnotation = YES``, a Secondary Capture SOP class, or ``ImageType`` SECONDARY without
an explicit ``BurnedInAnnotation = NO``) unless the caller accepts it; the derived image then states
``BurnedInAnnotation = YES``.

Non-DICOM outputs
-----------------
:func:`public_input_label` is what outputs (metrics.json, config.toml, figure titles) may say about
the input; :func:`scrub_paths` removes every path from a mapping written under ``--anonymize`` (and
replaces the inputs' spellings from :func:`input_path_replacements` inside messages);
:func:`identifying_values` lists a source header's identifying values and
:func:`find_identifiers` searches text, mappings, bytes or a whole output folder for them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, UID_dictionary

from ..errors import InputError

#: Name of the profile, as written into ``DeidentificationMethod``.
PROFILE_NAME = "PS3.15 E.1 Basic Application Confidentiality Profile (ctbird)"
#: ``DeidentificationMethodCodeSequence`` entry of the Basic Profile (PS3.16 CID 7050).
PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# Action codes of PS3.15 Table E.1-1 (Basic Profile column) for the attributes a CT image can carry.
# Where the table lists several codes (e.g. "X/Z/D") the first one valid for the attribute's type is used.
BASIC_PROFILE: dict[str, str] = {
    # Patient
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z",
    "PatientBirthTime": "X", "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X",
    "PatientAddress": "X", "PatientTelephoneNumbers": "X", "PatientMotherBirthName": "X",
    "OtherPatientIDs": "X", "OtherPatientIDsSequence": "X", "OtherPatientNames": "X",
    "PatientBirthName": "X", "MilitaryRank": "X", "BranchOfService": "X", "MedicalRecordLocator": "X",
    "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X", "PatientComments": "X",
    "PatientReligiousPreference": "X", "PatientState": "X", "PregnancyStatus": "X",
    "MedicalAlerts": "X", "Allergies": "X", "SmokingStatus": "X", "LastMenstrualDate": "X",
    "IssuerOfPatientID": "X", "PatientInsurancePlanCodeSequence": "X", "ReferencedPatientSequence": "X",
    "ResponsiblePerson": "X", "ResponsibleOrganization": "X", "PatientSexNeutered": "X",
    "CountryOfResidence": "X", "RegionOfResidence": "X", "InsurancePlanIdentification": "X",
    # Study
    "StudyInstanceUID": "U", "StudyDate": "Z", "StudyTime": "Z", "StudyID": "Z", "AccessionNumber": "Z",
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X", "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X", "StudyDescription": "X", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X", "ReferencedStudySequence": "X", "StudyComments": "X",
    "ReasonForStudy": "X", "RequestingPhysician": "X", "RequestingService": "X",
    "ConsultingPhysicianName": "X", "InterpretationAuthor": "X", "AdmissionID": "X",
    # Series / procedure
    "SeriesInstanceUID": "U", "SeriesDate": "X", "SeriesTime": "X", "SeriesDescription": "X",
    "PerformingPhysicianName": "X", "PerformingPhysicianIdentificationSequence": "X", "OperatorsName": "Z",
    "OperatorIdentificationSequence": "X", "ProtocolName": "X", "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X", "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X", "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X", "PerformedLocation": "X", "PerformedStationName": "X",
    "PerformedStationAETitle": "X", "RequestAttributesSequence": "X", "RequestedProcedureID": "X",
    "RequestedProcedureDescription": "X", "ScheduledProcedureStepID": "X",
    "ReferencedPerformedProcedureStepSequence": "X", "ActualHumanPerformersSequence": "X",
    "HumanPerformerName": "X", "HumanPerformerOrganization": "X", "OrderCallbackPhoneNumber": "X",
    "OrderEnteredBy": "X", "OrderEntererLocation": "X", "FillerOrderNumberImagingServiceRequest": "X",
    "PlacerOrderNumberImagingServiceRequest": "X", "ContentCreatorName": "Z",
    # Equipment
    "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "StationName": "X", "DeviceSerialNumber": "X", "DeviceUID": "U", "DetectorID": "X", "GantryID": "X",
    "SourceSerialNumber": "X", "UDISequence": "X",
    # Image
    "SOPInstanceUID": "U", "FrameOfReferenceUID": "U", "SynchronizationFrameOfReferenceUID": "U",
    "InstanceCreationDate": "X", "InstanceCreationTime": "X", "InstanceCreatorUID": "U",
    "ContentDate": "Z", "ContentTime": "Z", "AcquisitionDate": "X", "AcquisitionTime": "X",
    "AcquisitionDateTime": "X", "ImageComments": "X", "FrameComments": "X", "DerivationDescription": "X",
    "AcquisitionDeviceProcessingDescription": "X", "AcquisitionComments": "X", "IrradiationEventUID": "U",
    "DimensionOrganizationUID": "U", "ConcatenationUID": "U", "ReferencedSOPInstanceUID": "U",
    "ReferencedFrameOfReferenceUID": "U", "RelatedFrameOfReferenceUID": "U", "StorageMediaFileSetUID": "U",
    "MediaStorageSOPInstanceUID": "U", "ReferencedSOPInstanceUIDInFile": "U", "TargetUID": "U",
    "TimezoneOffsetFromUTC": "X", "DataSetTrailingPadding": "X", "ModifiedAttributesSequence": "X",
    "OriginalAttributesSequence": "X", "DigitalSignaturesSequence": "X", "TextValue": "X", "TextString": "X",
    "TopicTitle": "X", "TopicAuthor": "X", "TopicSubject": "X", "TopicKeywords": "X", "Label": "X",
    # Referenced images: kept as structures, every UID inside remapped (Table E.1-1: X/Z/U*)
    "SourceImageSequence": "U*", "ReferencedImageSequence": "U*", "ReferencedSeriesSequence": "U*",
    "ReferencedInstanceSequence": "U*",
}

_DATE_TIME_VRS = ("DA", "TM", "DT")
_OVERLAY_OR_CURVE_GROUPS = tuple(range(0x5000, 0x5100, 2)) + tuple(range(0x6000, 0x6100, 2))


def _is_well_known_uid(value: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes...: UIDs that name a standard thing, not a person's data."""
    return value in UID_dictionary


class Deidentifier:
    """Applies :data:`BASIC_PROFILE` to headers; one instance per run keeps the UID mapping consistent.

    Parameters
    ----------
    key : bytes, optional
        Secret of the keyed UID hash. Default: 32 random bytes (runs cannot be linked). Pass a fixed key
        only to reproduce a mapping (tests, or a study de-identified in several runs on purpose).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._uids: dict[str, str] = {}

    def uid(self, original: str) -> str:
        """The replacement of ``original`` (same input -> same output for this instance)."""
        text = str(original).strip().rstrip("\x00")
        if not text:
            return text
        if text not in self._uids:
            digest = hmac.new(self._key, text.encode("ascii", "replace"), hashlib.sha256).digest()[:16]
            self._uids[text] = f"2.25.{int.from_bytes(digest, 'big')}"
        return self._uids[text]

    @property
    def mapped_uids(self) -> dict[str, str]:
        """Original -> replacement of every UID mapped so far (keep it secret: it re-identifies)."""
        return dict(self._uids)

    def apply(self, ds: Dataset, *, mark: bool = True) -> Dataset:
        """De-identify ``ds`` in place (and its file meta); returns it.

        ``mark`` sets ``PatientIdentityRemoved``/``DeidentificationMethod(CodeSequence)``; nested items
        are processed with ``mark=False``.
        """
        ds.remove_private_tags()
        for element in list(ds):
            tag = element.tag
            if tag.group in _OVERLAY_OR_CURVE_GROUPS:
                del ds[tag]
                continue
            keyword = keyword_for_tag(tag) or ""
            action = BASIC_PROFILE.get(keyword)
            if action is None:
                action = self._default_action(element)
            self._do(ds, element, action)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(meta.MediaStorageSOPInstanceUID)
        if mark:
            mark_deidentified(ds)
        return ds

    def _default_action(self, element) -> str:
        if element.VR == "SQ":
            return "U*"
        if element.VR == "PN":
            return "Z"
        if element.VR in _DATE_TIME_VRS:
            return "X"
        if element.VR == "UI":
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            return "K" if all(_is_well_known_uid(str(v)) for v in values if v) else "U"
        return "K"

    def _do(self, ds: Dataset, element, action: str) -> None:
        tag = element.tag
        if action == "X":
            del ds[tag]
        elif action == "Z":
            element.value = Sequence([]) if element.VR == "SQ" else ""
        elif action == "U":
            if element.VR == "UI" and element.value:
                if isinstance(element.value, str):
                    element.value = self.uid(element.value)
                else:
                    element.value = [self.uid(v) for v in element.value]
            elif element.VR != "UI":
                del ds[tag]
        elif action == "U*":
            if element.VR != "SQ":
                del ds[tag]
                return
            for item in element.value:
                self.apply(item, mark=False)


def mark_deidentified(ds: Dataset, *, method: str = PROFILE_NAME) -> None:
    """Set ``PatientIdentityRemoved = YES`` and the de-identification method (text and code)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method[:64]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([code])


_SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
}


def burned_in_annotation_reason(ds: Dataset) -> str | None:
    """Why ``ds`` may hold text burned into its pixels, or ``None`` when it declares none."""
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "BurnedInAnnotation is YES"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class in _SECONDARY_CAPTURE_CLASSES:
        return f"it is a Secondary Capture image (SOP class {sop_class})"
    raw_type = ds.get("ImageType") or []
    image_type = [str(v).strip().upper() for v in (raw_type if isinstance(raw_type, MultiValue) else [raw_type])]
    if len(image_type) > 1 and image_type[1] == "SECONDARY" and burned != "NO":
        return "its ImageType is SECONDARY (possibly a screen capture) and it does not state BurnedInAnnotation NO"
    if "SCREEN" in " ".join(image_type) or "CAPTURE" in " ".join(image_type):
        return f"its ImageType {'/'.join(image_type)} names a screen capture"
    return None


def check_burned_in_annotation(ds: Dataset | Iterable[Dataset] | None, *, anonymize: bool, accept: bool,
                               source: str = "input") -> bool:
    """Refuse a source with burned-in annotation under ``anonymize`` unless ``accept``.

    ``ds`` is one header, the headers of a series (``CTVolume.datasets``), or ``None`` (non-DICOM input).

    Returns
    -------
    bool
        Whether the outputs must say ``BurnedInAnnotation = YES``.

    Raises
    ------
    InputError
        ``anonymize`` without ``accept`` on a source that declares (or may hold) burned-in text.
    """
    headers = [] if ds is None else [ds] if isinstance(ds, Dataset) else list(ds)
    reason = next((r for r in map(burned_in_annotation_reason, headers) if r is not None), None)
    if reason is None:
        return False
    if anonymize and not accept:
        raise InputError(f"{source} may carry identifying text burned into its pixels ({reason}); --anonymize "
                         "cannot remove it. Pass --accept-burned-in-annotation to process it anyway "
                         "(outputs will say BurnedInAnnotation YES).")
    return True


def public_input_label(path: str | os.PathLike | None, anonymize: bool, *, index: int | None = None) -> str:
    """What outputs may say about an input: its file name, or ``"input"`` (``"input-2"``...) when anonymizing.

    Use it for ``metrics.json``, ``config.toml`` and figure titles instead of the path: file names are
    often the patient's name. Never returns a directory part.
    """
    if anonymize or path is None:
        return "input" if index is None else f"input-{index}"
    return Path(path).name


#: What :func:`scrub_paths` writes instead of a path.
REMOVED_PATH = "<removed by --anonymize>"


def input_path_replacements(paths: Iterable[str | os.PathLike], label: str) -> dict[str, str]:
    """Every spelling of ``paths`` in messages (as given, expanded, absolute, resolved, file name) -> ``label``.

    For :func:`scrub_paths` ``replacements``: warnings and notes name the input file, which can be the
    patient's name. A bare file name shorter than 4 characters is left out (it would match parts of words).
    """
    found: dict[str, str] = {}
    for item in paths:
        path = Path(item)
        spellings = {str(item), str(path), str(path.expanduser()), str(path.expanduser().absolute())}
        try:
            spellings.add(str(path.expanduser().resolve()))
        except (OSError, RuntimeError):
            pass
        if len(path.name) >= 4:
            spellings.add(path.name)
        found.update({text: label for text in spellings if text not in ("", ".", "..")})
    return found


def scrub_paths(value, anonymize: bool, *, replacements: Mapping[str, str] | None = None):
    """A copy of ``value`` (mapping/list/str...) with every path-like string replaced when ``anonymize``.

    For ``metrics.json`` and ``config.toml``: input, output, geometry and prior paths can name the patient.

    * ``replacements`` (``{text: public text}``, e.g. :func:`input_path_replacements`) are applied inside
      every string first, longest first (texts under 4 characters only to a whole value): a warning
      ``"/data/Doe/x.dcm: RescaleSlope ..."`` becomes ``"input: RescaleSlope ..."``.
    * A string then counts as a path (and is replaced by :data:`REMOVED_PATH` as a whole) when it is one
      word holding a path separator, or starts with ``/``, ``\\``, ``~`` or a drive letter, or names an
      existing file or folder.
    * In other text (messages, notes) every word that looks like a path (starts like one above, or holds
      a separator and a file suffix: ``a/b.dcm``) is replaced; ``PSNR/SSIM`` stays.

    Keys are kept, non-string values are returned unchanged. Without ``anonymize`` ``value`` is returned
    as it is.
    """
    if not anonymize:
        return value
    ordered = sorted((replacements or {}).items(), key=lambda kv: -len(kv[0]))

    def scrub(item):
        if isinstance(item, Mapping):
            return {key: scrub(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(scrub(inner) for inner in item)
        if isinstance(item, os.PathLike):
            return REMOVED_PATH
        if not isinstance(item, str):
            return item
        text = item
        for needle, public in ordered:
            # short spellings (a relative "a.np") are replaced only as a whole value, not inside words
            text = text.replace(needle, public) if len(needle) >= 4 else (public if text == needle else text)
        if _starts_like_path(text) or (not any(c.isspace() for c in text) and ("/" in text or "\\" in text)) \
                or (text not in ("", ".", "..") and _looks_like_path(text)):
            return REMOVED_PATH
        words = text.split(" ")
        return " ".join(REMOVED_PATH if _word_looks_like_path(word) else word for word in words)

    return scrub(value)


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _starts_like_path(text: str) -> bool:
    return text.startswith(("/", "\\", "~")) or bool(_DRIVE.match(text))


def _word_looks_like_path(word: str) -> bool:
    bare = word.strip("'\"()[]{},;:")
    if _starts_like_path(bare):
        return True
    return ("/" in bare or "\\" in bare) and bool(re.search(r"\.[A-Za-z0-9]{1,5}$", bare))


#: Header attributes whose values identify a patient, study or site (searched for by :func:`identifying_values`).
_IDENTIFYING_KEYWORDS = tuple(k for k, a in BASIC_PROFILE.items() if a in ("Z", "X", "U"))


_TEXT_VRS = ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA", "DT", "UI", "AE")


def identifying_values(ds: Dataset, *, min_length: int = 4) -> set[str]:
    """Identifying values of ``ds`` (names, IDs, dates, descriptions, instance UIDs, in sequences too).

    Only text values count (names, IDs, descriptions, dates, UIDs); numbers (weight, size) and values
    shorter than ``min_length`` characters (a sex letter) are left out: they would match by chance.
    """
    found: set[str] = set()

    def visit(item: Dataset) -> None:
        for element in item:
            if element.VR == "SQ":
                for child in element.value:
                    visit(child)
                continue
            keyword = keyword_for_tag(element.tag) or ""
            identifying = keyword in _IDENTIFYING_KEYWORDS or element.VR in ("PN", "DA", "DT") or \
                element.tag.is_private or (element.VR == "UI" and not _is_well_known_uid(str(element.value)))
            if not identifying or element.VR not in _TEXT_VRS or element.value in (None, ""):
                continue
            values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
            for value in values:
                text = str(value).strip().rstrip("\x00")
                if len(text) >= min_length:
                    found.add(text)
                    found.update(part for part in text.replace("^", " ").split() if len(part) >= min_length)

    visit(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        found.add(str(meta.MediaStorageSOPInstanceUID))
    return found


def find_identifiers(target, identifiers: Iterable[str]) -> list[str]:
    """Which of ``identifiers`` occur (case-insensitively) in ``target``.

    ``target`` may be text, bytes, a mapping/list (searched through its JSON-like values and keys), a
    file or a folder (every byte of every file, recursively). Returns ``"where: identifier"`` strings.
    """
    needles = sorted({i for i in identifiers if i}, key=len, reverse=True)
    hits: list[str] = []

    def scan(data: bytes, where: str) -> None:
        lowered = data.lower()
        for needle in needles:
            encodings = {needle.lower().encode("utf-8"), needle.lower().encode("utf-16-le")}
            if any(e in lowered for e in encodings):
                hits.append(f"{where}: {needle}")

    if isinstance(target, (str, bytes)) and not (isinstance(target, str) and _looks_like_path(target)):
        scan(target.encode("utf-8") if isinstance(target, str) else target, "text")
    elif isinstance(target, (Mapping, list, tuple)):
        scan(repr(target).encode("utf-8"), "value")
        scan(_flatten(target).encode("utf-8"), "value")
    else:
        root = Path(target)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            where = str(file.relative_to(root) if root.is_dir() else file.name)
            data = file.read_bytes()
            scan(data, where)
            for index, text in enumerate(png_text_chunks(data)):
                scan(text, f"{where} (PNG text chunk {index})")
            scan(file.name.encode("utf-8"), f"file name {file.name}")
    return sorted(set(hits))


def png_text_chunks(data: bytes) -> list[bytes]:
    """Decoded payloads of the ``tEXt``/``zTXt``/``iTXt`` chunks of PNG ``data`` (``[]`` for other data)."""
    import struct
    import zlib

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return []
    texts, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        try:
            if kind == b"tEXt":
                texts.append(body)
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                texts.append(key + b" " + zlib.decompress(rest[1:]))
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, payload = rest[0], rest[2:]
                payload = payload.split(b"\0", 2)[-1]
                texts.append(key + b" " + (zlib.decompress(payload) if compressed else payload))
        except (zlib.error, IndexError):
            texts.append(body)
        if kind == b"IEND":
            break
    return texts


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and os.path.exists(text)


def _flatten(value) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k} {_flatten(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_flatten(v) for v in value)
    return str(value)


def valid_uid_or_replacement(value: str | None) -> str | None:
    """``value`` if it is a well-formed UID, else a deterministic ``2.25`` UID derived from it (None stays None)."""
    if value is None:
        return None
    text = str(value).strip().rstrip("\x00")
    if text and UID(text).is_valid:
        return text
    digest = hashlib.sha256(b"ctbird-malformed-uid:" + text.encode("utf-8", "replace")).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"
