"""Adversarial cases: de-identification, output safety under kills and errors, limits, plausibility, DICOM validity."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage

from ctbird import limits
from ctbird.errors import ConfigError, InputError, OutputError
from ctbird.io import atomic_output_dir, check_output_dir, read_dicom, read_sinogram, write_derived_dicom, write_png
from ctbird.io.atomic import MARKER_NAME, describe_os_error, foreign_entries, remove_stale_debris
from ctbird.io.deid import (REMOVED_PATH, Deidentifier, check_burned_in_annotation, find_identifiers,
                            identifying_values, public_input_label, scrub_paths)
from ctbird.io.plausibility import PlausibilityWarning, collect_warnings

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
REPO = Path(__file__).resolve().parents[2]

PLANTED = {
    "PatientName": "Doe^Johnathan", "PatientID": "PID-93817", "PatientBirthDate": "19510203",
    "StudyDescription": "SecretStudyDesc", "SeriesDescription": "SecretSeriesDesc", "StudyDate": "19870412",
    "SeriesDate": "19870413", "AcquisitionDate": "19870414", "ContentDate": "19870415", "StudyID": "STUDY4711",
    "AccessionNumber": "ACC-55123", "InstitutionName": "StMarysHospital", "StationName": "CTROOM7",
    "OperatorsName": "Tech^Operatorina", "ReferringPhysicianName": "Who^Referrer", "DeviceSerialNumber": "SN-99887",
    "ProtocolName": "ProtoSecret", "ImageComments": "CommentSecret", "OtherPatientIDs": "OTHER-777",
}


def planted_source(path: Path, *, sop_instance: str = "1.2.826.0.1.3680043.99.1.1", position: float = 0.0) -> Path:
    """A CT file carrying planted identifiers everywhere, a private tag and nested referenced-image UIDs."""
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.99.4"
    ds.SOPInstanceUID = sop_instance
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.ImagePositionPatient = [0.0, 0.0, position]
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.5"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SourceImageSequence = Sequence([copy.deepcopy(ref)])
    ds.add_new(0x00091010, "LO", "PrivSecret123")
    ds.save_as(path)
    return path


# ----------------------------------------------------------------------------------------- de-identification

def test_anonymized_outputs_carry_no_planted_identifier_in_any_byte(tmp_path):
    from ctbird.figures import comparison_figure

    inputs = tmp_path / "Doe_Johnathan_scan"
    inputs.mkdir()
    source_file = planted_source(inputs / "Doe_Johnathan.dcm")
    volume = read_dicom(source_file)
    source = volume.header(0)
    identifiers = identifying_values(pydicom.dcmread(source_file)) | {"Doe_Johnathan", str(inputs)}
    assert {"Doe^Johnathan", "Johnathan", "SecretStudyDesc", "19870412", "PrivSecret123",
            "1.2.826.0.1.3680043.99.5", "1.2.826.0.1.3680043.99.1.1"} <= identifiers
    label = public_input_label(source_file, anonymize=True)
    mapper = Deidentifier()
    image = volume.hu[0]
    with atomic_output_dir(tmp_path / "out", force=False) as staging:
        write_derived_dicom(image, source, staging / "bird.dcm", method_name="bird", anonymize=True,
                            deidentifier=mapper)
        write_png(image, staging / "bird.png", window=(-1000, 1000))
        np.save(staging / "bird.npy", image)
        (staging / "metrics.json").write_text(json.dumps({"input": label, "warnings": volume.warnings}))
        (staging / "comparison.png").write_bytes(comparison_figure({"bird": image}, title=f"{label}: 30 views"))
    assert find_identifiers(tmp_path / "out", identifiers) == []
    written = pydicom.dcmread(tmp_path / "out" / "bird.dcm")
    assert written.PatientIdentityRemoved == "YES" and written.BurnedInAnnotation == "NO"
    assert written.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert written.SourceImageSequence[0].ReferencedSOPInstanceUID == mapper.uid(source.SOPInstanceUID)
    # the check itself finds what it should: the source, a non-anonymized label, a compressed PNG text chunk
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Source", "Doe_Johnathan.dcm", zip=True)
    Image.new("L", (4, 4)).save(tmp_path / "leak.png", pnginfo=info)
    assert b"Doe_Johnathan" not in (tmp_path / "leak.png").read_bytes()
    assert "leak.png (PNG text chunk 0): Doe_Johnathan" in find_identifiers(tmp_path / "leak.png", identifiers)
    assert find_identifiers(source_file, identifiers)
    assert find_identifiers({"input": public_input_label(source_file, anonymize=False)}, identifiers)


def test_profile_walks_sequences_removes_private_dates_and_keeps_class_uids(tmp_path):
    ds = pydicom.dcmread(planted_source(tmp_path / "s.dcm"))
    mapper = Deidentifier(key=b"k" * 32)
    Deidentifier(key=b"k" * 32).apply(copy.deepcopy(ds))  # same key -> same mapping (reproducible on purpose)
    out = mapper.apply(ds)
    assert not any(element.tag.is_private for element in out)
    assert str(out.PatientName) == "" and out.PatientID == "" and out.StudyDate == "" and "SeriesDate" not in out
    assert "StudyDescription" not in out and "InstitutionName" not in out and "OtherPatientIDs" not in out
    assert out.SOPClassUID == CTImageStorage
    nested = out.ReferencedImageSequence[0]
    assert nested.ReferencedSOPClassUID == CTImageStorage
    assert nested.ReferencedSOPInstanceUID == mapper.uid("1.2.826.0.1.3680043.99.5")
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == nested.ReferencedSOPInstanceUID
    assert all(UID(uid).is_valid for uid in (out.StudyInstanceUID, out.SeriesInstanceUID, out.SOPInstanceUID))
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert Deidentifier(key=b"k" * 32).uid("1.2.3") == mapper.uid("1.2.3") != Deidentifier().uid("1.2.3")
    assert find_identifiers(repr(out), identifying_values(pydicom.dcmread(tmp_path / "s.dcm"))) == []


def test_one_mapper_per_run_keeps_a_series_a_series(tmp_path):
    a = read_dicom(planted_source(tmp_path / "a.dcm", sop_instance="1.2.826.0.1.3680043.99.1.1")).header(0)
    b = read_dicom(planted_source(tmp_path / "b.dcm", sop_instance="1.2.826.0.1.3680043.99.1.2")).header(0)
    mapper = Deidentifier()
    image = np.zeros((8, 8), np.float32)
    one = write_derived_dicom(image, a, tmp_path / "1.dcm", method_name="fbp", anonymize=True, deidentifier=mapper)
    two = write_derived_dicom(image, b, tmp_path / "2.dcm", method_name="fbp", anonymize=True, deidentifier=mapper)
    other_run = write_derived_dicom(image, a, tmp_path / "3.dcm", method_name="fbp", anonymize=True)
    assert one.StudyInstanceUID == two.StudyInstanceUID != a.StudyInstanceUID
    assert one.FrameOfReferenceUID == two.FrameOfReferenceUID != a.FrameOfReferenceUID
    assert one.SourceImageSequence[0].ReferencedSOPInstanceUID != two.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert other_run.StudyInstanceUID != one.StudyInstanceUID  # runs cannot be linked


def test_burned_in_annotation_is_refused_under_anonymize_unless_accepted(tmp_path):
    source = read_dicom(CT_SMALL).header(0)
    assert check_burned_in_annotation(source, anonymize=True, accept=False) is False
    burned = copy.deepcopy(source)
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(InputError, match="accept-burned-in-annotation"):
        check_burned_in_annotation(burned, anonymize=True, accept=False)
    assert check_burned_in_annotation(burned, anonymize=False, accept=False) is True
    assert check_burned_in_annotation(burned, anonymize=True, accept=True) is True
    assert check_burned_in_annotation([source, burned], anonymize=False, accept=False) is True  # a series
    assert check_burned_in_annotation(None, anonymize=True, accept=False) is False  # non-DICOM input
    written = write_derived_dicom(np.zeros((4, 4), np.float32), burned, tmp_path / "b.dcm", method_name="fbp",
                                  anonymize=True, burned_in_annotation=True)
    assert pydicom.dcmread(tmp_path / "b.dcm").BurnedInAnnotation == "YES" == written.BurnedInAnnotation
    screen = copy.deepcopy(source)
    screen.ImageType = ["DERIVED", "SECONDARY"]
    with pytest.raises(InputError, match="SECONDARY"):
        check_burned_in_annotation(screen, anonymize=True, accept=False)
    own = pydicom.dcmread(tmp_path / "b.dcm")
    own.BurnedInAnnotation = "NO"  # ctbird's own derived output states NO explicitly: accepted
    assert check_burned_in_annotation(own, anonymize=True, accept=False) is False


def test_scrub_paths_removes_every_path_from_written_mappings(tmp_path):
    (tmp_path / "Doe_geometry.toml").write_text("")
    config = {"input": "input", "method": "bird", "views": 30, "out": "/data/Doe_John/results",
              "geometry_file": Path("/data/Doe_John/g.toml"), "prior": "ct-256", "windows": ["lung", "~/Doe"],
              "nested": {"config": r"C:\\Doe\\run.toml"}}
    scrubbed = scrub_paths(config, anonymize=True)
    assert find_identifiers(scrubbed, ["Doe"]) == []
    assert scrubbed["method"] == "bird" and scrubbed["views"] == 30 and scrubbed["prior"] == "ct-256"
    assert scrubbed["windows"][0] == "lung" and scrubbed["out"] == REMOVED_PATH
    assert scrub_paths(config, anonymize=False) is config
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert scrub_paths({"g": "Doe_geometry.toml"}, anonymize=True) == {"g": REMOVED_PATH}
    finally:
        os.chdir(cwd)


def test_public_input_label_never_names_the_input_when_anonymizing():
    assert public_input_label("/data/Doe_John/scan.dcm", anonymize=True) == "input"
    assert public_input_label("/data/Doe_John/scan.dcm", anonymize=True, index=2) == "input-2"
    assert public_input_label("/data/Doe_John/scan.dcm", anonymize=False) == "scan.dcm"


# --------------------------------------------------------------------------------------------- DICOM validity

TYPE1_AND_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality", "SeriesInstanceUID",
               "SeriesNumber", "Laterality", "PatientPosition", "FrameOfReferenceUID", "PositionReferenceIndicator",
               "Manufacturer", "InstanceNumber", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
               "SliceThickness", "ImageType", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept", "RescaleSlope",
               "KVP", "AcquisitionNumber", "SOPClassUID", "SOPInstanceUID", "PixelData")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("kind", ["dicom", "dicom-anonymized", "non-dicom", "non-dicom-anonymized", "malformed-uids",
                                  "unpaired-body-part"])
def test_derived_dicom_validates(tmp_path, kind):
    source = None
    if kind.startswith("dicom"):
        source = read_dicom(CT_SMALL).header(0)
    elif kind == "unpaired-body-part":  # Laterality (Type 2C) must be absent for the brain, empty if unknown
        source = read_dicom(CT_SMALL).header(0)
        source.BodyPartExamined = "BRAIN"
    elif kind == "malformed-uids":
        source = read_dicom(CT_SMALL).header(0)
        source.StudyInstanceUID = "1.2.abc.0099"
        source.FrameOfReferenceUID = "not a uid"
        source.SOPInstanceUID = "1..2"
        del source.Manufacturer
    path = tmp_path / "d.dcm"
    write_derived_dicom(np.zeros((16, 16), np.float32), source, path, method_name="bird-raw",
                        anonymize=kind.endswith("anonymized"))
    ds = pydicom.dcmread(path)
    missing = [k for k in TYPE1_AND_2 if k not in ds]
    assert missing == (["Laterality"] if kind == "unpaired-body-part" else [])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    uids = [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID]
    uids += [item.ReferencedSOPInstanceUID for item in ds.get("SourceImageSequence", [])]
    assert all(UID(uid).is_valid for uid in uids), uids
    if kind == "malformed-uids":  # replaced deterministically: slices of one study stay together
        again = write_derived_dicom(np.zeros((16, 16), np.float32), source, tmp_path / "e.dcm", method_name="fbp")
        assert again.StudyInstanceUID == ds.StudyInstanceUID and again.FrameOfReferenceUID == ds.FrameOfReferenceUID
    validator = shutil.which("dciodvfy")
    if validator:
        report = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert errors == []


# ------------------------------------------------------------------------------------------------ output safety

def _ctbird_output(out: Path) -> None:
    with atomic_output_dir(out, force=True) as staging:
        (staging / "metrics.json").write_text("{}")
        (staging / "a.npy").write_bytes(b"x")


def test_force_replaces_only_folders_ctbird_wrote(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not written by ctbird"):
        check_output_dir(user, force=True)
    (user / "metrics.json").write_text("{}")  # a look-alike without the marker is not enough
    with pytest.raises(OutputError, match="not written by ctbird"):
        check_output_dir(user, force=True)
    assert (user / "thesis.tex").read_text() == "precious"
    out = tmp_path / "out"
    _ctbird_output(out)
    assert foreign_entries(out) == []
    assert check_output_dir(out, force=True) == out.resolve()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        check_output_dir(out, force=True)
    with pytest.raises(OutputError, match="notes.txt"):  # also re-checked at the moment of replacing
        with atomic_output_dir(out, force=True) as staging:
            (staging / "metrics.json").write_text("{}")
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "user"]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left"), (errno.EROFS, "read-only"),
                                         (errno.EBUSY, "mount point"), (errno.EACCES, "Permission denied"),
                                         (errno.EPERM, "immutable")])
def test_os_errors_in_the_write_phase_become_one_line_output_errors(tmp_path, code, words):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=words) as caught:
        with atomic_output_dir(out, force=False) as staging:
            (staging / "half.npy").write_bytes(b"x")
            raise OSError(code, os.strerror(code), str(staging / "big.npy"))
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []
    assert words in describe_os_error(OSError(code, os.strerror(code)), out)


def test_mount_points_are_refused():
    mount = Path("/proc")
    if not os.path.ismount(mount):
        pytest.skip("no /proc mount point")
    with pytest.raises(OutputError, match="mount point"):
        check_output_dir(mount, force=True)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_read_only_parent_is_a_clean_error(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            with atomic_output_dir(parent / "out", force=False) as staging:
                (staging / "x").write_text("x")
    finally:
        parent.chmod(0o700)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ctbird.io import atomic_output_dir
    out = Path(sys.argv[1])
    with atomic_output_dir(out, force=True) as staging:
        (staging / "metrics.json").write_text("{}")
        (staging / "big.npy").write_bytes(b"0" * 100000)
        print("writing", flush=True)
        time.sleep(60)
""")


