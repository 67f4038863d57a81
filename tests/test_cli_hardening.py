"""Adversarial runs of the ``ctbird`` command line: de-identification of every output byte, limits before work,
plausibility warnings, output safety under --force, signals and kills, and DICOM validity of derived images."""

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
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from ctbird.cli import main
from ctbird.errors import ConfigError
from ctbird.io.atomic import MARKER_NAME
from ctbird.io.deid import find_identifiers, identifying_values, png_text_chunks

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
REPO = Path(__file__).resolve().parents[1]

PLANTED = {
    "PatientName": "Doe^Johnathan", "PatientID": "PID-93817", "PatientBirthDate": "19510203",
    "InstitutionName": "StMarysHospital", "AccessionNumber": "ACC-55123", "StudyDescription": "SecretStudyDesc",
    "SeriesDescription": "SecretSeriesDesc", "StudyDate": "19870412", "SeriesDate": "19870413",
    "AcquisitionDate": "19870414", "ContentDate": "19870415", "StudyID": "STUDY4711",
    "ReferringPhysicianName": "Who^Referrer", "OperatorsName": "Tech^Operatorina", "StationName": "CTROOM7",
    "DeviceSerialNumber": "SN-99887", "OtherPatientIDs": "OTHER-777",
}
STUDY_UID, SERIES_UID, FRAME_UID = "1.2.826.0.1.3680043.99.2", "1.2.826.0.1.3680043.99.3", "1.2.826.0.1.3680043.99.4"
#: The input folder and file names look like the patient's name, as they often do.
PATIENT_FOLDER, PATIENT_FILE = "Doe_Johnathan_scan", "Doe_Johnathan"


def _planted_series(folder: Path, *, slices: int = 2, **tags) -> Path:
    """A CT series (``slices`` files named after the patient) with planted identifiers, a private tag and nested
    UIDs; ``tags`` override header values of every slice."""
    folder.mkdir(parents=True)
    for index in range(slices):
        ds = pydicom.dcmread(CT_SMALL)
        for keyword, value in {**PLANTED, **tags}.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY_UID, SERIES_UID, FRAME_UID
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.1.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * 5.0]
        ds.InstanceNumber = index + 1
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.5"
        ds.ReferencedImageSequence = Sequence([ref])
        ds.SourceImageSequence = Sequence([copy.deepcopy(ref)])
        ds.add_new(0x00091010, "LO", "PrivSecret123")
        ds.save_as(folder / f"{PATIENT_FILE}_{index + 1:03d}.dcm")
    return folder


def _identifiers(folder: Path) -> set[str]:
    """Everything a de-identified output must not contain: header values, UIDs, file and folder names."""
    values: set[str] = set()
    for file in folder.iterdir():
        values |= identifying_values(pydicom.dcmread(file))
    return values | {PATIENT_FILE, PATIENT_FOLDER, str(folder.resolve()), STUDY_UID, SERIES_UID, FRAME_UID}


def _invoke(*args, catch: bool = False):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch)


def _one_error_line(result) -> str:
    """The run failed with one ``Error:`` line and no traceback; returns that line."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _dicom_errors(path: Path) -> list[str]:
    """dciodvfy's error lines when it is installed, else the Type 1/2 attributes a CT image lacks (pydicom)."""
    validator = shutil.which("dciodvfy")
    if validator:
        report = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=60)
        return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    ds = pydicom.dcmread(path)
    required = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality", "SeriesInstanceUID",
                "SeriesNumber", "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "InstanceNumber",
                "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "ImageType",
                "RescaleIntercept", "RescaleSlope", "KVP", "AcquisitionNumber", "SOPClassUID", "SOPInstanceUID")
    errors = [f"Error - missing {keyword}" for keyword in required if keyword not in ds]
    if list(ds.ImageType)[:2] != ["DERIVED", "SECONDARY"]:
        errors.append(f"Error - ImageType {list(ds.ImageType)}")
    return errors


@pytest.fixture
def phantom(tmp_path) -> Path:
    """A 32x32 HU phantom (water disk in air) as .npy."""
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    hu = np.full((32, 32), -1000.0, np.float32)
    hu[xx ** 2 + yy ** 2 < 0.6] = 0.0
    path = tmp_path / "inputs" / "phantom.npy"
    path.parent.mkdir()
    np.save(path, hu)
    return path


