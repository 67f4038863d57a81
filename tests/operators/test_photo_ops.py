"""Specific behaviour of the photographic operators (blur, downsampling, mask) and the noise models.

Orientation convention under test: ``Blur`` is a true convolution, so blurring a unit impulse
returns the kernel in its own orientation (a cross-correlation would return it flipped).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from operators import (
    Blur,
    Downsample,
    GaussianBlur,
    GaussianNoise,
    GeometryError,
    LogPoissonNoise,
    Mask,
    PoissonNoise,
    ShapeError,
    SpeckleGaussianNoise,
)

PADDINGS = ["zeros", "reflect", "symmetric", "circular"]
SCIPY_MODES = {"zeros": "constant", "reflect": "mirror", "symmetric": "reflect", "circular": "wrap"}


def asymmetric_kernel(size: int = 5) -> torch.Tensor:
    kernel = torch.arange(1.0, size * size + 1, dtype=torch.float64).reshape(size, size) ** 1.5
    return kernel / kernel.sum()


# ----------------------------------------------------------------------------------------- Blur


@pytest.mark.parametrize("padding", PADDINGS)
def test_blur_of_an_impulse_is_the_kernel_in_its_own_orientation(padding):
    kernel = asymmetric_kernel(5)
    op = Blur(kernel, image_shape=(1, 11, 11), padding=padding).double()
    impulse = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    impulse[0, 0, 4, 6] = 1.0
    out = op(impulse)[0, 0]
    assert torch.allclose(out[2:7, 4:9], kernel, atol=1e-15)
    assert float(out.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kernel_size", [3, 7, 9, 15])  # 9 and 15: the FFT path (the 15² kernel outgrows the image)
def test_blur_matches_scipy_convolve_for_every_padding(padding, kernel_size):
    generator = torch.Generator().manual_seed(0)
    kernel = torch.rand(kernel_size, kernel_size, generator=generator, dtype=torch.float64) - 0.3
    image = torch.rand(2, 9, 8, generator=generator, dtype=torch.float64)
    out = Blur(kernel, image_shape=(2, 9, 8), padding=padding).double()(image[None])[0]
    for channel in range(2):
        expected = scipy.ndimage.convolve(image[channel].numpy(), kernel.numpy(), mode=SCIPY_MODES[padding])
        np.testing.assert_allclose(out[channel].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_fft_and_direct_convolution_agree_forward_adjoint_and_kernel_gradient(padding, monkeypatch):
    from operators import _conv

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(41, 41, generator=generator)
    image = torch.rand(2, 1, 60, 52, generator=generator)
    target = torch.rand(2, 1, 60, 52, generator=generator)
    results = {}
    for path, side in (("fft", 9), ("direct", 10_000)):
        monkeypatch.setattr(_conv, "FFT_MIN_KERNEL_SIDE", side)
        op = Blur(torch.softmax(logits.flatten(), 0).view(41, 41), image_shape=(1, 60, 52), padding=padding,
                  learnable=True)
        loss = (op(image) - target).square().sum()
        (grad,) = torch.autograd.grad(loss, op.kernel_logits)
        results[path] = (op(image).detach(), op.adjoint(target).detach(), grad)
    for fft, direct in zip(results["fft"], results["direct"]):
        assert torch.allclose(fft, direct, rtol=1e-4, atol=1e-5 * float(direct.abs().max()))


def test_blur_same_kernel_on_every_channel_and_sample():
    op = Blur(asymmetric_kernel(3), image_shape=(3, 8, 8)).double()
    channel = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    out = op(channel.expand(2, 3, 8, 8).contiguous())
    assert torch.equal(out, op(channel.expand(2, 3, 8, 8).clone()))
    assert torch.allclose(out[1, 2], out[0, 0]) and torch.allclose(out[0, 1], out[0, 0])


@pytest.mark.parametrize("parametrization", ["logits", "mlp"])
def test_learnable_kernel_stays_on_the_simplex_under_adam(parametrization):
    torch.manual_seed(0)
    kwargs = {"mlp_input_size": 16, "mlp_hidden_size": 32} if parametrization == "mlp" else {}
    op = Blur(kernel_size=5, image_shape=(1, 12, 12), learnable=True, parametrization=parametrization, **kwargs)
    target = torch.randn(1, 1, 12, 12)  # an unreachable target pulls the kernel hard
    x = torch.randn(1, 1, 12, 12)
    optimizer = torch.optim.Adam(op.parameters(), lr=0.5)
    start = op.kernel.detach().clone()
    for _ in range(20):
        optimizer.zero_grad()
        F.mse_loss(op(x), target).backward()
        optimizer.step()
        kernel = op.kernel.detach()
        assert kernel.shape == (5, 5)
        assert float(kernel.min()) >= 0.0
        assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(op.kernel.detach(), start, atol=1e-3)


def test_learnable_logits_start_from_the_given_kernel():
    kernel = asymmetric_kernel(3) * 7.0
    op = Blur(kernel, image_shape=(1, 6, 6), learnable=True).double()
    assert torch.allclose(op.kernel, kernel / kernel.sum(), atol=1e-12)
    assert [name for name, _ in op.named_parameters()] == ["kernel_logits"]


def test_mlp_kernel_is_birds_architecture_and_seeded():
    op = Blur(kernel_size=5, image_shape=(3, 16, 16), learnable=True, parametrization="mlp")
    first, activation, last = op.mlp
    assert (first.in_features, first.out_features) == (200, 1000)
    assert isinstance(activation, torch.nn.ReLU6)
    assert (last.in_features, last.out_features) == (1000, 25)
    assert op.mlp_input.shape == (200,) and 0.0 <= float(op.mlp_input.min()) and float(op.mlp_input.max()) < 0.1
    assert "mlp_input" in op.state_dict() and "mlp_input" not in dict(op.named_parameters())
    torch.manual_seed(123)  # the global RNG must not matter
    again = Blur(kernel_size=5, image_shape=(3, 16, 16), learnable=True, parametrization="mlp")
    assert torch.equal(op.kernel, again.kernel)
    other_seed = Blur(kernel_size=5, image_shape=(3, 16, 16), learnable=True, parametrization="mlp", seed=1)
    assert not torch.equal(op.kernel, other_seed.kernel)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kernel": torch.ones(4, 4)}, "k odd"),
        ({"kernel": torch.ones(3, 5)}, "square"),
        ({"kernel": torch.tensor([[0.0, math.nan, 0.0]] * 3)}, "finite"),
        ({"kernel_size": 5}, "learnable=True"),
        ({"kernel": torch.ones(3, 3), "kernel_size": 5}, "contradicts"),
        ({"kernel": torch.ones(3, 3), "padding": "edge"}, "padding must be one of"),
        ({"kernel": -torch.ones(3, 3), "learnable": True}, "non-negative"),
        ({"kernel": torch.ones(3, 3), "learnable": True, "parametrization": "mlp"}, "kernel_size, not a kernel"),
        ({"kernel": torch.ones(3, 3), "parametrization": "mlp"}, "only applies to learnable"),
        ({"kernel_size": 4, "learnable": True}, "positive odd int"),
    ],
)
def test_blur_rejects_bad_arguments_clearly(kwargs, fragment):
    with pytest.raises(GeometryError, match=fragment):
        Blur(image_shape=(1, 8, 8), **kwargs)


def test_blur_rejects_a_bad_image_shape():
    with pytest.raises(GeometryError, match=r"\(C, H, W\)"):
        Blur(torch.ones(3, 3), image_shape=(8, 8))


# ---------------------------------------------------------------------------------- GaussianBlur


def test_gaussian_kernel_matches_the_closed_form_and_default_size():
    op = GaussianBlur(1.2, image_shape=(1, 16, 16)).double()
    assert op.kernel_size == 2 * math.ceil(3 * 1.2) + 1
    offsets = torch.arange(op.kernel_size, dtype=torch.float64) - op.kernel_size // 2
    profile = torch.exp(-(offsets**2) / (2 * 1.2**2))
    expected = torch.outer(profile, profile)
    assert torch.allclose(op.kernel, expected / expected.sum(), atol=1e-15)
    assert torch.allclose(op.sigma, torch.tensor([1.2, 1.2], dtype=torch.float64))
    assert list(op.parameters()) == []


def test_gaussian_anisotropic_angle_rotates_the_kernel():
    wide = GaussianBlur((1.0, 2.5), image_shape=(1, 16, 16), kernel_size=11).double()
    rotated = GaussianBlur((2.5, 1.0), image_shape=(1, 16, 16), kernel_size=11, angle=math.pi / 2).double()
    assert wide.anisotropic and rotated.anisotropic
    assert float(wide.kernel[5].sum()) > float(wide.kernel[:, 5].sum())  # wider along columns
    assert torch.allclose(wide.kernel, rotated.kernel, atol=1e-12)
    assert torch.allclose(wide.kernel, wide.kernel.flip(0).flip(1), atol=1e-15)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_gaussian_learnable_sigma_recovers_a_known_sigma(anisotropic):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 16, 16, generator=generator, dtype=torch.float64)
    truth = GaussianBlur(1.5, image_shape=(1, 16, 16), kernel_size=11).double()
    target = truth(image)
    op = GaussianBlur(0.8, image_shape=(1, 16, 16), kernel_size=11, learnable=True, anisotropic=anisotropic).double()
    optimizer = torch.optim.Adam(op.parameters(), lr=0.05)
    losses = []
    for _ in range(80):
        optimizer.zero_grad()
        loss = F.mse_loss(op(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    assert torch.allclose(op.sigma.detach(), torch.tensor([1.5, 1.5], dtype=torch.float64), atol=0.05)


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.inf, "wide", (1.0, 2.0, 3.0)])
def test_gaussian_rejects_bad_sigma(sigma):
    with pytest.raises(GeometryError, match="sigma"):
        GaussianBlur(sigma, image_shape=(1, 8, 8))


# ------------------------------------------------------------------------------------ Downsample


@pytest.mark.parametrize("filter", ["box", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_of_a_constant_is_the_constant(filter, factor):
    op = Downsample(factor, (2, 12, 12), filter=filter).double()
    out = op(torch.full((1, 2, 12, 12), 0.7, dtype=torch.float64))
    assert out.shape == (1, 2, 12 // factor, 12 // factor)
    assert torch.allclose(out, torch.full_like(out, 0.7), atol=1e-12)


def test_downsample_box_is_average_pooling_and_its_adjoint_spreads_blocks():
    op = Downsample(4, (3, 16, 8)).double()
    x = torch.rand(2, 3, 16, 8, dtype=torch.float64)
    assert torch.allclose(op(x), F.avg_pool2d(x, 4), atol=1e-15)
    y = torch.rand(2, 3, 4, 2, dtype=torch.float64)
    assert torch.allclose(op.adjoint(y), y.repeat_interleave(4, 2).repeat_interleave(4, 3) / 16, atol=1e-15)


def matlab_imresize_rows(image: np.ndarray, factor: int) -> np.ndarray:
    """Reference: MATLAB's ``imresize(image, 1/factor, 'bicubic')`` along axis 0 (its 'contributions' loop)."""
    scale = 1.0 / factor
    length = image.shape[0]
    out_length = length // factor
    kernel_width = 4.0 / scale

    def cubic(x):
        ax = np.abs(x)
        return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
                + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))

    out = np.zeros((out_length, *image.shape[1:]))
    for i in range(1, out_length + 1):  # MATLAB's 1-based indices
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        indices = left + np.arange(int(math.ceil(kernel_width)) + 2)
        weights = scale * cubic(scale * (u - indices))
        weights = weights / weights.sum()
        mirrored = np.concatenate([np.arange(1, length + 1), np.arange(length, 0, -1)])
        sources = mirrored[np.mod(indices - 1, 2 * length)] - 1
        out[i - 1] = np.tensordot(weights, image[sources], axes=1)
    return out