def _start_child(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "writing"
    return child


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signals_in_the_write_phase_leave_nothing_behind(tmp_path, signum):
    out = tmp_path / "out"
    _ctbird_output(out)
    before = sorted(p.name for p in out.iterdir())
    child = _start_child(out)
    child.send_signal(signum)
    code = child.wait(timeout=30)
    assert code != 0
    if signum == signal.SIGTERM:
        assert code == -signal.SIGTERM  # the process still ends by the signal it was sent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial, no .old
    assert sorted(p.name for p in out.iterdir()) == before


def test_sigkill_debris_is_removed_by_the_next_run_and_never_a_result(tmp_path):
    out = tmp_path / "out"
    child = _start_child(out)
    child.kill()
    child.wait(timeout=30)
    debris = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(debris) == 1 and not out.exists()
    assert foreign_entries(debris[0]) is None  # no marker: not a result
    check_output_dir(out, force=False)
    assert list(tmp_path.iterdir()) == []


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    out = tmp_path / "out"
    _ctbird_output(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".out.{dead.pid}.abcd1234.old"
    old.mkdir()
    os.replace(out, old / "previous")  # the state right after the first rename of a forced replace
    stale_partial = tmp_path / f".out.{dead.pid}.zzzz9999.partial"
    stale_partial.mkdir()
    live_partial = tmp_path / f".out.{os.getpid()}.live0000.partial"  # a run still in progress: kept
    live_partial.mkdir()
    other_out = tmp_path / f".out.v2.{dead.pid}.abcd1234.partial"  # debris of another --out ("out.v2"): kept
    other_out.mkdir()
    removed = remove_stale_debris(out)
    assert sorted(p.name for p in removed) == sorted([old.name, stale_partial.name])
    assert (out / "metrics.json").is_file() and (out / MARKER_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live_partial.name, other_out.name])


# ------------------------------------------------------------------------------------------------------ limits

def test_hard_caps_refuse_absurd_sizes_before_any_allocation():
    with pytest.raises(ConfigError, match="views = 100000"):
        limits.check_sizes(views=100_000)
    with pytest.raises(ConfigError, match="image_size = 20000"):
        limits.estimate_run(views=30, detectors=363, image_size=20_000)
    with pytest.raises(ConfigError, match="views = 20000"):
        limits.estimate_run(views=20_000, detectors=363, image_size=256)
    with pytest.raises(ConfigError, match="positive integer"):
        limits.check_sizes(views=0)
    limits.check_sizes(views=2000, detectors=1000, image_size=1024, slices=500, batch=4)


def test_memory_estimate_grows_with_the_request_and_refuses_what_cannot_fit(tmp_path):
    small = limits.estimate_run(views=30, detectors=363, image_size=256, method="fbp")
    large = limits.estimate_run(views=2000, detectors=363, image_size=256, method="fbp")
    prior = limits.estimate_run(views=30, detectors=363, image_size=256, method="bird", batch=8)
    assert small.memory_bytes < large.memory_bytes and small.memory_bytes < prior.memory_bytes
    # the measured cache file of views=2000 was 1.9 GB (8 bytes per non-zero): the estimate's peak covers it
    assert large.parts["system matrix"] >= 1.9e9
    limits.check_run_fits(small, available_bytes=8 * 1024 ** 3, out=tmp_path)
    with pytest.raises(ConfigError, match="fewer views") as caught:
        limits.check_run_fits(large, available_bytes=1024 ** 3)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="smaller batch"):
        limits.check_run_fits(prior, available_bytes=int(prior.parts["prior activations"] * 0.5))
    with pytest.raises(OutputError, match="free some space"):
        limits.check_run_fits(limits.RunEstimate(memory_bytes=0, disk_bytes=10 ** 18), out=tmp_path / "new")
    assert limits.available_memory_bytes() > 0 and limits.free_disk_bytes(tmp_path / "a" / "b") > 0


