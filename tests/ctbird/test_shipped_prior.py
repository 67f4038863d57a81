"""The shipped CT prior (data/priors/ctbird-ct-256): its files, config and model card, and a short offline BIRD run.

BIRD runs on a 64x64 crop (the UNet is convolutional; ``image_size=64`` decodes at that side) so that it takes
seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctbird import units
from ctbird.errors import ConfigError
from ctbird.io import read_dicom, to_working_size
from ctbird.priors import DiffusionPrior
from ctbird.solvers import BIRD
from operators import ParallelBeam, Radon

REPO = Path(__file__).resolve().parents[2]
PRIOR_DIR = REPO / "data" / "priors" / "ctbird-ct-256"
SAMPLE_DICOM = REPO / "data" / "samples" / "chest_tcga_0000.dcm"
CROP = 64

pytestmark = pytest.mark.skipif(not PRIOR_DIR.is_dir(), reason=f"shipped prior missing at {PRIOR_DIR}")


@pytest.fixture(scope="module")
def shipped_prior_64() -> DiffusionPrior:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return DiffusionPrior.from_pretrained(PRIOR_DIR, local_files_only=True, image_size=CROP)


def test_config_is_birds_schedule_and_a_one_channel_256_unet():
    unet_config = json.loads((PRIOR_DIR / "unet" / "config.json").read_text())
    scheduler_config = json.loads((PRIOR_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert unet_config["_class_name"] == "UNet2DModel"
    assert unet_config["in_channels"] == unet_config["out_channels"] == 1
    assert unet_config["sample_size"] == 256
    assert scheduler_config["prediction_type"] == "epsilon"
    assert scheduler_config["beta_schedule"] == "linear"
    assert scheduler_config["beta_start"] == pytest.approx(1e-4)
    assert scheduler_config["beta_end"] == pytest.approx(0.02)
    assert scheduler_config["num_train_timesteps"] == 1000


def test_weights_are_small_fp16_safetensors():
    from safetensors import safe_open

    weights = PRIOR_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 30 * 1024 ** 2
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes == {"F16"}


def test_model_card_states_data_licences_and_limits():
    card = (PRIOR_DIR / "README.md").read_text()
    for needle in ("CC BY 3.0", "CC BY 4.0", "TCIA", "LIDC-IDRI", "Not for clinical use", "ctbird train-prior"):
        assert needle in card, f"model card lacks {needle!r}"


def test_loaded_prior_reports_trained_and_decode_sizes(shipped_prior_64):
    assert shipped_prior_64.trained_image_size == 256
    assert shipped_prior_64.image_size == CROP and shipped_prior_64.shape == (1, CROP, CROP)
    assert shipped_prior_64.size_multiple == 16
    assert shipped_prior_64.prediction_type == "epsilon" and shipped_prior_64.num_train_timesteps == 1000
    with pytest.raises(ConfigError, match="multiple of 16"):
        DiffusionPrior(shipped_prior_64.unet, shipped_prior_64.scheduler_config, image_size=72)


def test_bird_on_a_64px_crop_of_a_chest_slice_runs_offline(shipped_prior_64, monkeypatch, tmp_path):
    monkeypatch.setenv("CTBIRD_CACHE_DIR", str(tmp_path / "radon-cache"))
    torch.manual_seed(0)
    volume = read_dicom(SAMPLE_DICOM)
    hu = units.clip_hu(to_working_size(volume.hu[0], 256))
    top = 256 // 2 - CROP // 2
    crop = torch.from_numpy(np.ascontiguousarray(hu[top:top + CROP, top:top + CROP]))[None, None]
    spacing_mm = 2.0 * float(volume.pixel_spacing_mm[0])  # 512 -> 256 block averaging doubles the spacing

    radon = Radon(ParallelBeam(views=16), CROP)
    y = radon(units.hu_to_mu(crop) * spacing_mm)
    iters, delta_t = 3, 250
    solver = BIRD(shipped_prior_64, radon, iters=iters, delta_t=delta_t, lr_latent=3e-2, lr_operator=0.0,
                  input_transform=lambda x0: units.unit_to_mu(x0) * spacing_mm)
    result = solver.run(y, generator=torch.Generator().manual_seed(0))

    assert result.image.shape == (1, 1, CROP, CROP)
    assert torch.isfinite(result.image).all() and result.image.abs().max() <= 1.0
    assert result.nfe == (iters + 1) * (1000 // delta_t)  # iterations + the final decode
    assert len(result.loss_history) == iters and all(np.isfinite(result.loss_history))
    assert float(result.final_loss[0]) < result.loss_history[0]
