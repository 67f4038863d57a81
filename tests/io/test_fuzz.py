"""Fuzzing: mutated or truncated real files only ever raise ctbird's own errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from ctbird.errors import CtbirdError
from ctbird.io import read_dicom, read_sinogram

CT_SMALL = Path(get_testdata_file("CT_small.dcm")).read_bytes()
JPEG_LOSSLESS = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ct" / "io-tests" / "jpeg_lossless"
                 / "1-101.dcm")  # ../shared beside the checkout
SEEDS = [CT_SMALL] + ([JPEG_LOSSLESS.read_bytes()] if JPEG_LOSSLESS.is_file() else [])
FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        # Bias mutations towards the header, where they change structure rather than pixel values.
        limit = len(data) if draw(st.booleans()) else min(len(data), 1500)
        position = draw(st.integers(0, max(0, limit - 1)))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _only_ctbird_errors(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except CtbirdError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(data=mutated(SEEDS))
def test_read_dicom_on_mutated_files(tmp_path, data):
    path = tmp_path / "fuzz.dcm"
    path.write_bytes(data)
    _only_ctbird_errors(lambda: read_dicom(path))


def _sinogram_seed(tmp_path) -> tuple[bytes, bytes]:
    path = tmp_path / "seed.npy"
    np.save(path, np.linspace(0, 1, 4 * 6, dtype=np.float32).reshape(4, 6))
    toml = b'type = "fan"\nviews = 4\ndetectors = 6\nangle_range_deg = [0, 360]\nsource_distance = 50.0\ndetector_distance = 20.0\nimage_size = 4\n'
    return path.read_bytes(), toml


@FUZZ
@given(npy_mutations=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4),
       toml_mutations=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 127)), max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 300)))
def test_read_sinogram_on_mutated_files(tmp_path, npy_mutations, toml_mutations, cut):
    npy, toml = (bytearray(b) for b in _sinogram_seed(tmp_path))
    for position, value in npy_mutations:
        npy[position % len(npy)] = value
    for position, value in toml_mutations:
        toml[position % len(toml)] = value
    if cut is not None:
        npy = npy[:cut]
    (tmp_path / "s.npy").write_bytes(bytes(npy))
    (tmp_path / "g.toml").write_bytes(bytes(toml))
    _only_ctbird_errors(lambda: read_sinogram(tmp_path / "s.npy", tmp_path / "g.toml"))


def test_fuzz_seeds_are_valid(tmp_path):
    """The un-mutated seeds read fine, so the fuzz tests exercise real failure paths."""
    (tmp_path / "seed.dcm").write_bytes(CT_SMALL)
    assert read_dicom(tmp_path / "seed.dcm").hu.shape == (1, 128, 128)
    npy, toml = _sinogram_seed(tmp_path)
    (tmp_path / "s.npy").write_bytes(npy)
    (tmp_path / "g.toml").write_bytes(toml)
    assert read_sinogram(tmp_path / "s.npy", tmp_path / "g.toml")[0].shape == (4, 6)