@pytest.mark.parametrize("factor", [2, 3])
def test_downsample_bicubic_matches_matlab_imresize(factor):
    image = np.random.default_rng(0).random((12, 18))
    expected = matlab_imresize_rows(matlab_imresize_rows(image, factor).T, factor).T
    op = Downsample(factor, (1, 12, 18), filter="bicubic").double()
    out = op(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_downsample_learnable_kernel_is_a_simplex_started_from_the_filter():
    op = Downsample(2, (1, 8, 8), learnable=True, kernel_size=4)
    kernel = op.kernel.detach()
    assert kernel.shape == (4, 4) and float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(kernel[1:3, 1:3].sum()) > 0.99  # the 2x2 box, zero taps floored at 1e-3 * max
    assert float(kernel.min()) > 0
    assert list(Downsample(2, (1, 8, 8), filter="bicubic").parameters()) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ((3, (1, 8, 9)), {}, "divisible by factor=3"),
        ((0, (1, 8, 8)), {}, "factor must be a positive int"),
        ((2, (1, 8, 8)), {"filter": "lanczos"}, "filter must be one of"),
        ((2, (1, 8, 8)), {"kernel_size": 4}, "only applies to learnable"),
        ((2, (1, 8, 8)), {"kernel_size": 5, "learnable": True}, "parity"),
    ],
)
def test_downsample_rejects_bad_arguments_clearly(args, kwargs, fragment):
    with pytest.raises(GeometryError, match=fragment):
        Downsample(*args, **kwargs)


