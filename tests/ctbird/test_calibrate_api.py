"""``ctbird.reconstruct(..., calibrate=...)``: validation, the estimates it carries, and that every method then
reconstructs with the calibrated geometry (parallel and fan), plus the simulation of scanner errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ctbird
from ctbird.errors import ConfigError
from ctbird.metrics import psnr
from ctbird.phantoms import shepp_logan
from ctbird.simulate import simulate, simulation_geometry
from ctbird.solvers.calibrate import CalibrationResult, parse_estimate
from operators import geometry_from_dict

N, VIEWS = 32, 30
RANGE = (-1000.0, 1000.0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(tmp_path / "radon-cache"))


def phantom_hu() -> np.ndarray:
    return (shepp_logan(N)[0, 0].numpy() * 1000.0 - 1000.0).astype(np.float32)


def acquisition(kind: str, offset: float, jitter: float = 0.0):
    geometry = simulation_geometry(kind, VIEWS, N, center_offset=offset, angle_jitter_deg=jitter, seed=3)
    return simulate(phantom_hu(), image_size=N, geometry=geometry)


def test_parse_estimate_accepts_names_and_rejects_others():
    assert parse_estimate(None) is None and parse_estimate("") is None and parse_estimate(()) is None
    assert parse_estimate("center") == ("center",)
    assert parse_estimate("angles, center") == ("center", "angles")
    assert parse_estimate(["center", "angles"]) == ("center", "angles")
    for bad in ("tilt", "center,center", ("center", 3), 5):
        with pytest.raises(ConfigError, match="calibrate"):
            parse_estimate(bad)


def test_reconstruct_rejects_a_bad_calibrate_option_before_any_work():
    acq = acquisition("parallel", 0.0)
    with pytest.raises(ConfigError, match="tilt"):
        ctbird.reconstruct(acq.sinogram, acq.geometry, image_size=N, method="fbp", calibrate=("tilt",))
    with pytest.raises(ConfigError, match="one sinogram"):
        ctbird.reconstruct(acq.sinogram.expand(2, -1, -1, -1), acq.geometry, image_size=N, method="fbp",
                           calibrate="center")


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_calibrated_reconstruction_recovers_the_centre_and_the_image(kind):
    acq = acquisition(kind, 2.3)
    truth = acq.truth_hu

    def score(result) -> float:
        return psnr(result.image[0, 0].numpy(), truth, data_range=RANGE)

    for method in ("fbp", "sirt"):
        nominal = ctbird.reconstruct(acq.sinogram, acq.nominal_geometry, image_size=N, method=method)
        true = ctbird.reconstruct(acq.sinogram, acq.geometry, image_size=N, method=method)
        calibrated = ctbird.reconstruct(acq.sinogram, acq.nominal_geometry, image_size=N, method=method,
                                        calibrate=("center",))
        assert nominal.calibration is None and nominal.geometry == acq.nominal_geometry
        assert isinstance(calibrated.calibration, CalibrationResult)
        assert abs(calibrated.calibration.center_offset - 2.3) < 0.1
        assert calibrated.geometry.center_offset == calibrated.calibration.center_offset
        assert calibrated.calibration.angle_offsets_deg is None
        assert score(calibrated) > score(true) - 0.5, method
        assert score(calibrated) > score(nominal) + 3.0, method


def test_calibrating_angles_too_reports_mean_free_offsets_and_keeps_the_units():
    acq = acquisition("parallel", -1.5, jitter=0.3)
    nominal = acq.nominal_geometry
    physical = type(nominal)(views=VIEWS, detectors=nominal.detectors, detector_spacing=0.5, pixel_spacing=0.5)
    result = ctbird.reconstruct(acq.sinogram, physical, image_size=N, method="fbp", calibrate="center,angles")
    summary = result.calibration.summary()
    assert summary["estimate"] == ["center", "angles"] and summary["search"] == "consistency"
    assert abs(summary["center_offset"] + 1.5) < 0.15
    assert len(summary["angle_offsets_deg"]) == VIEWS and abs(np.mean(summary["angle_offsets_deg"])) < 1e-6
    assert result.geometry.pixel_spacing == 0.5 and result.geometry.detector_spacing == 0.5
    again = geometry_from_dict(result.geometry.to_dict())
    assert again.calibrated() == result.geometry.calibrated() and again.center_offset == result.geometry.center_offset
    assert np.allclose(again.angle_offsets, result.geometry.angle_offsets, rtol=0, atol=1e-15)
    assert result.seconds >= summary["seconds"] > 0


def test_simulated_scanner_errors():
    plain = simulation_geometry("fan", VIEWS, N)
    assert simulation_geometry("fan", VIEWS, N, center_offset=0.0, angle_jitter_deg=0.0) == plain
    errors = simulation_geometry("fan", VIEWS, N, center_offset=1.25, angle_jitter_deg=0.2, seed=1)
    degrees = np.rad2deg(np.asarray(errors.angle_offsets))
    assert errors.center_offset == 1.25 and abs(degrees.mean()) < 1e-9 and 0.1 < degrees.std() < 0.3
    assert errors.calibrated() == plain
    acq = simulate(phantom_hu(), image_size=N, geometry=errors)
    assert acq.nominal_geometry == plain
    record = acq.settings()
    assert record["geometry"] == plain.to_dict()
    assert record["geometry_errors"]["center_offset"] == 1.25
    assert np.allclose(record["geometry_errors"]["angle_offsets_deg"], degrees)
    assert not torch.allclose(acq.sinogram, simulate(phantom_hu(), image_size=N, geometry=plain).sinogram)
    with pytest.raises(ConfigError, match="angle_jitter_deg"):
        simulation_geometry("parallel", VIEWS, N, angle_jitter_deg=-0.1)
