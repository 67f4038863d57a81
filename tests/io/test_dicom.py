"""DICOM reading (real files: compressed, tilted, multi-frame, broken) and derived-image writing."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ctbird.errors import InputError
from ctbird.io import read_dicom, write_derived_dicom

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ct"  # ../shared beside the checkout
IO_TESTS = DATA / "io-tests"
needs_data = pytest.mark.skipif(not IO_TESTS.is_dir(), reason="shared CT test data not available")
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def test_single_file_applies_rescale_and_keeps_spacing():
    volume = read_dicom(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    assert volume.hu.shape == (1, 128, 128) and volume.hu.dtype == np.float32
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.hu[0], expected)
    assert volume.pixel_spacing_mm == pytest.approx((0.661468, 0.661468))
    assert "PixelData" not in volume.datasets[0]
    assert volume.source_paths == [CT_SMALL]


@needs_data
def test_j2k_series_is_ordered_along_the_slice_normal():
    volume = read_dicom(IO_TESTS / "j2k_lossless_series")
    assert volume.hu.shape == (6, 512, 512)
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert z == sorted(z)  # normal (0,0,1): ascending projected position
    assert -1100 < volume.hu.min() < -900 and volume.hu.max() > 500
    first = pydicom.dcmread(volume.source_paths[0])
    np.testing.assert_array_equal(volume.hu[0], first.pixel_array.astype(np.float32) - 1024.0)


@needs_data
def test_gantry_tilt_series_ordered_by_projected_position_not_file_name():
    volume = read_dicom(IO_TESTS / "gantry_tilt_phantom")
    assert [p.name for p in volume.source_paths] == ["I30", "I280", "I290", "I300"]
    assert volume.pixel_spacing_mm == pytest.approx((0.482421875, 0.482421875))


@needs_data
def test_jpeg_lossless_and_j2k_signedness_edge_case_decode():
    volume = read_dicom(IO_TESTS / "jpeg_lossless")
    assert volume.hu.shape == (2, 512, 512)
    assert volume.hu.min() == -2000.0 - 1024.0  # stored -2000 with intercept -1024, kept
    mismatch = read_dicom(IO_TESTS / "J2K_pixelrep_mismatch.dcm")
    assert mismatch.hu.min() == -2000.0  # signed J2K data in an image whose codestream says unsigned
    toshiba = read_dicom(IO_TESTS / "TOSHIBA_J2K_OpenJPEGv2Regression.dcm")
    assert toshiba.hu.min() == -2048.0  # outside-FOV padding kept; clipping is downstream


@needs_data
def test_eval_slices_that_store_hu_directly():
    volume = read_dicom(DATA / "eval" / "ge_head" / "01.dcm")
    assert volume.hu.shape == (1, 512, 512)
    assert volume.hu.min() == -1500.0 and 1000 < volume.hu.max() < 2100


def _multiframe_from(path: Path, slopes=(1.0, 2.0, 0.5), intercepts=(-1024.0, -1000.0, 0.0)) -> tuple[Dataset, np.ndarray]:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = np.stack([pixels, pixels // 2, pixels // 3]).astype(np.int16)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    per_frame = []
    for slope, intercept in zip(slopes, intercepts):
        transform = Dataset()
        transform.RescaleSlope = slope
        transform.RescaleIntercept = intercept
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    expected = np.stack([f.astype(np.float32) * s + i for f, s, i in zip(frames, slopes, intercepts)])
    return ds, expected


def test_multiframe_uses_per_frame_rescale(tmp_path):
    ds, expected = _multiframe_from(CT_SMALL)
    path = tmp_path / "multi.dcm"
    ds.save_as(path)
    volume = read_dicom(path)
    assert volume.hu.shape == (3, 128, 128)
    np.testing.assert_allclose(volume.hu, expected)
    assert volume.header(2).ReferencedFrameNumber == 3


def test_missing_rescale_and_spacing_warn_and_use_documented_defaults(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing
    path = tmp_path / "bare.dcm"
    ds.save_as(path)
    with pytest.warns(UserWarning) as record:
        volume = read_dicom(path)
    messages = " ".join(str(w.message) for w in record)
    assert "RescaleSlope" in messages and "PixelSpacing" in messages
    np.testing.assert_array_equal(volume.hu[0], ds.pixel_array.astype(np.float32))
    assert volume.pixel_spacing_mm == (1.0, 1.0)


def test_mixed_series_folder_lists_uids_and_series_uid_selects(tmp_path):
    first = pydicom.dcmread(CT_SMALL)
    second = copy.deepcopy(first)
    second.SeriesInstanceUID = pydicom.uid.generate_uid()
    second.SOPInstanceUID = pydicom.uid.generate_uid()
    first.save_as(tmp_path / "a.dcm")
    second.save_as(tmp_path / "b.dcm")
    (tmp_path / "README.txt").write_text("not dicom")
    with pytest.raises(InputError) as info:
        read_dicom(tmp_path)
    assert first.SeriesInstanceUID in str(info.value) and second.SeriesInstanceUID in str(info.value)
    volume = read_dicom(tmp_path, series_uid=second.SeriesInstanceUID)
    assert volume.source_paths == [tmp_path / "b.dcm"]


@pytest.mark.parametrize("case", ["mr", "no-pixels", "text", "empty", "truncated-header", "truncated-pixels",
                                  "missing", "empty-folder", "colour"])
def test_unusable_inputs_raise_one_line_input_errors(tmp_path, case):
    path = tmp_path / "input.dcm"
    raw = CT_SMALL.read_bytes()
    if case == "mr":
        path = Path(get_testdata_file("MR_small.dcm"))
    elif case == "no-pixels":
        path = Path(get_testdata_file("rtplan.dcm"))
    elif case == "text":
        path.write_text("hello, I am not a DICOM file\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated-header":
        path.write_bytes(raw[:700])
    elif case == "truncated-pixels":
        path.write_bytes(raw[: len(raw) - 5000])
    elif case == "missing":
        path = tmp_path / "nope.dcm"
    elif case == "empty-folder":
        path = tmp_path / "folder"
        path.mkdir()
    elif case == "colour":
        ds = pydicom.dcmread(CT_SMALL)
        ds.SamplesPerPixel = 3
        ds.save_as(path)
    with pytest.raises(InputError) as info:
        read_dicom(path)
    message = str(info.value)
    assert "\n" not in message and str(path.name) in message
    if case == "mr":
        assert "is an MR image; ctbird reconstructs CT" in message


@needs_data
def test_missing_decoder_names_the_extra(monkeypatch):
    import pydicom.pixels

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    with pytest.raises(InputError, match=r'pip install "ctbird\[jpeg\]"'):
        read_dicom(IO_TESTS / "TOSHIBA_J2K_OpenJPEGv2Regression.dcm")


def test_derived_dicom_round_trip_with_new_uids_and_source_reference(tmp_path):
    volume = read_dicom(CT_SMALL)
    source = volume.header(0)
    hu = np.linspace(-1024.5, 2500.4, 64 * 64, dtype=np.float32).reshape(64, 64)
    path = tmp_path / "bird.dcm"
    write_derived_dicom(hu, source, path, method_name="bird", window=(-160, 240))
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert back.SOPClassUID == pydicom.uid.CTImageStorage and back.Modality == "CT"
    assert list(back.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"] and "bird" in back.SeriesDescription
    assert back.SOPInstanceUID != source.SOPInstanceUID and back.SeriesInstanceUID != source.SeriesInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.StudyInstanceUID == source.StudyInstanceUID and back.PatientName == source.PatientName
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (back.Rows, back.Columns, back.BitsAllocated, back.PixelRepresentation) == (64, 64, 16, 1)
    assert [float(v) for v in back.PixelSpacing] == pytest.approx([0.661468 * 2] * 2, rel=1e-5)
    assert list(back.ImagePositionPatient) == list(source.ImagePositionPatient)
    assert float(back.WindowCenter) == 40.0 and float(back.WindowWidth) == 400.0
    reread = read_dicom(path).hu[0]
    np.testing.assert_allclose(reread, hu, atol=0.5 * float(back.RescaleSlope) + 1e-4)


def test_derived_dicom_large_range_uses_a_scaled_slope(tmp_path):
    hu = np.array([[-50000.0, 0.0], [10.0, 60000.0]], dtype=np.float32)
    write_derived_dicom(hu, None, tmp_path / "x.dcm", method_name="fbp")
    back = pydicom.dcmread(tmp_path / "x.dcm")
    assert float(back.RescaleSlope) > 1
    with pytest.warns(UserWarning, match="outside real CT"):
        reread = read_dicom(tmp_path / "x.dcm")
    np.testing.assert_allclose(reread.hu[0], hu, atol=float(back.RescaleSlope))
    assert any("outside real CT" in note for note in reread.warnings)


def test_anonymize_removes_identity_and_non_dicom_sources_get_a_valid_header(tmp_path):
    source = read_dicom(CT_SMALL).header(0)
    hu = np.zeros((8, 8), np.float32)
    write_derived_dicom(hu, source, tmp_path / "anon.dcm", method_name="fbp", anonymize=True)
    anon = pydicom.dcmread(tmp_path / "anon.dcm")
    assert anon.PatientIdentityRemoved == "YES"
    assert str(anon.PatientName) == "" and anon.PatientID == "" and "InstitutionName" not in anon
    assert anon.StudyInstanceUID != source.StudyInstanceUID
    write_derived_dicom(hu, None, tmp_path / "bare.dcm", method_name="bird", pixel_spacing_mm=(0.5, 0.5))
    bare = pydicom.dcmread(tmp_path / "bare.dcm")
    assert bare.Modality == "CT" and [float(v) for v in bare.PixelSpacing] == [0.5, 0.5]
    assert "SourceImageSequence" not in bare
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(tmp_path / "bare.dcm")


@needs_data
def test_source_reference_falls_back_to_file_meta_uids(tmp_path):
    volume = read_dicom(IO_TESTS / "j2k_lossless_series")
    header = volume.header(0)
    assert header.SOPInstanceUID == ""  # this anonymized series keeps its UIDs in the file meta only
    write_derived_dicom(volume.hu[0], header, tmp_path / "d.dcm", method_name="fbp")
    reference = pydicom.dcmread(tmp_path / "d.dcm").SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == header.file_meta.MediaStorageSOPInstanceUID
    assert reference.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
