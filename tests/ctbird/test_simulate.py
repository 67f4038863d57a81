"""ctbird.simulate: the one simulation of a CT acquisition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctbird.errors import ConfigError, InputError
from ctbird.simulate import simulate, simulation_geometry
from ctbird.units import hu_to_mu
from operators import ParallelBeam
from operators.radon import Radon


def _phantom(n: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[-1:1:complex(n), -1:1:complex(n)]
    hu = np.full((n, n), -3024.0, np.float32)  # outside-FOV padding
    hu[xx ** 2 + yy ** 2 < 0.8] = 0.0
    hu[(xx - 0.3) ** 2 + yy ** 2 < 0.05] = 1000.0
    return hu


def test_noiseless_parallel_sinogram_is_the_radon_of_mu_in_mm():
    acquisition = simulate(_phantom(), views=12, image_size=20, pixel_spacing_mm=0.5)
    assert acquisition.truth_hu.shape == (20, 20) and acquisition.truth_hu.min() >= -1024.0  # clipped to the window
    assert acquisition.pixel_spacing_mm == pytest.approx(0.5 * 40 / 20)
    radon = Radon(ParallelBeam(views=12).resolved(20), 20)
    expected = radon(torch.from_numpy(hu_to_mu(acquisition.truth_hu) * acquisition.pixel_spacing_mm)[None, None])
    torch.testing.assert_close(acquisition.sinogram, expected)
    assert acquisition.sinogram.shape == (1, 1, 12, radon.out_shape[-1])
    record = acquisition.settings()
    assert record["views"] == 12 and record["dose_I0"] is None and record["geometry"]["type"] == "parallel"


def test_dose_noise_is_seeded_and_scales_with_dose():
    clean = simulate(_phantom(), views=10, image_size=20).sinogram
    low = [simulate(_phantom(), views=10, image_size=20, dose=1e3, seed=s).sinogram for s in (0, 0, 1)]
    assert torch.equal(low[0], low[1]) and not torch.equal(low[0], low[2])
    high = simulate(_phantom(), views=10, image_size=20, dose=1e6, seed=0).sinogram
    assert (high - clean).std() < 0.2 * (low[0] - clean).std()


def test_fan_geometry_and_geometry_objects():
    fan = simulate(_phantom(), views=9, image_size=20, geometry="fan")
    assert fan.geometry == simulation_geometry("fan", 9, 20) and fan.sinogram.shape[2] == 9
    given = ParallelBeam(views=7, detectors=31)
    same = simulate(_phantom(), image_size=20, geometry=given)
    assert same.geometry.detectors == 31 and same.sinogram.shape[-1] == 31
    with pytest.raises(ConfigError, match="views"):
        simulate(_phantom(), views=8, image_size=20, geometry=given)


def test_non_square_images_are_padded_with_air():
    wide = np.zeros((20, 40), np.float32)
    acquisition = simulate(wide, views=6, image_size=20, pixel_spacing_mm=(1.0, 1.0))
    assert acquisition.truth_hu.shape == (20, 20) and acquisition.truth_hu[0, 10] < -900  # padded rows are air
    assert acquisition.pixel_spacing_mm == pytest.approx(2.0)


def test_a_working_size_slice_is_simulated_as_given():
    """The benchmarks' case: a slice already clipped and at the working size keeps its values and spacing."""
    hu = np.clip(_phantom(20), -1024.0, 3071.0)
    acquisition = simulate(hu, views=8, image_size=20, pixel_spacing_mm=0.7, device="cpu")
    np.testing.assert_array_equal(acquisition.truth_hu, hu)
    assert acquisition.pixel_spacing_mm == pytest.approx(0.7, rel=1e-12)
    assert acquisition.sinogram.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_simulates_on_the_requested_device_with_the_same_noise():
    on_cpu = simulate(_phantom(), views=10, image_size=20, dose=1e4, seed=3)
    on_gpu = simulate(_phantom(), views=10, image_size=20, dose=1e4, seed=3, device="cuda")
    assert on_gpu.sinogram.device.type == "cuda"
    # the same draws from the seed; a count may differ by one where the GPU's projection rounds differently
    assert float((on_gpu.sinogram.cpu() - on_cpu.sinogram).abs().mean()) < 1e-3


@pytest.mark.parametrize("kwargs, error, match", [
    ({"hu": np.zeros((2, 3, 4))}, InputError, "HU image"),
    ({"hu": np.full((8, 8), np.nan)}, InputError, "NaN"),
    ({"views": 0}, ConfigError, "views"),
    ({"geometry": "cone"}, ConfigError, "geometry"),
    ({"dose": -1.0}, ConfigError, "dose"),
    ({"pixel_spacing_mm": 0.0}, ConfigError, "pixel_spacing_mm"),
    ({"image_size": 1}, ConfigError, "image_size"),
    ({"device": "no-such-device"}, ConfigError, "device"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = {"hu": np.zeros((8, 8), np.float32), "views": 4, "image_size": 8, **kwargs}
    hu = arguments.pop("hu")
    with pytest.raises(error, match=match):
        simulate(hu, **arguments)