# ------------------------------------------------------------------------------------------ Mask


def test_mask_central_hole_is_birds_inpainting_hole():
    op = Mask.central_hole((3, 256, 256), 80)
    hidden = (~op.mask[0]).nonzero()
    assert (hidden.min(0).values.tolist(), hidden.max(0).values.tolist()) == ([88, 88], [167, 167])
    assert int((~op.mask).sum()) == 80 * 80
    x = torch.rand(1, 3, 256, 256)
    out = op(x)
    assert float(out[..., 88:168, 88:168].abs().max()) == 0.0
    assert torch.equal(out[..., :88, :], x[..., :88, :])


def test_mask_accepts_01_tensors_and_rejects_other_values():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    op = Mask(mask, (2, 2, 2))
    assert torch.equal(op(torch.ones(1, 2, 2, 2))[0, 1], mask)
    with pytest.raises(GeometryError, match="0 or 1"):
        Mask(mask * 0.5, (1, 2, 2))
    with pytest.raises(GeometryError, match=r"\[H, W\] = \[3, 3\]"):
        Mask(mask, (1, 3, 3))


# ---------------------------------------------------------------------------------- Composition


def test_composition_checks_shapes():
    blur = Blur(asymmetric_kernel(3), image_shape=(1, 16, 16))
    down = Downsample(2, (1, 16, 16))
    assert (down @ blur).out_shape == (1, 8, 8)
    with pytest.raises(ShapeError, match=r"outputs \(1, 8, 8\).*expects \(1, 16, 16\)"):
        blur @ down
    with pytest.raises(ShapeError, match="expects"):
        Mask.central_hole((3, 16, 16), 4) @ blur


