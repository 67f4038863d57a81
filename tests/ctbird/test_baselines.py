"""FBP / SIRT / TV baselines: quality ordering, convergence, errors (FBP itself: tests/operators/test_fbp.py)."""

from __future__ import annotations

import pytest
import torch

from ctbird.baselines import fbp, operator_norm, sirt, tv
from ctbird.errors import ConfigError, ShapeError
from ctbird.metrics import psnr
from ctbird.phantoms import shepp_logan
from operators.base import LinearOperator
from operators.fbp import fbp as operators_fbp
from operators.geometry import FanBeam, ParallelBeam
from operators.radon import Radon


class DenseOperator(LinearOperator):
    """A small dense matrix as a LinearOperator (test double for Radon)."""

    def __init__(self, matrix: torch.Tensor, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__(in_shape, out_shape)
        self.register_buffer("matrix", matrix)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(x.shape[0], -1) @ self.matrix.T.to(x.dtype)).reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y.reshape(y.shape[0], -1) @ self.matrix.to(y.dtype)).reshape(y.shape[0], *self.in_shape)


@pytest.fixture
def dense_problem():
    """Overdetermined non-negative system: 48 measurements of a 4x4 image, consistent data."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.rand(48, 16, generator=generator, dtype=torch.float64)
    op = DenseOperator(matrix, (1, 4, 4), (1, 6, 8))
    x_true = torch.rand(2, 1, 4, 4, generator=generator, dtype=torch.float64)
    return op, x_true, op(x_true)


def test_fbp_is_the_operator_fbp_without_gradients():
    """The classical method is :func:`operators.fbp.fbp` (tested in tests/operators/test_fbp.py), detached."""
    n = 32
    geometry = FanBeam(90, source_distance=96.0, detector_distance=48.0)
    sinogram = Radon(geometry, n, use_cache=False)(shepp_logan(n, dtype=torch.float64)).requires_grad_(True)
    recon = fbp(sinogram, geometry, n, filter="hann")
    assert not recon.requires_grad
    torch.testing.assert_close(recon, operators_fbp(sinogram, geometry, n, filter="hann").detach(), rtol=0, atol=0)


def test_shepp_logan_quality_ordering_tv_sirt_fbp():
    """Shepp-Logan 128^2, 30 parallel views, noiseless; PSNR with data_range=1.0 (the phantom's [0, 1])."""
    n = 128
    geometry = ParallelBeam(30)
    radon = Radon(geometry, n, use_cache=False)
    image = shepp_logan(n)
    sinogram = radon(image)
    scores = {
        "fbp": psnr(fbp(sinogram, geometry, n), image, data_range=1.0),
        "sirt": psnr(sirt(sinogram, radon, iters=100), image, data_range=1.0),
        "tv": psnr(tv(sinogram, radon, iters=300), image, data_range=1.0),
    }
    assert scores["tv"] > scores["sirt"] + 3.0 > scores["fbp"] + 3.0 + 2.0, scores


def test_sirt_nonneg_and_callback(dense_problem):
    op, x_true, y = dense_problem
    y_inconsistent = y - 0.5 * y.mean()  # pushes the unconstrained solution negative somewhere
    calls = []
    free = sirt(y_inconsistent, op, iters=50, nonneg=False)
    clamped = sirt(y_inconsistent, op, iters=50, nonneg=True, callback=lambda k, x: calls.append(k))
    assert float(free.min()) < 0.0
    assert float(clamped.min()) >= 0.0
    assert calls == list(range(1, 51))


def test_sirt_converges_on_consistent_data(dense_problem):
    op, x_true, y = dense_problem
    x = sirt(y, op, iters=3000)
    torch.testing.assert_close(x, x_true, rtol=0, atol=1e-3)
    # x0 is respected: zero iterations return it (clamped to >= 0).
    start = torch.full_like(x_true, -1.0)
    assert torch.equal(sirt(y, op, iters=0, x0=start), torch.zeros_like(x_true))
    assert torch.equal(sirt(y, op, iters=0, x0=start, nonneg=False), start)


def test_tv_limits_and_scale_covariance(dense_problem):
    op, x_true, y = dense_problem
    # lam = 0: least squares on consistent overdetermined data -> the truth.
    x_ls = tv(y, op, lam=0.0, iters=3000)
    torch.testing.assert_close(x_ls, x_true, rtol=0, atol=2e-3)
    # huge lam: TV forces a constant image (the best constant fit).
    x_flat = tv(y, op, lam=1e6, iters=3000)
    assert float(x_flat.std(dim=(2, 3)).max()) < 1e-3
    # the default lam follows the data scale: 2 y -> 2 x.
    torch.testing.assert_close(tv(2 * y, op, iters=200), 2 * tv(y, op, iters=200), rtol=1e-6, atol=1e-9)


def test_tv_and_sirt_reject_bad_inputs(dense_problem):
    op, x_true, y = dense_problem
    with pytest.raises(ShapeError, match=r"\[B, 1, 6, 8\]"):
        sirt(y[..., :4], op)
    with pytest.raises(ShapeError, match=r"\[B, 1, 6, 8\]"):
        tv(y[0], op)
    with pytest.raises(ShapeError, match="batch size"):
        sirt(y, op, x0=x_true[:1])
    with pytest.raises(ConfigError, match="iters"):
        sirt(y, op, iters=-1)
    with pytest.raises(ConfigError, match="lam"):
        tv(y, op, lam=-1.0)
    with pytest.raises(ConfigError, match="LinearOperator"):
        sirt(y, lambda x: x)


def test_operator_norm_is_cached_and_correct(dense_problem):
    op = dense_problem[0]
    expected = float(torch.linalg.matrix_norm(op.matrix, ord=2))
    assert operator_norm(op) == pytest.approx(expected, rel=1e-4)
    op.matrix.mul_(2.0)  # an in-place change invalidates the cache
    assert operator_norm(op) == pytest.approx(2 * expected, rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_baselines_on_gpu_match_cpu():
    """Pure-torch Radon backend (no ASTRA needed on the GPU machine)."""
    n = 64
    geometry = ParallelBeam(30)
    radon = Radon(geometry, n, backend="torch")
    sinogram = radon(shepp_logan(n))
    cuda_radon = Radon(geometry, n, backend="torch", device="cuda")
    for run_cpu, run_gpu in (
        (lambda: fbp(sinogram, geometry, n), lambda: fbp(sinogram.cuda(), geometry, n)),
        (lambda: sirt(sinogram, radon, iters=20), lambda: sirt(sinogram.cuda(), cuda_radon, iters=20)),
        (lambda: tv(sinogram, radon, iters=50), lambda: tv(sinogram.cuda(), cuda_radon, iters=50)),
    ):
        gpu = run_gpu()
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), run_cpu(), rtol=1e-3, atol=1e-3)