@pytest.mark.parametrize("device", ["mps", "meta", "tpu", "cuda:99", "xyz", 3.5])
def test_unknown_or_unavailable_devices_are_config_errors(device):
    import torch

    if device == "cuda:99" and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ConfigError):
        limits.validate_device(device)


def test_known_devices_resolve():
    assert limits.validate_device("cpu").type == "cpu"
    assert limits.validate_device(None).type in ("cpu", "cuda")


def test_dose_plausibility():
    assert limits.check_dose(1e-9) and "extremely low" in limits.check_dose(1e-9)[0]
    assert limits.check_dose(1e5) == [] and limits.check_dose(None) == []
    assert limits.check_dose(1e12)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            limits.check_dose(bad)


def test_operator_cache_is_bounded_and_evicts_least_recently_used(tmp_path, monkeypatch):
    pytest.importorskip("astra")
    from operators import _matrix
    from operators.geometry import ParallelBeam

    cache = tmp_path / "cache"
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(cache))
    monkeypatch.delenv("CTBIRD_CACHE_MAX_BYTES", raising=False)
    assert _matrix.cache_max_bytes() == 2 * 1024 ** 3
    first, second, third = (ParallelBeam(views=v, detectors=23) for v in (4, 5, 6))
    paths = []
    for geometry in (first, second, third):
        assert not _matrix.system_matrix(geometry, 16)[1]
        paths.append(cache / f"{_matrix.cache_key(geometry, 16)}.npz")
        time.sleep(0.05)
    assert all(p.is_file() for p in paths)
    assert _matrix.system_matrix(first, 16)[1]  # a hit refreshes the first one: now the most recently used
    time.sleep(0.05)
    fourth = ParallelBeam(views=7, detectors=23)
    sizes = {p: p.stat().st_size for p in paths}
    # room for the first and the fourth (larger than the third) but not for one more
    monkeypatch.setenv("CTBIRD_CACHE_MAX_BYTES", str(sizes[paths[0]] + 2 * sizes[paths[2]]))
    _matrix.system_matrix(fourth, 16)
    left = sorted(p.name for p in cache.glob("*.npz"))
    assert left == sorted([paths[0].name, f"{_matrix.cache_key(fourth, 16)}.npz"])  # second, then third evicted
    assert sum(p.stat().st_size for p in cache.glob("*.npz")) <= int(os.environ["CTBIRD_CACHE_MAX_BYTES"])
    monkeypatch.setenv("CTBIRD_CACHE_MAX_BYTES", "1000")
    with pytest.warns(UserWarning, match="Not caching"):
        _matrix.system_matrix(ParallelBeam(views=8, detectors=23), 16)
    assert sorted(p.name for p in cache.glob("*.npz")) == left
    monkeypatch.setenv("CTBIRD_CACHE_MAX_BYTES", "lots")
    with pytest.warns(UserWarning, match="Ignoring CTBIRD_CACHE_MAX_BYTES"):
        assert _matrix.cache_max_bytes() == 2 * 1024 ** 3