# ---------------------------------------------------------------------------------------- Noise

NOISES = [
    GaussianNoise(0.1),
    PoissonNoise(50.0),
    LogPoissonNoise(1e3),
    SpeckleGaussianNoise(),
]


@pytest.mark.parametrize("noise", NOISES, ids=repr)
def test_noise_is_reproducible_with_a_generator(noise):
    y = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    first = noise(y, generator=torch.Generator().manual_seed(0))
    again = noise(y, generator=torch.Generator().manual_seed(0))
    other = noise(y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == y.shape and first.dtype == y.dtype


def test_gaussian_noise_statistics():
    y = torch.full((1, 1, 256, 256), 0.3, dtype=torch.float64)
    residual = GaussianNoise(0.1)(y, generator=torch.Generator().manual_seed(0)) - y
    assert abs(float(residual.mean())) < 3 * 0.1 / 256
    assert float(residual.std()) == pytest.approx(0.1, rel=0.02)
    assert torch.equal(GaussianNoise(0.0)(y), y)


def test_poisson_noise_statistics_and_counts():
    y = torch.full((1, 1, 256, 256), 0.4, dtype=torch.float64)
    noisy = PoissonNoise(100.0)(y, generator=torch.Generator().manual_seed(0))
    assert float(noisy.mean()) == pytest.approx(0.4, rel=0.01)
    assert float(noisy.var()) == pytest.approx(0.4 / 100.0, rel=0.03)
    counts = PoissonNoise(100.0, normalize=False)(y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts, torch.round(counts)) and torch.allclose(counts / 100.0, noisy)


def test_log_poisson_noise_statistics_and_limit():
    y = torch.full((1, 1, 128, 128), 2.0, dtype=torch.float64)
    assert torch.allclose(LogPoissonNoise(1e12)(y, generator=torch.Generator().manual_seed(0)), y, atol=1e-4)
    noisy = LogPoissonNoise(1e4)(y, generator=torch.Generator().manual_seed(0))
    assert float(noisy.mean()) == pytest.approx(2.0, abs=0.01)
    assert float(noisy.std()) == pytest.approx(math.sqrt(math.exp(2.0) / 1e4), rel=0.05)  # delta method


def test_log_poisson_noise_clamps_photon_starvation():
    y = torch.full((1, 1, 4, 4), 50.0)  # exp(-50) * I0 ~ 0 photons
    noisy = LogPoissonNoise(1e3)(y, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(noisy, torch.full_like(y, math.log(1e3)))


def test_speckle_gaussian_noise_matches_birds_formula_statistics():
    x = torch.full((1, 3, 128, 128), 0.5, dtype=torch.float64)
    residual = SpeckleGaussianNoise()(x, generator=torch.Generator().manual_seed(0)) - x
    expected_std = math.sqrt((0.8 * 0.12 * 0.5) ** 2 + (0.2 * 0.05) ** 2)
    assert abs(float(residual.mean())) < 3 * expected_std / math.sqrt(residual.numel())
    assert float(residual.std()) == pytest.approx(expected_std, rel=0.02)
    clipped = SpeckleGaussianNoise(speckle_sigma=0.4, gaussian_sigma=0.15, clip=True)(x + 0.45)
    assert float(clipped.max()) <= 1.0 and float(clipped.min()) >= 0.0


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: GaussianNoise(-0.1), "sigma must be a finite number >= 0"),
        (lambda: GaussianNoise(math.nan), "sigma"),
        (lambda: PoissonNoise(0), "I0 must be a finite number > 0"),
        (lambda: LogPoissonNoise(-5.0), "I0"),
        (lambda: SpeckleGaussianNoise(speckle_sigma=-1), "speckle_sigma"),
    ],
)
def test_noise_parameters_are_validated(build, fragment):
    with pytest.raises(GeometryError, match=fragment):
        build()


def test_noise_inputs_are_validated():
    with pytest.raises(ValueError, match="non-negative"):
        PoissonNoise(10.0)(torch.tensor([-1.0, 1.0]))
    with pytest.raises(ShapeError, match="floating-point"):
        GaussianNoise(0.1)(torch.ones(3, dtype=torch.int64))
