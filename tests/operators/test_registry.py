"""One registry of every operator, driving the generic operator contract tests.

Each entry builds a small operator for a ``(dtype, device)``; the parametrized tests check
exact adjoints, autograd (``gradcheck``) with respect to the input and the learnable parameters,
state_dict round trips, shape errors and that blind parameters exist only when asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.func import functional_call

from operators import (
    Blur,
    Downsample,
    FanBeam,
    GaussianBlur,
    Identity,
    LinearOperator,
    Mask,
    Operator,
    ParallelBeam,
    Radon,
    ShapeError,
    SinogramFilter,
)

Factory = Callable[[torch.dtype, torch.device], Operator]


@dataclass(frozen=True)
class Case:
    """A registry entry: ``factory(dtype, device)`` plus what the entry supports."""

    factory: Factory
    learnable: bool = False
    astra: bool = False  # the ASTRA backend: float32 only, no finite-difference checks


def _kernel(size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, size, generator=generator, dtype=torch.float64)


def _fixed(build: Callable[[], Operator]) -> Factory:
    return lambda dtype, device: build().to(dtype=dtype, device=device)


def _radon(geometry, size: int, backend: str, learnable: bool = False, channels: int = 1) -> Callable[[], Operator]:
    def build() -> Operator:
        return Radon(geometry, size, backend=backend, channels=channels, learnable=learnable)

    return build


def _checkerboard_mask(shape: tuple[int, int]) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    return (rows + cols) % 3 != 0


PARALLEL = ParallelBeam(views=5, detectors=17)
PARALLEL_NARROW = ParallelBeam(views=4, detectors=9, detector_spacing=1.5, angle_range=(0.1, math.pi + 0.1))
FAN = FanBeam(views=6, source_distance=40.0, detector_distance=20.0, detectors=19)

OPERATORS: dict[str, Case] = {
    "identity": Case(_fixed(lambda: Identity((2, 8, 8)))),
    "blur_fixed_reflect": Case(_fixed(lambda: Blur(_kernel(5, 0), image_shape=(2, 9, 8)))),
    "blur_fixed_zeros": Case(_fixed(lambda: Blur(_kernel(3, 1), image_shape=(1, 8, 8), padding="zeros"))),
    "blur_fixed_circular": Case(_fixed(lambda: Blur(_kernel(5, 2), image_shape=(1, 8, 10), padding="circular"))),
    "blur_fixed_symmetric_wide": Case(_fixed(lambda: Blur(_kernel(9, 3), image_shape=(1, 6, 5), padding="symmetric"))),
    "blur_fft_reflect": Case(_fixed(lambda: Blur(_kernel(11, 8), image_shape=(2, 14, 12)))),  # the FFT path
    "blur_fft_logits": Case(_fixed(lambda: Blur(_kernel(9, 9), image_shape=(1, 10, 11), learnable=True)), learnable=True),
    "blur_logits": Case(_fixed(lambda: Blur(_kernel(5, 4), image_shape=(3, 8, 8), learnable=True)), learnable=True),
    "blur_mlp": Case(_fixed(lambda: Blur(kernel_size=3, image_shape=(1, 8, 8), learnable=True, parametrization="mlp",
                                         mlp_input_size=6, mlp_hidden_size=8)), learnable=True),
    "blur_adjoint_view": Case(_fixed(lambda: Blur(_kernel(3, 5), image_shape=(1, 8, 8)).T)),
    "gaussian_fixed": Case(_fixed(lambda: GaussianBlur(1.0, image_shape=(1, 10, 10)))),
    "gaussian_learnable": Case(_fixed(lambda: GaussianBlur(0.8, image_shape=(2, 8, 8), kernel_size=5,
                                                           learnable=True)), learnable=True),
    "gaussian_anisotropic": Case(_fixed(lambda: GaussianBlur((0.7, 1.3), image_shape=(1, 8, 8), kernel_size=5,
                                                             angle=0.4, learnable=True, padding="circular")),
                                 learnable=True),
    "downsample_box": Case(_fixed(lambda: Downsample(2, (2, 8, 8)))),
    "downsample_bicubic": Case(_fixed(lambda: Downsample(2, (1, 8, 12), filter="bicubic"))),
    "downsample_bicubic_x3": Case(_fixed(lambda: Downsample(3, (1, 9, 9), filter="bicubic", padding="reflect"))),
    "downsample_learnable": Case(_fixed(lambda: Downsample(2, (1, 8, 8), filter="bicubic", learnable=True,
                                                           kernel_size=4)), learnable=True),
    "mask": Case(_fixed(lambda: Mask(_checkerboard_mask((8, 8)), (3, 8, 8)))),
    "mask_central_hole": Case(_fixed(lambda: Mask.central_hole((1, 8, 8), 4))),
    "downsample_at_blur": Case(_fixed(lambda: Downsample(2, (1, 8, 8)) @ Blur(_kernel(3, 6), image_shape=(1, 8, 8)))),
    "mask_at_gaussian_learnable": Case(_fixed(lambda: Mask.central_hole((1, 8, 8), 2)
                                              @ GaussianBlur(1.0, image_shape=(1, 8, 8), kernel_size=3, learnable=True)),
                                       learnable=True),
    "radon_matrix_parallel": Case(_fixed(_radon(PARALLEL, 12, "matrix"))),
    "radon_matrix_parallel_narrow": Case(_fixed(_radon(PARALLEL_NARROW, 12, "matrix", channels=2))),
    "radon_matrix_fan": Case(_fixed(_radon(FAN, 12, "matrix"))),
    "radon_torch_parallel": Case(_fixed(_radon(PARALLEL, 12, "torch"))),
    "radon_torch_fan": Case(_fixed(_radon(FAN, 12, "torch"))),
    "radon_torch_parallel_learnable": Case(_fixed(_radon(PARALLEL_NARROW, 12, "torch", learnable=True)), learnable=True),
    "radon_torch_fan_learnable": Case(_fixed(_radon(FAN, 12, "torch", learnable=True)), learnable=True),
    "radon_astra_parallel": Case(_fixed(_radon(PARALLEL, 12, "astra")), astra=True),
    "radon_astra_fan": Case(_fixed(_radon(FAN, 12, "astra")), astra=True),
    "radon_matrix_at_blur": Case(_fixed(lambda: _radon(PARALLEL_NARROW, 12, "matrix")()
                                        @ Blur(_kernel(3, 7), image_shape=(1, 12, 12)))),
    "sinogram_filter": Case(_fixed(lambda: SinogramFilter((2, 5, 17), exponent=0.5))),
    "sinogram_filter_windowed": Case(_fixed(lambda: SinogramFilter((1, 4, 9), window="hann", detector_spacing=1.5,
                                                                        ramp="band-limited"))),
    "sinogram_filter_at_radon": Case(_fixed(lambda: SinogramFilter((1, 5, 17), exponent=1.0)
                                            @ _radon(PARALLEL, 12, "matrix")())),
}

NAMES = sorted(OPERATORS)
LEARNABLE = [name for name in NAMES if OPERATORS[name].learnable]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", autouse=True)
def _radon_cache(tmp_path_factory):
    """Keep the Radon system-matrix cache of this module in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTBIRD_CACHE_DIR", str(tmp_path_factory.mktemp("radon_cache")))
        yield


