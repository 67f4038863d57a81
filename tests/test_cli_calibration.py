"""``ctbird reconstruct --calibrate``: one estimate per run used by every method, geometry_calibrated.json (a valid
--geometry-file that reproduces the measurement), metrics.json's calibration section, simulated scanner errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ctbird.solvers.calibrate as calibrate_module
from ctbird.cli import main
from ctbird.io.sinogram import read_geometry_file
from ctbird.simulate import simulate


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(tmp_path / "radon-cache"))


@pytest.fixture
def phantom_npy(tmp_path):
    """A 48x48 HU phantom: water disk with bone and air inserts."""
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    hu = np.full((48, 48), -1000.0, np.float32)
    hu[xx**2 + yy**2 < 0.7] = 0.0
    hu[(xx - 0.3) ** 2 + (yy + 0.1) ** 2 < 0.05] = 800.0
    hu[(xx + 0.3) ** 2 + (yy - 0.2) ** 2 < 0.03] = -600.0
    path = tmp_path / "inputs" / "phantom.npy"
    path.parent.mkdir()
    np.save(path, hu)
    return path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_simulated_errors_are_estimated_once_and_used_by_every_method(tmp_path, phantom_npy, monkeypatch):
    calls = []
    original = calibrate_module.calibrate
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *a, **k: calls.append(1) or original(*a, **k))
    common = ["--method", "fbp,sirt", "--views", 30, "--iters", 40, "--center-offset", 2.5, "--angle-jitter", 0.2,
              "--quiet"]
    out, plain = tmp_path / "calibrated", tmp_path / "nominal"
    result = _invoke("reconstruct", phantom_npy, *common, "--calibrate", "center,angles", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert _invoke("reconstruct", phantom_npy, *common, "--out", plain).exit_code == 0
    assert len(calls) == 1 and not (plain / "geometry_calibrated.json").exists()

    metrics = json.loads((out / "metrics.json").read_text())
    section = metrics["calibration"]
    assert section["estimate"] == ["center", "angles"] and section["search"] == "consistency"
    assert section["geometry_file"] == "geometry_calibrated.json" and section["seconds"] > 0
    assert section["truth"]["center_offset"] == 2.5 and len(section["truth"]["angle_offsets_deg"]) == 30
    assert abs(section["errors"]["center_offset"]) < 0.15
    assert section["errors"]["center_offset"] == pytest.approx(section["center_offset"] - 2.5)
    assert metrics["geometry_errors"]["center_offset"] == 2.5
    assert "center_offset" not in json.loads((out / "geometry.json").read_text())  # what the methods were given
    uncalibrated = json.loads((plain / "metrics.json").read_text())
    assert "calibration" not in uncalibrated
    for method in ("fbp", "sirt"):
        assert metrics["methods"][method]["psnr"] > uncalibrated["methods"][method]["psnr"] + 3.0, method

    geometry, size = read_geometry_file(out / "geometry_calibrated.json")
    assert size == 48 and geometry.center_offset == pytest.approx(section["center_offset"])
    assert np.allclose(np.rad2deg(geometry.angle_offsets), section["angle_offsets_deg"])
    measured = torch.from_numpy(np.load(out / "sinogram.npy"))
    hu = np.load(phantom_npy)

    def misfit(g) -> float:
        return float((simulate(hu, image_size=48, geometry=g).sinogram[0, 0] - measured).norm() / measured.norm())

    assert misfit(geometry) < 0.25 * misfit(geometry.calibrated())


def test_measured_sinogram_calibrated_geometry_file_reproduces_the_run(tmp_path):
    from operators.geometry import FanBeam
    from operators.radon import Radon

    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "geometry.toml").write_text('type = "fan"\nviews = 30\nsource_distance = 64.0\n'
                                          'detector_distance = 32.0\nimage_size = 24\n')
    coords = torch.arange(24.0) - 11.5
    image = (torch.exp(-((coords[None, :] - 3) ** 2 + (coords[:, None] + 2) ** 2) / 30.0) * 0.02)[None, None]
    true = FanBeam(views=30, source_distance=64.0, detector_distance=32.0).resolved(24).calibrated(-1.7)
    np.save(folder / "measured.npy", Radon(true, 24)(image)[0, 0].numpy())
    first, second = tmp_path / "first", tmp_path / "second"
    result = _invoke("reconstruct", folder / "measured.npy", "--geometry-file", folder / "geometry.toml",
                     "--method", "fbp", "--calibrate", "center", "--out", first, "--quiet")
    assert result.exit_code == 0, result.output
    section = json.loads((first / "metrics.json").read_text())["calibration"]
    assert abs(section["center_offset"] + 1.7) < 0.1 and "truth" not in section
    again = _invoke("reconstruct", folder / "measured.npy", "--geometry-file", first / "geometry_calibrated.json",
                    "--method", "fbp", "--out", second, "--quiet")
    assert again.exit_code == 0, again.output
    assert np.allclose(np.load(first / "fbp.npy"), np.load(second / "fbp.npy"), atol=1e-3)


def test_calibration_option_errors_write_nothing(tmp_path, phantom_npy):
    bad = _invoke("reconstruct", phantom_npy, "--method", "fbp", "--calibrate", "center,tilt", "--out", tmp_path / "o")
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "tilt" in bad.output
    sinogram = phantom_npy.parent / "s.npy"
    np.save(sinogram, np.zeros((8, 20), np.float32))
    (phantom_npy.parent / "g.toml").write_text('type = "parallel"\nviews = 8\ndetectors = 20\n')
    mixed = _invoke("reconstruct", sinogram, "--geometry-file", phantom_npy.parent / "g.toml", "--method", "fbp",
                    "--center-offset", 1.0, "--out", tmp_path / "o")
    assert mixed.exit_code == 1 and "--center-offset" in mixed.output
    negative = CliRunner().invoke(main, ["reconstruct", str(phantom_npy), "--angle-jitter", "-1", "--out",
                                         str(tmp_path / "o")])
    assert negative.exit_code == 2
    assert not (tmp_path / "o").exists()