# ------------------------------------------------------------------------------------------------ plausibility

def _variant(tmp_path: Path, name: str, **tags) -> Path:
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path = tmp_path / name
    ds.save_as(path)
    return path


def test_impossible_dicom_values_are_errors(tmp_path):
    with pytest.raises(InputError, match="RescaleSlope is 0"):
        read_dicom(_variant(tmp_path, "zero.dcm", RescaleSlope=0))
    with pytest.raises(InputError, match="no material reaches"):
        read_dicom(_variant(tmp_path, "huge.dcm", RescaleSlope="1e30"))
    with pytest.raises(InputError, match="not finite"):
        read_dicom(_variant(tmp_path, "overflow.dcm", RescaleSlope="1e300"))
    with pytest.raises(InputError, match="BitsStored 8"):
        read_dicom(_variant(tmp_path, "bits.dcm", BitsStored=8, HighBit=7))
    series = tmp_path / "series"
    series.mkdir()
    _variant(series, "a.dcm", SOPInstanceUID="1.2.826.0.1.3680043.99.7.1")
    _variant(series, "b.dcm", SOPInstanceUID="1.2.826.0.1.3680043.99.7.2", InstanceNumber=2)
    with pytest.raises(InputError, match="same slice position"):
        read_dicom(series)


def test_unusual_dicom_values_are_structured_warnings(tmp_path):
    with pytest.warns(UserWarning, match="unusual for CT"):
        volume = read_dicom(_variant(tmp_path, "flat.dcm", RescaleSlope="1e-4", RescaleIntercept=0))
    assert len(volume.warnings) == 1 and "RescaleSlope 0.0001" in volume.warnings[0]
    with pytest.warns(UserWarning, match="outside real CT"):
        volume = read_dicom(_variant(tmp_path, "steep.dcm", RescaleSlope="100"))
    assert len(volume.warnings) == 1 and "outside real CT" in volume.warnings[0]
    with warnings_as_errors():
        assert read_dicom(CT_SMALL).warnings == []


