"""Sinogram + geometry file reading and validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ctbird.errors import InputError
from ctbird.io import read_geometry_file, read_sinogram
from operators.geometry import FanBeam, ParallelBeam


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_parallel_with_degrees_and_npy(tmp_path):
    geometry_file = _write(tmp_path, "g.toml", 'type = "parallel"\nviews = 4\ndetectors = 7\nangle_range_deg = [0, 180]\n')
    np.save(tmp_path / "s.npy", np.ones((4, 7), np.float64))
    data, geometry = read_sinogram(tmp_path / "s.npy", geometry_file)
    assert data.dtype == np.float32 and data.shape == (4, 7)
    assert isinstance(geometry, ParallelBeam) and geometry.angle_range == pytest.approx((0.0, math.pi))


def test_json_fan_with_explicit_angles_and_npz_stack(tmp_path):
    spec = {"type": "fan", "angles_deg": [0, 90, 180], "source_distance": 500, "detector_distance": 250,
            "pixel_spacing": 0.5, "image_size": 16}
    geometry_file = _write(tmp_path, "g.json", json.dumps(spec))
    np.savez(tmp_path / "s.npz", sinogram=np.zeros((2, 3, 23), np.float32), other=np.zeros(1))
    data, geometry = read_sinogram(tmp_path / "s.npz", geometry_file)
    assert data.shape == (2, 3, 23)
    assert isinstance(geometry, FanBeam) and geometry.views == 3 and geometry.detectors == 23  # ceil(16 sqrt2)
    assert geometry.angles_rad() == pytest.approx([0, math.pi / 2, math.pi])
    assert read_geometry_file(geometry_file)[1] == 16


def test_geometry_to_dict_round_trips_through_a_file(tmp_path):
    original = FanBeam(views=5, source_distance=300.0, detector_distance=100.0, detectors=9)
    path = _write(tmp_path, "g.json", json.dumps(original.to_dict()))
    assert read_geometry_file(path)[0] == original


def test_shape_mismatch_names_both_shapes(tmp_path):
    geometry_file = _write(tmp_path, "g.toml", 'type = "parallel"\nviews = 30\ndetectors = 64\n')
    np.save(tmp_path / "s.npy", np.zeros((30, 63), np.float32))
    with pytest.raises(InputError, match=r"30 views x 63 detectors.*30 views x 64 detectors"):
        read_sinogram(tmp_path / "s.npy", geometry_file)


@pytest.mark.parametrize("text, match", [
    ('type = "cone"\nviews = 3\n', "type"),
    ('type = "parallel"\nviews = 3\nangles_deg = [0, 1]\n', "3"),
    ('type = "parallel"\nviews = 3\nangle_range_deg = [0, 180]\nangles_rad = [0, 1, 2]\n', "only one"),
    ('type = "parallel"\nviews = 3\nwobble = 2\n', "wobble"),
    ('type = "parallel"\nviews = [3\n', "not valid TOML"),
    ('type = "parallel"\nviews = 3\nimage_size = -4\n', "image_size"),
])
def test_bad_geometry_files(tmp_path, text, match):
    np.save(tmp_path / "s.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(InputError, match=match):
        read_sinogram(tmp_path / "s.npy", _write(tmp_path, "g.toml", text))


@pytest.mark.parametrize("array", [np.zeros(5), np.array([["a", "b"]]), np.full((3, 5), np.nan)])
def test_bad_sinogram_arrays(tmp_path, array):
    geometry_file = _write(tmp_path, "g.toml", 'type = "parallel"\nviews = 3\ndetectors = 5\n')
    np.save(tmp_path / "s.npy", array)
    with pytest.raises(InputError):
        read_sinogram(tmp_path / "s.npy", geometry_file)


def test_unreadable_files(tmp_path):
    geometry_file = _write(tmp_path, "g.toml", 'type = "parallel"\nviews = 3\ndetectors = 5\n')
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    for path in (tmp_path / "bad.npy", tmp_path / "missing.npy", geometry_file):
        with pytest.raises(InputError):
            read_sinogram(path, geometry_file)
    with pytest.raises(InputError, match=".toml or .json"):
        read_sinogram(tmp_path / "bad.npy", _write(tmp_path, "g.yaml", "type: parallel"))