def build(name: str, dtype: torch.dtype = torch.float64, device: str = "cpu") -> Operator:
    """Build registry entry ``name``; ASTRA entries skip without astra or for float64."""
    case = OPERATORS[name]
    if case.astra:
        pytest.importorskip("astra", reason="the ASTRA backend needs astra-toolbox")
        if dtype != torch.float32:
            pytest.skip("the ASTRA backend computes in float32 only")
    return case.factory(dtype, torch.device(device))


def random_pair(op: Operator, dtype: torch.dtype, device: str, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *op.in_shape, generator=generator, dtype=dtype).to(device)
    y = torch.randn(batch, *op.out_shape, generator=generator, dtype=dtype).to(device)
    return x, y


def adjoint_dtypes(name: str) -> list[torch.dtype]:
    return [torch.float32] if OPERATORS[name].astra else [torch.float32, torch.float64]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_dtype(name, device):
    dtype = torch.float32
    op = build(name, dtype, device)
    x, _ = random_pair(op, dtype, device)
    y = op(x).detach()
    assert tuple(y.shape) == (2, *op.out_shape)
    assert y.dtype == dtype and y.device.type == device
    assert torch.isfinite(y).all()
    assert float(y.abs().max()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_adjointness(name, dtype):
    if dtype not in adjoint_dtypes(name):
        pytest.skip("the ASTRA backend computes in float32 only")
    op = build(name, dtype)
    assert isinstance(op, LinearOperator)
    x, y = random_pair(op, dtype, "cpu")
    tolerance = 1e-3 if OPERATORS[name].astra else (1e-5 if dtype == torch.float64 else 1e-4)
    assert op.adjointness_error(x, y) < tolerance


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_is_the_vjp_of_forward(name):
    """The autograd backward of ``A`` is ``A^T`` (for ASTRA: ``x.grad == A.T(A(x))`` wiring)."""
    dtype = torch.float32 if OPERATORS[name].astra else torch.float64
    op = build(name, dtype)
    x, _ = random_pair(op, dtype, "cpu")
    x.requires_grad_(True)
    ax = op(x)
    (grad,) = torch.autograd.grad(0.5 * (ax**2).sum(), x)
    expected = op.T(ax.detach())
    assert torch.allclose(grad, expected, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_wrt_input(name):
    if OPERATORS[name].astra:
        pytest.skip("ASTRA computes in float32: finite differences are not meaningful")
    op = build(name, torch.float64)
    x, _ = random_pair(op, torch.float64, "cpu", batch=1)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(op, (x,), fast_mode=True)


@pytest.mark.parametrize("name", LEARNABLE)
def test_gradcheck_wrt_learnable_parameters(name):
    op = build(name, torch.float64)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move off the initial values (e.g. exact pixel alignment of zero offsets)
        for parameter in op.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    x, _ = random_pair(op, torch.float64, "cpu", batch=1)
    names = [n for n, _ in op.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in op.named_parameters())

    def forward(*values):
        return functional_call(op, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(forward, params, fast_mode=True)


@pytest.mark.parametrize("name", NAMES)
def test_learnable_parameters_only_when_asked(name):
    op = build(name, torch.float32)
    params = list(op.parameters())
    assert bool(params) == OPERATORS[name].learnable
    if params:
        x, _ = random_pair(op, torch.float32, "cpu")
        op(x).square().sum().backward()
        for parameter in params:
            assert parameter.requires_grad
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
            assert float(parameter.grad.abs().max()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    dtype = torch.float32
    source = build(name, dtype)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    target = build(name, dtype)
    x, _ = random_pair(source, dtype, "cpu")
    if OPERATORS[name].learnable:
        assert not torch.allclose(source(x), target(x))
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(x), target(x))
    if isinstance(source, LinearOperator):
        _, y = random_pair(source, dtype, "cpu")
        assert torch.equal(source.adjoint(y), target.adjoint(y))


def _bad_inputs(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    channels, height, width = shape
    return {
        "wrong_height": torch.zeros(1, channels, height + 1, width),
        "wrong_width": torch.zeros(1, channels, height, width + 2),
        "wrong_channels": torch.zeros(1, channels + 1, height, width),
        "missing_batch": torch.zeros(channels, height, width),
        "int_dtype": torch.zeros(1, channels, height, width, dtype=torch.int64),
    }


@pytest.mark.parametrize("bad", sorted(_bad_inputs((1, 2, 2))))
@pytest.mark.parametrize("name", NAMES)
def test_shape_errors_name_expected_and_received(name, bad):
    op = build(name, torch.float32)
    for direction, shape, call in (("forward", op.in_shape, op), ("adjoint", op.out_shape, op.adjoint)):
        tensor = _bad_inputs(shape)[bad]
        with pytest.raises(ShapeError) as info:
            call(tensor)
        message = str(info.value)
        if bad == "int_dtype":
            assert "torch.int64" in message, direction
        else:
            assert ", ".join(str(s) for s in shape) in message, direction
            assert str(list(tensor.shape)) in message, direction