def _sinogram_input(folder: Path, geometry: str, data: np.ndarray | None = None) -> tuple[Path, Path]:
    folder.mkdir(exist_ok=True)
    if data is None:
        data = np.abs(np.random.default_rng(0).normal(2.0, 0.5, (8, 46)))
    np.save(folder / "sino.npy", np.asarray(data, np.float32))
    (folder / "geometry.toml").write_text(textwrap.dedent(geometry))
    return folder / "sino.npy", folder / "geometry.toml"


PARALLEL_8 = 'type = "parallel"\nviews = 8\ndetectors = 46\nimage_size = 32\n'


# ------------------------------------------------------------------------------------------- de-identification

def test_anonymized_run_leaks_no_planted_identifier_in_any_output_byte(tmp_path):
    # an unusual slope makes a warning that names the input file: it must reach metrics.json without the path
    series = _planted_series(tmp_path / PATIENT_FOLDER, RescaleSlope="0.0005", RescaleIntercept="-1024")
    identifiers = _identifiers(series)
    assert {"Doe^Johnathan", "Johnathan", "SecretStudyDesc", "19870412", "PrivSecret123", STUDY_UID,
            "1.2.826.0.1.3680043.99.1.1", "1.2.826.0.1.3680043.99.5", PATIENT_FILE} <= identifiers
    out = tmp_path / "out"
    result = _invoke("reconstruct", series, "--method", "fbp,sirt", "--views", 8, "--iters", 2, "--series",
                     SERIES_UID, "--anonymize", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "RescaleSlope 0.0005" in result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert {"fbp.dcm", "sirt.dcm", "fbp.png", "fbp.npy", "sinogram.npy", "metrics.json", "config.toml",
            "comparison.png", "geometry.json", MARKER_NAME} <= set(files)
    assert find_identifiers(out, identifiers) == []  # every byte of every file, PNG text chunks included
    metrics = json.loads((out / "metrics.json").read_text())
    # one note per file of the series in the terminal; in metrics.json both read "input: ..." and are listed once
    assert result.stderr.count("RescaleSlope 0.0005") == 2
    assert metrics["input"] == "input" and len(metrics["warnings"]) == 1
    assert metrics["warnings"][0].startswith("input: RescaleSlope 0.0005 is unusual for CT")
    assert png_text_chunks((out / "comparison.png").read_bytes()) == []
    fbp, sirt = (pydicom.dcmread(out / f"{m}.dcm") for m in ("fbp", "sirt"))
    assert fbp.PatientIdentityRemoved == "YES" and fbp.BurnedInAnnotation == "NO"
    assert fbp.StudyInstanceUID == sirt.StudyInstanceUID != STUDY_UID  # one mapping per run: still one study
    assert fbp.SourceImageSequence[0].ReferencedSOPInstanceUID == sirt.SourceImageSequence[0].ReferencedSOPInstanceUID
    # the control: the same run without --anonymize does carry identifiers, so the check above can fail
    plain = tmp_path / "plain"
    assert _invoke("reconstruct", series, "--method", "fbp", "--views", 8, "--out", plain, "--quiet").exit_code == 0
    leaks = find_identifiers(plain, identifiers)
    assert any("fbp.dcm: Doe^Johnathan" in leak for leak in leaks) and any("metrics.json" in leak for leak in leaks)


def test_anonymized_default_out_folder_is_not_named_after_the_input(tmp_path, monkeypatch):
    series = _planted_series(tmp_path / PATIENT_FOLDER, slices=1)
    monkeypatch.chdir(tmp_path)
    assert _invoke("reconstruct", series, "--method", "fbp", "--views", 6, "--anonymize", "--quiet").exit_code == 0
    assert [p.name for p in (tmp_path / "ctbird-out").iterdir()] == ["input"]


@pytest.mark.parametrize("declaration", [{"BurnedInAnnotation": "YES"}, {"ImageType": ["DERIVED", "SECONDARY"]}])
def test_burned_in_annotation_is_refused_under_anonymize_unless_accepted(tmp_path, declaration):
    series = _planted_series(tmp_path / PATIENT_FOLDER, slices=1, **declaration)
    out = tmp_path / "out"
    refused = _invoke("reconstruct", series, "--method", "fbp", "--views", 6, "--anonymize", "--out", out)
    assert "--accept-burned-in-annotation" in _one_error_line(refused) and not out.exists()
    accepted = _invoke("reconstruct", series, "--method", "fbp", "--views", 6, "--anonymize",
                       "--accept-burned-in-annotation", "--out", out, "--quiet")
    assert accepted.exit_code == 0, accepted.output
    derived = pydicom.dcmread(out / "fbp.dcm")
    assert derived.BurnedInAnnotation == "YES" and derived.PatientIdentityRemoved == "YES"
    assert find_identifiers(out, _identifiers(series)) == []
    plain = tmp_path / "plain"  # without --anonymize nothing is refused, and the output still says YES
    assert _invoke("reconstruct", series, "--method", "fbp", "--views", 6, "--out", plain, "--quiet").exit_code == 0
    assert pydicom.dcmread(plain / "fbp.dcm").BurnedInAnnotation == "YES"


def test_anonymized_sinogram_run_names_neither_the_sinogram_nor_the_geometry_file(tmp_path):
    folder = tmp_path / PATIENT_FOLDER
    sinogram, geometry = _sinogram_input(folder, PARALLEL_8)
    sinogram = sinogram.rename(folder / f"{PATIENT_FILE}.npy")
    geometry = geometry.rename(folder / f"{PATIENT_FILE}_geometry.toml")
    out = tmp_path / "out"
    result = _invoke("reconstruct", sinogram, "--geometry-file", geometry, "--method", "fbp", "--anonymize",
                     "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert find_identifiers(out, [PATIENT_FILE, PATIENT_FOLDER, str(folder)]) == []
    assert json.loads((out / "metrics.json").read_text())["input"] == "input"


@pytest.fixture(scope="module")
def tiny_rgb_prior_dir(tmp_path_factory):
    from ctbird.priors import DiffusionPrior

    config = {"sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16),
              "layers_per_block": 1, "down_block_types": ("DownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 4}
    return DiffusionPrior.from_config(config, seed=0).save_pretrained(tmp_path_factory.mktemp("rgb") / "tiny")


def test_restore_anonymize_names_no_input(tmp_path, tiny_rgb_prior_dir):
    from PIL import Image

    folder = tmp_path / PATIENT_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in (f"{PATIENT_FILE}.png", f"{PATIENT_FILE}_truth.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    runs = {}
    for flag in ("--anonymize", "--no-anonymize"):
        runs[flag] = tmp_path / flag.strip("-")
        result = _invoke("restore", folder / f"{PATIENT_FILE}.png", "--task", "denoise", "--no-blind", "--prior",
                         tiny_rgb_prior_dir, "--iters", 1, "--delta-t", 500, "--reference",
                         folder / f"{PATIENT_FILE}_truth.png", "--out", runs[flag], "--quiet", flag)
        assert result.exit_code == 0, result.output
    identifiers = [PATIENT_FILE, PATIENT_FOLDER, str(folder)]
    assert find_identifiers(runs["--anonymize"], identifiers) == []
    assert find_identifiers(runs["--no-anonymize"], identifiers)  # the control
    assert json.loads((runs["--anonymize"] / "metrics.json").read_text())["input"] == "input"


# ------------------------------------------------------------------------------------------------------- limits

def test_absurd_view_counts_are_one_error_line_in_a_real_process(tmp_path, phantom):
    """The cases that used to abort in C++ (std::bad_alloc): a real process must exit 1 with one line."""
    sinogram, geometry = _sinogram_input(tmp_path / "measured", 'type = "parallel"\nviews = 20000\ndetectors = 8\n',
                                         np.ones((20000, 8)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    for case in ([str(phantom), "--views", "100000"], [str(sinogram), "--geometry-file", str(geometry)]):
        out = tmp_path / "out"
        done = subprocess.run([sys.executable, "-m", "ctbird", "reconstruct", *case, "--method", "fbp", "--out",
                               str(out)], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "views = " in done.stderr and "limit of 10000" in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "measured"]


@pytest.mark.parametrize("case, needle", [
    ("huge-image-size", "image_size = 20000"),
    ("fan-without-distances", "source_distance and detector_distance"),
    ("unknown-device", "Invalid value for '--device'"),
    ("cuda-without-gpu", "CUDA is not available"),
    ("out-under-a-file", "is a file, not a folder"),
])
def test_impossible_requests_are_one_error_line_before_any_work(tmp_path, phantom, case, needle):
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = [phantom, "--method", "fbp", "--views", 8]
    out = tmp_path / "out"
    if case == "huge-image-size":
        sinogram, geometry = _sinogram_input(tmp_path / "measured", 'type = "parallel"\nviews = 8\nimage_size = 20000\n')
        args = [sinogram, "--geometry-file", geometry, "--method", "fbp"]
    elif case == "fan-without-distances":
        sinogram, geometry = _sinogram_input(tmp_path / "measured", 'type = "fan"\nviews = 8\ndetectors = 46\n')
        args = [sinogram, "--geometry-file", geometry, "--method", "fbp"]
    elif case == "unknown-device":
        args += ["--device", "mps"]
    elif case == "cuda-without-gpu":
        args += ["--device", "cuda"]
    elif case == "out-under-a-file":
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert needle in _one_error_line(_invoke("reconstruct", *args, "--out", out))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_runs_that_cannot_fit_are_refused_with_what_to_change(tmp_path, phantom, monkeypatch):
    from ctbird import limits

    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 64 * 1024 ** 2)
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 2000, "--out", tmp_path / "o"))
    assert "only 64.0 MiB is available" in line and "use fewer views" in line
    assert _invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", tmp_path / "o",
                   "--quiet").exit_code == 0  # a small run still fits
    monkeypatch.setattr(limits, "free_disk_bytes", lambda path: 1000)
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", tmp_path / "p"))
    assert "free some space" in line and not (tmp_path / "p").exists()


@pytest.mark.parametrize("device", ["mps", "meta", "tpu", "cuda:99"])
def test_api_devices_go_through_one_rule(device):
    from ctbird import api
    from operators.geometry import ParallelBeam

    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ConfigError):
        api.resolve_device(device)
    with pytest.raises(ConfigError):
        api.reconstruct(torch.zeros(8, 46), ParallelBeam(views=8, detectors=46), image_size=32, method="fbp",
                        device=device)
    with pytest.raises(ConfigError):
        api.restore(torch.zeros(1, 3, 8, 8), "denoise", prior="unused", device=device)


def test_api_refuses_absurd_sizes_and_runs_that_cannot_fit(monkeypatch):
    from ctbird import api, limits
    from ctbird.simulate import simulate
    from operators.geometry import ParallelBeam

    with pytest.raises(ConfigError, match="image_size = 20000"):
        api.reconstruct(torch.zeros(8, 46), ParallelBeam(views=8, detectors=46), image_size=20000, method="fbp")
    with pytest.raises(ConfigError, match="views = 20000"):
        api.reconstruct(torch.zeros(20000, 46), ParallelBeam(views=20000, detectors=46), image_size=32, method="fbp")
    with pytest.raises(ConfigError, match="image_size = 20000"):
        simulate(np.zeros((8, 8)), views=8, image_size=20000)
    with pytest.raises(ConfigError, match="views = 100000"):
        simulate(np.zeros((8, 8)), views=100000, image_size=32)
    with pytest.raises(ConfigError, match="image_size = 8192"):
        api.restore(torch.zeros(1, 3, 1024, 1024), "sr", sr_factor=8, prior="unused", device="cpu")
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 100 * 1024)
    with pytest.raises(ConfigError, match="only 100.0 KiB is available"):
        api.reconstruct(torch.zeros(8, 46), ParallelBeam(views=8, detectors=46), image_size=32, method="fbp")


# ------------------------------------------------------------------------------------------------- plausibility

@pytest.mark.parametrize("case, words", [
    ("dose", "dose I0 = 1e-09 photons per detector element is extremely low"),
    ("sinogram", "line integrals up to"),
    ("npy-hu", "far outside real CT"),
])
def test_unusual_inputs_warn_in_the_terminal_and_in_metrics(tmp_path, phantom, case, words):
    args = [phantom, "--method", "fbp", "--views", 8]
    if case == "dose":
        args += ["--dose", "1e-9"]
    elif case == "sinogram":
        sinogram, geometry = _sinogram_input(tmp_path / "measured", PARALLEL_8,
                                             np.abs(np.random.default_rng(0).normal(2e3, 10, (8, 46))))
        args = [sinogram, "--geometry-file", geometry, "--method", "fbp"]
    else:
        np.save(phantom, np.load(phantom) * 200)  # -200000 HU: possible in a file, far from any scanner
    out = tmp_path / "out"
    result = _invoke("reconstruct", *args, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert len(warnings) == 1 and words in warnings[0]


def test_impossible_npy_values_are_errors(tmp_path, phantom):
    np.save(phantom, np.full((32, 32), 5e6, np.float32))
    assert "no material reaches" in _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp",
                                                            "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_many_warnings_are_all_recorded_but_printed_up_to_a_bound(capsys):
    from ctbird.cli_safety import MAX_PRINTED_WARNINGS, RunSafety

    safety = RunSafety(anonymize=False)
    safety.warn([f"slice {i}: unusual\nslope" for i in range(MAX_PRINTED_WARNINGS + 5)] + ["slice 0: unusual slope"])
    printed = capsys.readouterr().err.splitlines()
    assert len(safety.warnings) == MAX_PRINTED_WARNINGS + 5 and safety.warnings[0] == "slice 0: unusual slope"
    assert len(printed) == MAX_PRINTED_WARNINGS + 1 and printed[-1] == "warning: more warnings are listed in metrics.json"


def test_clean_runs_record_no_warnings(tmp_path, phantom):
    result = _invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0 and "warning" not in result.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["warnings"] == []


# ------------------------------------------------------------------------------------------------ output safety

def test_force_replaces_a_ctbird_output_but_never_a_users_folder(tmp_path, phantom):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", user, "--force"))
    assert "not written by ctbird" in line and (user / "chapter1.tex").read_text() == "precious"
    out = tmp_path / "out"
    assert _invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", out, "--quiet").exit_code == 0
    replaced = _invoke("reconstruct", phantom, "--method", "sirt", "--views", 9, "--iters", 2, "--out", out,
                       "--force", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "sirt.npy").is_file() and not (out / "fbp.npy").exists()
    (out / "my-notes.txt").write_text("mine")
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", out, "--force"))
    assert "my-notes.txt" in line and (out / "my-notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out", "thesis"]


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "Permission denied")])
def test_unwritable_out_parent_is_refused_before_any_work(tmp_path, phantom, monkeypatch, code, words):
    parent = tmp_path / "shared"
    parent.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    def access(path, mode, *args, **kwargs):  # root may write anywhere: simulate the mount / the permission
        return False if Path(path) == parent else real_access(path, mode, *args, **kwargs)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", access)
    if code == errno.EROFS:
        monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly() if Path(path) == parent else real_statvfs(path))
    calls = []
    monkeypatch.setattr("ctbird.api.reconstruct", lambda *a, **k: calls.append(a))
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", parent / "out"))
    assert words in line and calls == [] and list(parent.iterdir()) == []


