"""Measurement on real CT (slow): centre error at 30 views, consistency search vs the classical finder.

Two training slices (never eval slices) of ``/work/shared/data/ct/train`` (``../shared`` in CI), downsized to
128 x 128, simulated with ASTRA's matrix projector at centre offsets 0.5, 1, 2.5 and 4 detector cells, parallel
(30 views over 180 deg) and fan (30 views over 360 deg, source 2N, detector N). Run with
``pytest -q -s -m slow tests/ctbird/test_calibrate_real.py`` to print the table (about a minute on one core).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctbird.calibration import find_center_consistency, find_center_sharpness
from ctbird.units import clip_hu, hu_to_mu
from operators import FanBeam, ParallelBeam, Radon

TRAIN = next((p for p in (Path(__file__).resolve().parents[3] / "shared/data/ct/train/ct256_train_hu.npz",
                          Path("/work/shared/data/ct/train/ct256_train_hu.npz")) if p.is_file()), None)
SLICES = (3, 700)
OFFSETS = (0.5, 1.0, 2.5, 4.0)
N = 128

pytestmark = [pytest.mark.slow, pytest.mark.skipif(TRAIN is None, reason="training slices not available")]


def slice_mu(data, index: int) -> torch.Tensor:
    """Attenuation per pixel length of a training slice, block-averaged down to N x N."""
    hu = clip_hu(torch.as_tensor(data["images"][index].astype(np.float32)))
    mu = hu_to_mu(hu) * float(data["pixel_spacing_mm"][index])
    factor = hu.shape[-1] // N
    return (torch.nn.functional.avg_pool2d(mu[None, None], factor) * factor).clamp_min(0)


def test_centre_error_at_30_views_on_training_slices(monkeypatch, tmp_path):
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(tmp_path / "radon-cache"))
    data = np.load(TRAIN)
    geometries = {"parallel": ParallelBeam(views=30), "fan": FanBeam(views=30, source_distance=2.0 * N, detector_distance=N)}
    errors: dict[tuple[str, str], list[float]] = {}
    print(f"\n{'geometry':9} {'slice':>5} {'offset':>6} {'consistency':>12} {'classical':>10}")
    for name, geometry in geometries.items():
        for index in SLICES:
            image = slice_mu(data, index)
            for offset in OFFSETS:
                y = Radon(geometry.calibrated(offset), N)(image)
                ours = find_center_consistency(y, geometry, N).center_offset - offset
                classical = find_center_sharpness(y, geometry, N).center_offset - offset
                errors.setdefault((name, "consistency"), []).append(abs(ours))
                errors.setdefault((name, "classical"), []).append(abs(classical))
                print(f"{name:9} {index:5d} {offset:6.1f} {ours:+12.3f} {classical:+10.3f}")
    for key, values in errors.items():
        print(f"{key[0]:9} {key[1]:12} median |error| {np.median(values):.3f} max {np.max(values):.3f} cells")
    for name in geometries:
        assert np.median(errors[(name, "consistency")]) <= 0.1
