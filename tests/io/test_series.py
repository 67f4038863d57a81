"""Volumes in and out: slice selection, series/multi-frame/NumPy readers, derived series and volume .npy writers."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ctbird.errors import ConfigError, InputError, OutputError
from ctbird.io.series import (parse_slices, read_dicom_volume, read_hu_stack, read_sinogram_stack, read_volume,
                              slice_headers, write_derived_series, write_volume_npy)

CT_SMALL = get_testdata_file("CT_small.dcm")


@pytest.mark.parametrize(("text", "expected"), [
    ("all", [0, 1, 2, 3, 4, 5]), (None, [0, 1, 2, 3, 4, 5]), ("1:4", [1, 2, 3]), (":2", [0, 1]), ("4:", [4, 5]),
    ("-2:", [4, 5]), ("5,1,1,3", [1, 3, 5]), ("-1", [5]), ([3, 0, 3], [0, 3]),
])
def test_parse_slices_gives_sorted_unique_indices(text, expected):
    assert parse_slices(text, 6) == expected


@pytest.mark.parametrize("text", ["6", "0,9", "4:2", "3:3", "a:b", "1;2", "", ",", "-7", [], [1.5]])
def test_parse_slices_rejects_bad_selections_with_one_line(text):
    with pytest.raises(ConfigError) as info:
        parse_slices(text, 6)
    assert "\n" not in str(info.value)


def _slice_file(path, z: float, value: int, instance: int, series_uid: str) -> None:
    ds = pydicom.dcmread(CT_SMALL)
    pixels = np.full((ds.Rows, ds.Columns), value, dtype=np.int16)
    ds.PixelData = pixels.tobytes()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-80.0, -80.0, z]
    ds.InstanceNumber = instance
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path)


@pytest.fixture
def series_folder(tmp_path):
    """Four slices whose file names run against their positions (z = 10, 12.5, 15, 17.5 mm; value = 100 * slice)."""
    folder = tmp_path / "series"
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    for k, z in enumerate([10.0, 12.5, 15.0, 17.5]):
        _slice_file(folder / f"IM{9 - k}.dcm", z, 100 * k, instance=7 - k, series_uid=uid)
    return folder


def test_series_folder_is_sorted_by_position_along_the_normal(series_folder):
    volume = read_volume(series_folder)
    slope = float(pydicom.dcmread(CT_SMALL).RescaleSlope)
    intercept = float(pydicom.dcmread(CT_SMALL).RescaleIntercept)
    assert volume.kind == "dicom" and volume.n_slices == 4
    np.testing.assert_allclose(volume.hu[:, 0, 0], [k * 100 * slope + intercept for k in range(4)])
    np.testing.assert_allclose(volume.positions_mm[:, 2], [10.0, 12.5, 15.0, 17.5])
    assert volume.slice_spacing_mm == pytest.approx(2.5)
    assert volume.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert [float(h.ImagePositionPatient[2]) for h in volume.headers] == [10.0, 12.5, 15.0, 17.5]


def test_multiframe_frames_are_sorted_by_per_frame_position(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    frames = np.stack([np.full((ds.Rows, ds.Columns), v, dtype=np.int16) for v in (300, 100, 200)])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    per_frame = []
    for z in (30.0, 10.0, 20.0):
        group, position, transform = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, z]
        transform.RescaleSlope, transform.RescaleIntercept = 1, -1000
        group.PlanePositionSequence = Sequence([position])
        group.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)
    volume = read_dicom_volume(path)
    np.testing.assert_array_equal(volume.hu[:, 5, 5], [-900.0, -800.0, -700.0])
    np.testing.assert_allclose(volume.positions_mm[:, 2], [10.0, 20.0, 30.0])
    assert [h.ReferencedFrameNumber for h in volume.headers] == [2, 3, 1]
    assert volume.slice_spacing_mm == pytest.approx(10.0)


def test_numpy_volumes_and_sinogram_stacks(tmp_path):
    stack = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "hu.npy", stack)
    volume = read_volume(tmp_path / "hu.npy")
    assert volume.kind == "image" and volume.n_slices == 2
    np.testing.assert_array_equal(volume.hu, stack)
    np.save(tmp_path / "one.npy", stack[0])
    assert read_hu_stack(tmp_path / "one.npy").hu.shape == (1, 3, 4)
    (tmp_path / "geometry.toml").write_text('type = "parallel"\nviews = 5\ndetectors = 7\nimage_size = 4\n')
    np.save(tmp_path / "sino.npy", np.ones((3, 5, 7), dtype=np.float32))
    sinograms = read_volume(tmp_path / "sino.npy", geometry_path=tmp_path / "geometry.toml")
    assert sinograms.kind == "sinogram" and sinograms.n_slices == 3 and sinograms.image_size == 4
    assert sinograms.sinograms.shape == (3, 5, 7)
    np.save(tmp_path / "bad.npy", np.ones((3, 6, 7), dtype=np.float32))
    with pytest.raises(InputError, match="6 views"):
        read_sinogram_stack(tmp_path / "bad.npy", tmp_path / "geometry.toml")
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.npy")


def test_derived_series_is_one_series_in_the_source_study(series_folder, tmp_path):
    volume = read_volume(series_folder)
    out = tmp_path / "bird"
    out.mkdir()
    images = [np.full((128, 128), 10.0 * k, dtype=np.float32) for k in (1, 2, 3)]
    uid = write_derived_series(images, slice_headers(volume, [1, 2, 3], shape=(128, 128)), out, method_name="bird",
                               pixel_spacing_mm=volume.pixel_spacing_mm)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["IMG00001.dcm", "IMG00002.dcm", "IMG00003.dcm"]
    written = [pydicom.dcmread(f) for f in files]
    assert {ds.SeriesInstanceUID for ds in written} == {uid}
    assert {ds.StudyInstanceUID for ds in written} == {volume.headers[0].StudyInstanceUID}
    assert [int(ds.InstanceNumber) for ds in written] == [1, 2, 3]
    assert [float(ds.ImagePositionPatient[2]) for ds in written] == [12.5, 15.0, 17.5]
    assert len({ds.SOPInstanceUID for ds in written}) == 3
    back = read_volume(out)  # a reader opens it as one series, in slice order
    np.testing.assert_allclose(back.hu[:, 0, 0], [10.0, 20.0, 30.0])


def test_anonymized_and_non_dicom_series_share_one_study(tmp_path, series_folder):
    volume = read_volume(series_folder)
    out = tmp_path / "anon"
    out.mkdir()
    write_derived_series(lambda k: np.zeros((128, 128)), slice_headers(volume, [0, 1, 2], shape=(128, 128)), out,
                         method_name="fbp", pixel_spacing_mm=(1.0, 1.0), anonymize=True)
    written = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len({ds.StudyInstanceUID for ds in written}) == 1 and len({ds.FrameOfReferenceUID for ds in written}) == 1
    assert written[0].StudyInstanceUID != volume.headers[0].StudyInstanceUID
    assert written[0].FrameOfReferenceUID != volume.headers[0].FrameOfReferenceUID
    assert all(ds.PatientIdentityRemoved == "YES" and ds.PatientName == "" for ds in written)
    for header in volume.headers:  # a source without study/frame UIDs still gives one series in one study
        del header.StudyInstanceUID, header.FrameOfReferenceUID
    out = tmp_path / "bare"
    out.mkdir()
    write_derived_series(lambda k: np.zeros((128, 128)), slice_headers(volume, [0, 1, 2], shape=(128, 128)), out,
                         method_name="fbp", pixel_spacing_mm=(1.0, 1.0))
    written = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len({ds.StudyInstanceUID for ds in written}) == 1 and len({ds.FrameOfReferenceUID for ds in written}) == 1
    assert "StudyInstanceUID" not in volume.headers[0]  # the source headers are never changed
    np.save(tmp_path / "hu.npy", np.zeros((3, 8, 8), dtype=np.float32))
    plain = read_volume(tmp_path / "hu.npy")
    out = tmp_path / "plain"
    out.mkdir()
    write_derived_series(np.zeros((3, 8, 8)), slice_headers(plain, [0, 1, 2], shape=(8, 8)), out, method_name="fbp",
                         pixel_spacing_mm=(1.0, 1.0))
    written = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len({ds.StudyInstanceUID for ds in written}) == 1 and len({ds.FrameOfReferenceUID for ds in written}) == 1
    assert [float(ds.ImagePositionPatient[2]) for ds in written] == [0.0, 1.0, 2.0]


def test_volume_npy_streams_slices(tmp_path):
    stack = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    write_volume_npy(lambda k: stack[k], 5, tmp_path / "v.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), stack)
    with pytest.raises(OutputError, match="one size"):
        write_volume_npy(lambda k: np.zeros((6, 7 + k)), 2, tmp_path / "w.npy")
    assert not (tmp_path / "w.npy").exists()