def test_os_errors_in_the_write_phase_are_one_line_and_leave_nothing(tmp_path, phantom, monkeypatch):
    import ctbird.io as io

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out" / "fbp.png"))

    monkeypatch.setattr(io, "write_png", full_disk)
    line = _one_error_line(_invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", tmp_path / "out"))
    assert "No space left" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


#: Runs the real CLI with a hook that says when the run reaches a phase (and, for the write phase, stays there).
CHILD = textwrap.dedent("""
    import sys, time
    import ctbird.api as api
    import ctbird.io as io
    phase = sys.argv[1]
    if phase == "compute":
        reconstruct = api.reconstruct
        def announced(*args, **kwargs):
            print("computing", flush=True)
            return reconstruct(*args, **kwargs)
        api.reconstruct = announced
    else:
        write_png = io.write_png
        def stalled(*args, **kwargs):
            write_png(*args, **kwargs)
            print("writing", flush=True)
            time.sleep(120)
        io.write_png = stalled
    from ctbird.cli import main
    main(sys.argv[2:], prog_name="ctbird")
""")


def _cli_child(phase: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, phase, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    expected = "computing" if phase == "compute" else "writing"
    line = child.stdout.readline().strip()
    assert line == expected, (line, child.stderr.read() if child.poll() is not None else "")
    return child


@pytest.mark.parametrize("phase", [pytest.param("compute", marks=pytest.mark.slow), "write"])
def test_sigterm_during_a_cli_run_leaves_no_debris_and_the_previous_result_intact(tmp_path, phantom, phase):
    out = tmp_path / "out"
    assert _invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", out, "--quiet").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    iters = 10 ** 7 if phase == "compute" else 2  # SIRT long enough to be interrupted
    child = _cli_child(phase, "reconstruct", phantom, "--method", "sirt", "--views", 8, "--iters", iters, "--out", out,
                       "--force", "--quiet")
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == -signal.SIGTERM
    child.stdout.close()
    child.stderr.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]  # no .partial, no .old
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_sigkill_debris_is_removed_by_the_next_run_on_the_same_out(tmp_path, phantom):
    out = tmp_path / "out"
    child = _cli_child("write", "reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", out, "--quiet")
    child.kill()
    child.wait(timeout=60)
    child.stdout.close()
    child.stderr.close()
    debris = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(debris) == 1 and not out.exists() and not (debris[0] / MARKER_NAME).exists()
    assert _invoke("reconstruct", phantom, "--method", "fbp", "--views", 8, "--out", out, "--quiet").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"] and (out / MARKER_NAME).is_file()


# ---------------------------------------------------------------------------------------------- DICOM validity

@pytest.mark.parametrize("kind", ["dicom", "dicom-anonymized", "sinogram", "npy"])
def test_derived_dicom_from_every_input_kind_validates(tmp_path, phantom, kind):
    if kind.startswith("dicom"):
        args = [_planted_series(tmp_path / PATIENT_FOLDER, slices=1)]
    elif kind == "sinogram":
        args = [*_sinogram_input(tmp_path / "measured", PARALLEL_8)]
        args.insert(1, "--geometry-file")
    else:
        args = [phantom]
    anonymize = ["--anonymize"] if kind.endswith("anonymized") else []
    out = tmp_path / "out"
    result = _invoke("reconstruct", *args, "--method", "fbp", "--views", 8, *anonymize, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert _dicom_errors(out / "fbp.dcm") == []


def test_anonymized_volume_run_leaks_no_planted_identifier_and_checks_limits(tmp_path):
    """The --slices path applies the same safety as one slice: profile, labels, warnings, limits before work."""
    series = _planted_series(tmp_path / PATIENT_FOLDER, slices=3, RescaleSlope="0.0005", RescaleIntercept="-1024")
    identifiers = _identifiers(series)
    out = tmp_path / "vol"
    result = _invoke("reconstruct", series, "--slices", "all", "--method", "fbp", "--views", 8, "--anonymize",
                     "--out", out, "--work-dir", tmp_path / "work", "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "RescaleSlope 0.0005" in result.stderr
    assert find_identifiers(out, identifiers) == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"] == "input" and metrics["warnings"]
    studies = {pydicom.dcmread(f).StudyInstanceUID for f in (out / "fbp").iterdir()}
    assert len(studies) == 1 and STUDY_UID not in studies
    refused = _invoke("reconstruct", series, "--slices", "all", "--method", "fbp", "--views", 100000,
                      "--out", tmp_path / "absurd", "--quiet")
    assert refused.exit_code != 0 and "views" in refused.output.lower() and "Traceback" not in refused.output
    assert not (tmp_path / "absurd").exists()


def test_anonymized_restore_of_a_dicom_slice_leaks_no_planted_identifier(tmp_path):
    series = _planted_series(tmp_path / PATIENT_FOLDER, slices=1)
    identifiers = _identifiers(series)
    source = next(series.iterdir())
    out = tmp_path / "restored"
    result = _invoke("restore", source, "--task", "denoise", "--method", "tv", "--anonymize", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "restored.dcm").exists() and find_identifiers(out, identifiers) == []
    restored = pydicom.dcmread(out / "restored.dcm")
    assert restored.PatientIdentityRemoved == "YES" and restored.StudyInstanceUID != STUDY_UID
