"""PSNR / SSIM / RMSE: conventions, known values, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from ctbird.errors import ConfigError, InputError
from ctbird.metrics import fov_mask, psnr, rmse, rmse_hu, ssim


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, size=(32, 32))


def test_psnr_of_identical_images_is_inf(image):
    assert psnr(image, image.copy(), data_range=1.0) == math.inf
    assert psnr(torch.from_numpy(image), torch.from_numpy(image), data_range=(0.0, 1.0)) == math.inf


def test_psnr_known_value():
    ref = np.zeros((8, 8))
    x = ref + 0.1  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB; with span 2 -> 20 + 20 log10(2)
    assert psnr(x, ref, data_range=1.0) == pytest.approx(20.0)
    assert psnr(x, ref, data_range=2.0) == pytest.approx(20.0 + 20.0 * math.log10(2.0))
    assert rmse(x, ref) == pytest.approx(0.1)


def test_batch_reduction_mean_and_none():
    ref = torch.zeros(2, 1, 8, 8)
    x = ref.clone()
    x[0] += 0.1  # 20 dB
    x[1] += 0.01  # 40 dB
    per_image = psnr(x, ref, data_range=1.0, reduction="none")
    assert per_image == pytest.approx([20.0, 40.0])
    assert psnr(x, ref, data_range=1.0) == pytest.approx(30.0)
    assert rmse(x, ref, reduction="none") == pytest.approx([0.1, 0.01])
    with pytest.raises(ConfigError, match="reduction"):
        psnr(x, ref, data_range=1.0, reduction="sum")


@pytest.mark.parametrize("bad", [None, 0.0, -1.0, math.nan, math.inf, (1.0, 0.0), (0.0,), "1", (0.0, math.nan), True])
def test_data_range_is_required_and_validated(image, bad):
    with pytest.raises(ConfigError, match="data_range"):
        psnr(image, image, data_range=bad)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(image, image, data_range=bad)


def test_data_range_missing_names_the_fix(image):
    with pytest.raises(ConfigError, match="EVAL_HU_RANGE"):
        psnr(image, image)


def test_tuple_data_range_clips_both_images():
    ref = np.full((16, 16), 0.5)
    x = ref.copy()
    x[:4] = 1.7  # above hi: identical to ref after clipping to [0, 0.5]
    assert psnr(x, ref, data_range=(0.0, 0.5)) == math.inf
    assert ssim(x, ref, data_range=(0.0, 0.5)) == pytest.approx(1.0)
    assert math.isfinite(psnr(x, ref, data_range=0.5))  # a plain span does not clip
    # Clipping also applies to the reference: values below lo become lo.
    ref_low = ref.copy()
    ref_low[0, 0] = -3.0
    x_low = ref.copy()
    x_low[0, 0] = 0.0
    assert psnr(x_low, ref_low, data_range=(0.0, 1.0)) == math.inf


def test_ssim_identical_is_one_and_matches_wang_settings(image):
    assert ssim(image, image, data_range=1.0) == pytest.approx(1.0)
    noisy = image + np.random.default_rng(1).normal(0.0, 0.1, image.shape)
    expected = structural_similarity(noisy, image, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim(noisy, image, data_range=1.0) == pytest.approx(expected)
    assert ssim(noisy, image, data_range=1.0) < 0.95


def test_ssim_multichannel_batch_torch():
    generator = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 16, 16, generator=generator)
    x = ref.clone()
    x[1] += 0.2 * torch.randn(3, 16, 16, generator=generator)
    values = ssim(x, ref, data_range=1.0, reduction="none")
    assert values[0] == pytest.approx(1.0)
    assert values[1] < 0.9
    assert ssim(x, ref, data_range=1.0) == pytest.approx(sum(values) / 2)


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(InputError, match="11 x 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0)


def test_shape_mismatch_and_bad_inputs_raise_input_error(image):
    with pytest.raises(InputError, match="same shape"):
        psnr(image, image[:16], data_range=1.0)
    with pytest.raises(InputError, match="same shape"):
        rmse(torch.zeros(1, 1, 8, 8), torch.zeros(8, 8))
    with pytest.raises(InputError, match=r"\[H, W\]"):
        rmse(np.zeros(8), np.zeros(8))
    with pytest.raises(InputError, match="NaN"):
        rmse(np.full((4, 4), np.nan), np.zeros((4, 4)))
    with pytest.raises(InputError, match="numpy array or a torch tensor"):
        rmse([[0.0]], [[0.0]])


def test_mask_restricts_the_error():
    ref = np.zeros((8, 8))
    x = ref.copy()
    x[0, 0] = 10.0  # error only outside the mask
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    assert rmse(x, ref, mask=mask) == 0.0
    assert psnr(x, ref, data_range=1.0, mask=mask) == math.inf
    assert rmse(x, ref) == pytest.approx(10.0 / 8.0)
    with pytest.raises(InputError, match="spatial shape"):
        rmse(x, ref, mask=np.ones((4, 4)))
    with pytest.raises(InputError, match="no pixel"):
        rmse(x, ref, mask=np.zeros((8, 8)))


def test_rmse_hu_field_of_view():
    ref = np.zeros((32, 32))
    x = ref.copy()
    x[0, 0] = 500.0  # a corner pixel lies outside the inscribed circle
    assert rmse_hu(x, ref, fov=True) == 0.0
    assert rmse_hu(x, ref) == pytest.approx(500.0 / 32.0)
    mask = fov_mask(32)
    assert mask[16, 16] and not mask[0, 0] and mask[16, 0]


def test_score_ct_follows_the_ct_conventions():
    from ctbird.metrics import score_ct

    rng = np.random.default_rng(0)
    truth = rng.uniform(-1000, 1500, (32, 32))
    image = truth + rng.normal(0, 30, truth.shape)
    image[0, 0] = -3000.0  # below the prior window: clipped for RMSE, and by the data range for PSNR/SSIM
    scores = score_ct(image, truth, data_range=(-1000.0, 1000.0))
    assert scores["psnr"] == pytest.approx(psnr(image, truth, data_range=(-1000.0, 1000.0)))
    assert scores["ssim"] == pytest.approx(ssim(image, truth, data_range=(-1000.0, 1000.0)))
    assert scores["rmse_hu"] == pytest.approx(rmse_hu(np.clip(image, -1024.0, 3071.0), truth))
    assert "ssim" not in score_ct(image[:8, :8], truth[:8, :8], data_range=2000.0)
    with pytest.raises(ConfigError):
        score_ct(image, truth, data_range=None)
