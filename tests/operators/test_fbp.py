"""Filtered backprojection and its ramp filter: scale, accuracy, orientation, windows, linearity, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from operators import FanBeam, GeometryError, ParallelBeam, Radon, ShapeError, SinogramFilter
from operators.fbp import FILTERS, fbp, padded_length, ramp_response

FAN = FanBeam(360, source_distance=128.0, detector_distance=64.0)  # full 2 pi scan


def disc(n: int, radius: float, value: float = 1.0) -> torch.Tensor:
    """``[1, 1, n, n]`` float64 disc centred in the image, 4x4 supersampled edges."""
    fine = (torch.arange(4 * n, dtype=torch.float64) + 0.5) / 4 - n / 2
    inside = (fine[None, :] ** 2 + fine[:, None] ** 2 <= radius**2).to(torch.float64)
    return value * torch.nn.functional.avg_pool2d(inside[None, None], 4)


def central_mean(image: torch.Tensor, half_width: int) -> float:
    c = image.shape[-1] // 2
    return float(image[..., c - half_width:c + half_width, c - half_width:c + half_width].mean())


def project(image: torch.Tensor, geometry) -> torch.Tensor:
    return Radon(geometry, image.shape[-1], use_cache=False)(image)


@pytest.mark.parametrize("geometry, max_error", [(ParallelBeam(360), 0.03), (FAN, 0.06)], ids=["parallel", "fan"])
def test_fbp_of_a_disc_at_many_views_matches_the_disc(geometry, max_error):
    """Away from the disc's edge (2 px band: Gibbs ringing of the band-limited ramp) FBP is the phantom."""
    n, radius = 64, 0.3 * 64
    image = disc(n, radius)
    recon = fbp(project(image, geometry), geometry, n)
    assert recon.shape == (1, 1, n, n) and recon.dtype == torch.float64
    centre = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2)
    distance = (centre[None, :] ** 2 + centre[:, None] ** 2).sqrt()
    away = (distance - radius).abs() > 2
    assert float((recon - image)[..., away].abs().max()) < max_error
    assert float((recon - image).norm() / image.norm()) < 0.08


@pytest.mark.parametrize("geometry", [ParallelBeam(90), FanBeam(180, source_distance=128.0, detector_distance=64.0)],
                         ids=["parallel", "fan"])
def test_fbp_recovers_uniform_disc_value(geometry):
    n, value = 64, 0.7
    recon = fbp(project(disc(n, 0.3 * n, value), geometry), geometry, n)
    assert central_mean(recon, n // 8) == pytest.approx(value, rel=0.02)
    assert abs(central_mean(recon[..., :8, :8], 4)) < 0.05 * value  # corner outside the disc stays near 0


@pytest.mark.parametrize("geometry", [ParallelBeam(120, detectors=80, detector_spacing=1.25),
                                      FanBeam(180, source_distance=96.0, detector_distance=48.0)],
                         ids=["parallel-non-square", "fan"])
def test_fbp_matches_radon_orientation(geometry):
    """An off-centre square comes back where it was (not mirrored or rotated)."""
    n = 48
    image = torch.zeros(1, 1, n, n, dtype=torch.float64)
    image[..., 6:14, 30:40] = 1.0  # top right
    recon = fbp(project(image, geometry), geometry, n)
    assert float(recon[..., 8:12, 32:38].mean()) == pytest.approx(1.0, abs=0.1)
    for mirrored in (recon[..., 8:12, 10:16], recon[..., 36:40, 32:38], recon[..., 36:40, 10:16]):
        assert abs(float(mirrored.mean())) < 0.1


def test_fbp_angular_weights_follow_the_geometry():
    """Explicit (uneven) angles and a 2 pi parallel scan give the same scale as the default."""
    n = 48
    image = disc(n, 0.3 * n)
    uneven = tuple(math.pi * i / 90 + 0.3 * (math.pi / 90) * ((i % 2) - 0.5) for i in range(90))
    for geometry in (ParallelBeam(90, angles=uneven), ParallelBeam(180, angle_range=(0.0, 2 * math.pi))):
        recon = fbp(project(image, geometry), geometry, n)
        assert central_mean(recon, n // 8) == pytest.approx(1.0, rel=0.02)


def test_fbp_windows_differ_and_smooth():
    n = 48
    geometry = ParallelBeam(60)
    image = disc(n, 0.3 * n) - 0.5 * disc(n, 0.1 * n)
    sinogram = project(image, geometry)
    results = {name: fbp(sinogram, geometry, n, filter=name) for name in ("ram-lak", "shepp-logan", "cosine", "hann")}

    def roughness(img: torch.Tensor) -> float:
        return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean())

    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(results[a], results[b], atol=1e-4), (a, b)
    assert roughness(results["ram-lak"]) > roughness(results["shepp-logan"]) > roughness(results["hann"])


def test_fbp_is_batched_linear_and_differentiable():
    n = 16
    geometry = ParallelBeam(12)
    sinogram = project(disc(n, 5.0), geometry)
    batch = torch.cat([torch.cat([sinogram, 2 * sinogram], dim=1)] * 2)  # [2, 2, views, det]
    recon, single = fbp(batch, geometry, n), fbp(sinogram, geometry, n)
    assert recon.shape == (2, 2, n, n)
    torch.testing.assert_close(recon[1, 0:1], single[0])
    torch.testing.assert_close(recon[0, 1:2], 2 * single[0])
    small = FanBeam(6, source_distance=40.0, detector_distance=20.0, detectors=9)
    y = torch.randn(1, 1, 6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: fbp(s, small, 6), (y,))


def test_fbp_keeps_float32():
    geometry = ParallelBeam(30)
    sinogram = project(disc(32, 10.0), geometry)
    low = fbp(sinogram.float(), geometry, 32)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), fbp(sinogram, geometry, 32), rtol=0, atol=1e-5)


