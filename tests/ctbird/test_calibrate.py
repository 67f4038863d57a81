"""Geometry calibration: the classical centre finder, the consistency search and the joint BIRD refinement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctbird.calibration import coarse_to_fine, find_center_consistency, find_center_sharpness, shift_sinogram
from ctbird.errors import ConfigError, InputError
from ctbird.phantoms import shepp_logan
from ctbird.solvers.calibrate import CalibrationParameters, CalibrationResult, calibrate, match_projections
from operators import FanBeam, ParallelBeam, Radon


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(tmp_path / "radon-cache"))


def measured(geometry, n: int, offset: float, angle_offsets=None) -> torch.Tensor:
    """Shepp-Logan (attenuation per pixel ~0.02) projected with the true, offset geometry (ASTRA matrix)."""
    image = shepp_logan(n).reshape(1, 1, n, n).clamp_min(0) * 0.02
    return Radon(geometry.calibrated(offset, angle_offsets), n)(image)


def test_shift_sinogram_moves_by_whole_and_fractional_cells():
    y = torch.zeros(1, 1, 2, 40)
    y[..., 10] = 1.0
    assert torch.allclose(shift_sinogram(y, 3.0)[..., 13], torch.ones(1, 1, 2), atol=1e-9)
    moved = shift_sinogram(torch.exp(-0.5 * ((torch.arange(40.0) - 20) / 3) ** 2).expand(2, 1, 1, 40),
                           torch.tensor([0.5, -1.25]))
    centroids = (moved * torch.arange(40.0)).sum(-1) / moved.sum(-1)
    assert torch.allclose(centroids.flatten(), torch.tensor([20.5, 18.75]), atol=1e-4)


def test_coarse_to_fine_finds_a_parabola_vertex_between_grid_points():
    estimate, offsets, scores = coarse_to_fine(lambda c: (c - 1.337) ** 2, radius=4.0)
    assert estimate == pytest.approx(1.337, abs=1e-9)
    assert np.all(np.diff(offsets) > 0) and scores.argmin() == np.abs(offsets - 1.337).argmin()


def test_classical_finder_finds_2p5_cells_at_180_views():
    geometry = ParallelBeam(views=180)
    found = find_center_sharpness(measured(geometry, 48, 2.5), geometry, 48, radius=4.0)
    assert found.method == "sharpness"
    assert abs(found.center_offset - 2.5) < 0.15, found.center_offset


@pytest.mark.parametrize("geometry", [ParallelBeam(views=30), FanBeam(views=30, source_distance=96.0, detector_distance=48.0)],
                         ids=["parallel", "fan"])
def test_consistency_search_finds_the_offset_at_30_views(geometry):
    for offset in (-1.3, 2.5):
        found = find_center_consistency(measured(geometry, 48, offset), geometry, 48, radius=4.0)
        assert abs(found.center_offset - offset) < 0.1, (offset, found.center_offset)


def test_searches_reject_bad_input():
    geometry = ParallelBeam(views=6)
    with pytest.raises(InputError, match="6 views"):
        find_center_consistency(torch.zeros(5, 23), geometry, 16)
    with pytest.raises(InputError, match="NaN"):
        find_center_sharpness(torch.full((6, 23), math.nan), geometry, 16)
    with pytest.raises(ConfigError, match="subset"):
        calibrate(torch.zeros(6, 23), geometry, 16, estimate=("tilt",))
    with pytest.raises(ConfigError, match="rounds"):
        match_projections(torch.zeros(6, 23), geometry, 16, rounds=0)


def test_calibrate_without_prior_returns_the_search_and_a_usable_geometry():
    geometry = ParallelBeam(views=30)
    y = measured(geometry, 32, 1.5)
    result = calibrate(y, geometry, 32, radius=3.0)
    assert isinstance(result, CalibrationResult) and result.refined is None
    assert abs(result.center_offset - 1.5) < 0.1
    assert result.geometry.center_offset == result.center_offset and result.summary()["center_offset"] == result.center_offset
    # the calibrated matrix projector explains the data far better than the nominal one
    image = shepp_logan(32).reshape(1, 1, 32, 32).clamp_min(0) * 0.02
    assert (Radon(result.geometry, 32)(image) - y).norm() < 0.2 * (Radon(geometry, 32)(image) - y).norm()


def test_calibration_parameters_are_mean_free_angles_and_match_the_torch_radon():
    geometry = ParallelBeam(views=4, detectors=23)
    model = CalibrationParameters(Radon(geometry, 16, backend="torch"), ("center", "angles"))
    with torch.no_grad():
        model.center_offset.fill_(0.7)
        model.angle_offsets_deg.copy_(torch.tensor([1.0, 2.0, 3.0, 6.0]))  # mean 3 is not a geometry error
    calibrated = model.geometry()
    assert calibrated.center_offset == pytest.approx(0.7)
    assert np.rad2deg(calibrated.angle_offsets) == pytest.approx([-2.0, -1.0, 0.0, 3.0], abs=1e-5)
    x = torch.rand(1, 1, 16, 16)
    assert torch.allclose(model(x), Radon(calibrated, 16, backend="torch")(x), atol=1e-5)


def test_joint_refinement_moves_the_centre_with_birds_operator_mechanism(gaussian_prior, generator):
    """Stage 2 runs BIRD with the calibration as operator parameters and reports a consistent geometry."""
    n = 16
    geometry = ParallelBeam(views=12)
    image = 0.05 * (1 + shepp_logan(n).reshape(1, 1, n, n).clamp_min(0))
    y = Radon(geometry.calibrated(1.0), n)(image)
    result = calibrate(y, geometry, n, estimate=("center", "angles"), prior=gaussian_prior, radius=2.0, refine_iters=3,
                       warmup_iters=1,
                       input_transform=lambda x: 0.05 * (x + 1), generator=generator)
    assert result.refined is not None and result.refined.iters_run == 3
    assert result.center_offset != result.search.center_offset  # the centre was a trained parameter
    assert result.geometry.center_offset == pytest.approx(result.center_offset)
    assert result.angle_offsets_deg.shape == (12,) and abs(result.angle_offsets_deg.mean()) < 1e-6
    assert np.allclose(np.deg2rad(result.angle_offsets_deg), result.geometry.angle_offsets, atol=1e-9)


def blob_phantom(n: int, count: int = 40, seed: int = 0) -> torch.Tensor:
    """Non-negative ``[1, 1, n, n]`` sum of random Gaussian blobs inside the inscribed disc (many features)."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(n, dtype=torch.float32) + 0.5 - n / 2
    y, x = -coords[:, None], coords[None, :]
    image = torch.zeros(n, n)
    for _ in range(count):
        radius, angle = 0.4 * n * torch.rand(1, generator=gen).sqrt(), 2 * math.pi * torch.rand(1, generator=gen)
        width = 1.0 + 3.0 * torch.rand(1, generator=gen)
        cx, cy = radius * torch.cos(angle), radius * torch.sin(angle)
        image += torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
    return 0.02 * image[None, None]


def test_projection_matching_reduces_a_per_view_angle_jitter():
    n, geometry = 64, ParallelBeam(views=30)
    jitter = np.random.default_rng(1).uniform(-0.5, 0.5, 30)
    jitter -= jitter.mean()
    y = Radon(geometry.calibrated(1.0, np.deg2rad(jitter)), n)(blob_phantom(n))
    result = calibrate(y, geometry, n, estimate=("center", "angles"), radius=3.0)
    rms = float(np.sqrt(np.mean((result.angle_offsets_deg - jitter) ** 2)))
    assert rms < 0.6 * float(np.sqrt(np.mean(jitter ** 2))), rms
    assert abs(result.center_offset - 1.0) < 0.1
    assert np.allclose(np.deg2rad(result.angle_offsets_deg), result.geometry.angle_offsets, atol=1e-9)
    kept = calibrate(y, geometry.calibrated(0.4), n, estimate=("angles",))  # the given centre stays
    assert kept.search is None and kept.center_offset == pytest.approx(0.4)