class warnings_as_errors:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _sinogram(tmp_path: Path, data: np.ndarray, geometry: str = 'type = "parallel"\nviews = 6\ndetectors = 8\n'):
    np.save(tmp_path / "s.npy", data.astype(np.float32))
    (tmp_path / "g.toml").write_text(geometry)
    return tmp_path / "s.npy", tmp_path / "g.toml"


def test_sinogram_plausibility(tmp_path):
    rng = np.random.default_rng(0)
    clean = np.abs(rng.normal(2.0, 1.0, (6, 8)))
    noisy = clean.copy()
    noisy[0, 0] = -0.05  # noise: fine
    with warnings_as_errors():
        read_sinogram(*_sinogram(tmp_path, noisy))
    with pytest.raises(InputError, match="negative line integrals"):
        read_sinogram(*_sinogram(tmp_path, -clean))
    with pytest.raises(InputError, match="NaN"):
        read_sinogram(*_sinogram(tmp_path, np.full((6, 8), np.nan)))
    with pytest.warns(PlausibilityWarning, match="line integrals up to"), collect_warnings() as notes:
        read_sinogram(*_sinogram(tmp_path, clean * 1e30))
    assert len(notes) == 1 and "line integrals up to" in notes[0]
    with pytest.raises(InputError, match="views = 20000"):  # refused before the array is even loaded
        read_sinogram(tmp_path / "absent.npy", _sinogram(tmp_path, clean, 'type = "parallel"\nviews = 20000\n')[1])
    fan = 'type = "fan"\nviews = 6\ndetectors = 8\nsource_distance = 100.0\n'
    with pytest.raises(InputError, match="detector_distance"):
        read_sinogram(*_sinogram(tmp_path, clean, fan))