def test_fbp_rejects_bad_input():
    geometry = ParallelBeam(30)
    with pytest.raises(ShapeError, match=r"\[B, C, 30, 46\]"):
        fbp(torch.zeros(1, 1, 30, 40), geometry, 32)
    with pytest.raises(ShapeError, match=r"\[B, C, 30, 46\]"):
        fbp(torch.zeros(30, 46), geometry, 32)
    with pytest.raises(ShapeError, match="floating-point"):
        fbp(torch.zeros(1, 1, 30, 46, dtype=torch.int64), geometry, 32)
    with pytest.raises(GeometryError, match="image_size"):
        fbp(torch.zeros(1, 1, 30, 46), geometry, 0)
    with pytest.raises(GeometryError, match="unknown filter"):
        fbp(torch.zeros(1, 1, 30, 46), geometry, 32, filter="butterworth")


def test_ramp_responses():
    padded = padded_length(40)
    assert padded == 80
    frequencies = torch.fft.rfftfreq(padded, dtype=torch.float64)
    band_limited, sampled = ramp_response(padded, "band-limited"), ramp_response(padded, "sampled")
    torch.testing.assert_close(sampled, frequencies, rtol=0, atol=0)  # exactly |f|: the view's mean is removed
    # |f| away from zero; a small positive mean term (2 / (pi^2 padded)) instead of 0
    assert float(band_limited.min()) > 0
    assert float(band_limited[0]) == pytest.approx(2 / (math.pi**2 * padded), rel=0.05)
    torch.testing.assert_close(band_limited[8:], frequencies[8:], rtol=0.02, atol=0)


def test_band_limited_filtering_does_not_depend_on_the_padding():
    """With at least 2 D - 1 samples the filtering is the linear convolution with the band-limited kernel."""
    view = torch.randn(1, 1, 2, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outputs = []
    for padded in (41, 42, 64, 256):
        response = ramp_response(padded, "band-limited")
        outputs.append(torch.fft.irfft(torch.fft.rfft(view, n=padded) * response, n=padded)[..., :21])
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=0, atol=1e-13)


def test_sinogram_filter_is_the_ramp_to_a_power():
    views, detectors = 3, 64
    half = SinogramFilter((1, views, detectors), exponent=0.5)
    flat = torch.ones(1, 1, views, detectors, dtype=torch.float64)
    # a constant view only keeps the edges of its zero-padded box: far less energy than it had
    assert float(half(flat).norm()) < 0.5 * float(flat.norm())
    # a mid-band cosine comes out scaled by |f|^0.5 (cycles per cell) away from the ends of the view
    k = 16
    cosine = torch.cos(2 * math.pi * k / (2 * detectors) * torch.arange(detectors, dtype=torch.float64))
    middle = slice(detectors // 4, 3 * detectors // 4)
    for exponent, spacing, ramp in ((0.5, 1.0, "sampled"), (1.0, 1.0, "band-limited"), (1.0, 2.0, "sampled")):
        op = SinogramFilter((1, views, detectors), exponent=exponent, detector_spacing=spacing, ramp=ramp)
        out = op(cosine.expand(1, 1, views, detectors))[0, 0, 0]
        ratio = float(out[middle].norm() / cosine[middle].norm())
        assert ratio == pytest.approx((k / (2 * detectors) / spacing) ** exponent, rel=0.1)
    # a window multiplies the ramp: Hann halves the response at a quarter of the band
    hann = SinogramFilter((1, views, detectors), window="hann")
    ramp = SinogramFilter((1, views, detectors))
    quarter = torch.cos(2 * math.pi * 0.25 * torch.arange(detectors, dtype=torch.float64)).expand(1, 1, views, detectors)
    assert float(hann(quarter)[..., middle].norm() / ramp(quarter)[..., middle].norm()) == pytest.approx(0.5, rel=0.05)


def test_sinogram_filter_rejects_bad_settings():
    for kwargs in ({"exponent": 0}, {"exponent": True}, {"window": "butterworth"}, {"detector_spacing": 0.0},
                   {"detector_spacing": math.inf}, {"ramp": "shepp-logan"}):
        with pytest.raises(GeometryError):
            SinogramFilter((1, 3, 8), **kwargs)
    assert set(FILTERS) == {"ram-lak", "shepp-logan", "cosine", "hann", "hamming"}



@pytest.mark.parametrize("nominal", [ParallelBeam(90), FanBeam(180, source_distance=128.0, detector_distance=64.0)],
                         ids=["parallel", "fan"])
def test_fbp_honours_a_calibrated_geometry(nominal):
    """A measurement with a shifted rotation centre and perturbed angles, reconstructed with that calibrated
    geometry, is as accurate as FBP of the unperturbed measurement; with the nominal geometry it is not."""
    n = 48
    coords = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    y, x = -coords[:, None], coords[None, :]
    image = (torch.exp(-((x - 6) ** 2 + (y - 5) ** 2) / 50.0)
             + 0.5 * torch.exp(-((x + 7) ** 2 + (y + 4) ** 2) / 18.0))[None, None]
    calibrated = nominal.calibrated(1.6, tuple(0.02 * math.sin(1.7 * v) for v in range(nominal.views)))

    def error(recon: torch.Tensor) -> float:
        return float((recon - image).norm() / image.norm())

    reference = error(fbp(project(image, nominal), nominal, n))
    measured = project(image, calibrated)
    assert error(fbp(measured, calibrated, n)) < reference + 0.002
    assert error(fbp(measured, nominal, n)) > 5 * reference
