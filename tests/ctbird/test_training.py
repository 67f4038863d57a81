"""Tests of ctbird.training (tiny UNet preset, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctbird.errors import ConfigError, InputError
from ctbird.training import TrainConfig, augment, latest_checkpoint, load_slices, train_prior

SIZE = 16


def _config(**overrides) -> TrainConfig:
    base = dict(size=SIZE, model_preset="tiny", steps=3, batch_size=2, log_every=1, sample_every=1000,
                checkpoint_every=1000, num_samples=2, sample_steps=2, warmup_steps=1, max_shift_px=2)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def stack_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images = np.full((8, 2 * SIZE, 2 * SIZE), -2048, dtype=np.int16)  # outside-FOV padding value
    images[:, 6:26, 4:28] = rng.integers(-900, 400, size=(8, 20, 24))
    path = tmp_path_factory.mktemp("data") / "stack.npz"
    np.savez(path, images=images, patient=np.array(["p1"] * 5 + ["p2"] * 3),
             collection=np.array(["LIDC-IDRI"] * 5 + ["CMB-CRC"] * 3))
    return path


@pytest.fixture(scope="module")
def trained(stack_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior")
    result = train_prior([stack_path], out, _config(archive=out / "prior.tar"))
    return out, result


def test_export_loads_back_with_diffusers(trained):
    from diffusers import DDIMScheduler, UNet2DModel

    out, result = trained
    assert result.steps == 3 and np.isfinite(result.final_loss)
    from safetensors.torch import load_file

    stored = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    unet = UNet2DModel.from_pretrained(out / "unet")
    assert unet.config.sample_size == SIZE and unet.config.in_channels == 1
    with torch.no_grad():
        eps = unet(torch.zeros(1, 1, SIZE, SIZE), 10).sample
    assert eps.shape == (1, 1, SIZE, SIZE)
    scheduler = DDIMScheduler.from_pretrained(out / "scheduler")
    cfg = scheduler.config
    assert (cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (1000, 1e-4, 0.02, "linear")
    assert cfg.prediction_type == "epsilon" and cfg.clip_sample and cfg.set_alpha_to_one and cfg.steps_offset == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DDIMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert (out / "samples.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    import tarfile

    with tarfile.open(out / "prior.tar") as tar:
        names = set(tar.getnames())
    assert {"prior/unet/diffusion_pytorch_model.safetensors", "prior/scheduler/scheduler_config.json",
            "prior/model_index.json", "prior/README.md"} <= names


def test_model_card_names_data_licences_and_limits(trained, stack_path):
    out, _ = trained
    card = (out / "README.md").read_text()
    assert "LIDC-IDRI" in card and "10.7937/K9/TCIA.2015.LO9QL9SX" in card and "CMB-CRC" in card
    assert str(stack_path) in card and "2x2 block average" in card
    assert "Not for clinical use" in card and "-1024" in card and "3071" in card
    assert "Steps: 3" in card


def test_resume_continues_from_saved_step(trained, stack_path):
    out, _ = trained
    assert latest_checkpoint(out).name == "checkpoint-0000003"
    result = train_prior([stack_path], out, _config(steps=5, resume=True))
    assert result.steps == 5
    steps = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert latest_checkpoint(out).name == "checkpoint-0000005"


def test_resume_without_checkpoint_is_a_config_error(stack_path, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train_prior([stack_path], tmp_path, _config(resume=True))


def test_init_from_starts_from_an_exported_prior(trained, stack_path, tmp_path):
    from diffusers import UNet2DModel

    out, _ = trained
    exported = UNet2DModel.from_pretrained(out / "unet", torch_dtype=torch.float32).state_dict()
    # one step at a negligible rate: the new export must be the initial weights (up to the fp16 export)
    result = train_prior([stack_path], tmp_path, _config(steps=1, lr=1e-12, init_from=out))
    assert result.info["initialized_from"] == str(out)
    reloaded = UNet2DModel.from_pretrained(tmp_path / "unet", torch_dtype=torch.float32).state_dict()
    for name, tensor in exported.items():
        torch.testing.assert_close(reloaded[name], tensor, atol=1e-3, rtol=1e-3)


def test_continued_stretches_keep_their_lineage_loss_log_and_card(stack_path, tmp_path):
    described = tmp_path / "described.npz"
    with np.load(stack_path) as data:
        np.savez(described, **{k: data[k] for k in data.files}, description=np.array("every slice of a test stack"))
    first = train_prior([stack_path], tmp_path / "first", _config(steps=2))
    second = train_prior([described], tmp_path / "second", _config(steps=3, init_from=tmp_path / "first"))
    third = train_prior([stack_path], tmp_path / "third", _config(steps=1, init_from=tmp_path / "second"))

    assert first.info["previous_stretches"] == []
    assert [s["steps"] for s in second.info["previous_stretches"]] == [2]
    assert [s["steps"] for s in third.info["previous_stretches"]] == [2, 3]
    assert third.info["previous_stretches"][1]["data"][0]["description"] == "every slice of a test stack"
    # the loss log runs on across stretches: the parents' lines, then this stretch's steps after theirs
    steps = [json.loads(line)["step"] for line in (tmp_path / "third" / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    card = (tmp_path / "third" / "README.md").read_text()
    assert "Trained in 3 stretches" in card and "6 steps" in card
    assert "every slice of a test stack" in (tmp_path / "second" / "README.md").read_text()
    saved = json.loads((tmp_path / "third" / "training_info.json").read_text())
    assert [s["steps"] for s in saved["previous_stretches"]] == [2, 3]


@pytest.mark.slow
def test_compiled_training_matches_eager_training(stack_path, tmp_path):
    eager = train_prior([stack_path], tmp_path / "eager", _config(steps=2, mixed_precision="no"))
    compiled = train_prior([stack_path], tmp_path / "compiled", _config(steps=2, mixed_precision="no", compile=True))
    assert compiled.info["compiled"] and not eager.info["compiled"]
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "loss.jsonl").read_text().splitlines()]
              for run in ("eager", "compiled")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)


def test_init_from_rejects_a_mismatched_prior_and_resume(trained, stack_path, tmp_path):
    out, _ = trained
    with pytest.raises(ConfigError, match="differs from --model-preset"):
        train_prior([stack_path], tmp_path / "a", _config(steps=1, init_from=out, size=32))
    with pytest.raises(ConfigError, match="exclude each other"):
        train_prior([stack_path], tmp_path / "b", _config(steps=1, init_from=out, resume=True))
    with pytest.raises(InputError, match="no UNet found"):
        train_prior([stack_path], tmp_path / "c", _config(steps=1, init_from=tmp_path))


def test_time_budget_stops_cleanly_with_a_usable_export(stack_path, tmp_path):
    from diffusers import UNet2DModel

    result = train_prior([stack_path], tmp_path, _config(steps=10_000, max_minutes=1e-6))
    assert result.stopped_by_time and result.steps < 10_000
    assert UNet2DModel.from_pretrained(tmp_path / "unet").config.sample_size == SIZE
    assert latest_checkpoint(tmp_path) is not None


def test_load_slices_scales_and_block_averages(tmp_path):
    hu = np.array([[-1024, -1024, 0, 0], [-1024, -1024, 0, 0],
                   [3071, 3071, -3024, -3024], [3071, 3071, -3024, -3024]], dtype=np.int16)
    np.save(tmp_path / "slice.npy", hu)
    slices, sources = load_slices([tmp_path / "slice.npy"], 2)
    assert slices.shape == (1, 1, 2, 2) and slices.dtype == torch.float16
    expected = torch.tensor([[-1.0, -1.0 + 2 * 1024 / 4095], [1.0, -1.0]])
    torch.testing.assert_close(slices[0, 0].float(), expected, atol=2e-3, rtol=0)
    assert sources[0]["preprocessing"] == "2x2 block average"


def test_load_slices_resizes_other_sizes(tmp_path):
    np.save(tmp_path / "slices.npy", np.zeros((2, 24, 24), dtype=np.float32))
    slices, sources = load_slices([tmp_path / "slices.npy"], 16)
    assert slices.shape == (2, 1, 16, 16)
    assert "bilinear" in sources[0]["preprocessing"]


def test_load_slices_pads_non_square_slices_as_inference_does(tmp_path):
    """Training sees slices exactly as inference prepares them (ctbird.stacks.working_slices): padded, not cropped."""
    from ctbird.stacks import working_slices
    from ctbird.units import hu_to_unit

    wide = np.full((2, 12, 32), -1000, dtype=np.int16)
    wide[:, 4:8, :3] = 500  # at the far left: a centre crop would cut it away
    np.save(tmp_path / "wide.npy", wide)
    slices, sources = load_slices([tmp_path / "wide.npy"], 16)
    expected, description = working_slices(wide, 16)
    torch.testing.assert_close(slices[:, 0].float(), hu_to_unit(torch.from_numpy(expected)), atol=1e-3, rtol=0)
    assert sources[0]["preprocessing"] == description == "pad to 32x32 with air, 2x2 block average"
    assert float(slices[:, 0, :, 0].max()) > float(hu_to_unit(torch.tensor(0.0)))


def test_dicom_input(tmp_path):
    pytest.importorskip("ctbird.io.dicom", reason="H5's DICOM reader (ctbird.io.dicom) is not available")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")  # 128x128 CT
    slices, sources = load_slices([path], 64)
    assert slices.shape == (1, 1, 64, 64)
    assert slices.min() >= -1 and slices.max() <= 1 and slices.float().std() > 0.01
    assert sources[0]["preprocessing"] == "2x2 block average"


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.npz", "does not exist"),
    (lambda d: (np.save(d / "vol.npy", np.zeros((2, 2, 16, 16))), d / "vol.npy")[1], r"\[slices, H, W\]"),
    (lambda d: (np.savez(d / "two.npz", a=np.zeros((2, 16, 16)), b=np.zeros(2)), d / "two.npz")[1], "'images'"),
    (lambda d: ((d / "notes.txt").write_text("x"), d / "notes.txt")[1], "unsupported"),
])
def test_bad_inputs_raise_input_error(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        load_slices([make(tmp_path)], SIZE)


def test_augment_translates_and_flips_left_right_only():
    image = torch.full((64, 1, 11, 11), -1.0)
    image[:, 0, 5, 8] = 1.0  # one bright pixel right of centre
    out = augment(image, max_shift=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == image.shape
    assert all(int((o == 1.0).sum()) == 1 and int((o == -1.0).sum()) == 120 for o in out)
    positions = [divmod(int(i), 11) for i in out[:, 0].flatten(1).argmax(1)]
    rows = {r for r, _ in positions}
    cols = {c for _, c in positions}
    assert rows <= {3, 4, 5, 6, 7} and len(rows) > 1  # shifted by at most 2 vertically, never mirrored
    assert cols <= {0, 1, 2, 3, 4, 6, 7, 8, 9, 10}
    assert cols & {0, 1, 2, 3, 4} and cols & {6, 7, 8, 9, 10}  # mirrored left-right sometimes


def test_cli_reports_missing_data(tmp_path):
    from click.testing import CliRunner

    from ctbird.training import train_prior_command

    result = CliRunner().invoke(train_prior_command, [str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o"),
                                                      "--model-preset", "tiny", "--size", "16"])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_augment_zoom_crops_or_pads_with_air_about_the_centre():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disk = torch.where(torch.hypot(yy - 15.5, xx - 15.5) <= 8, 0.0, -1.0)  # water-ish disk in air
    batch = disk.expand(256, 1, 32, 32).clone()
    out = augment(batch, max_shift=0, generator=torch.Generator().manual_seed(0), max_zoom=1.5)
    tissue = (out > -0.5).float().mean((1, 2, 3))
    base = float((disk > -0.5).float().mean())
    # log-uniform scales in [1/1.5, 1.5]: the disk's area ranges over about [base / 2.25, base * 2.25]
    assert tissue.min() < base / 1.6 and tissue.max() > base * 1.6
    assert tissue.min() > base / 2.6 and tissue.max() < base * 2.6
    assert float(out.min()) >= -1.0 - 1e-6 and float(out.max()) <= 1e-6  # no value outside the input's range
    assert torch.allclose(out[:, :, 0, :], torch.tensor(-1.0))  # the border stays air: padding is air, not 0
    # zoom 1 is off: only flips remain, and a centred disk is its own mirror image
    same = augment(batch[:4], max_shift=0, generator=torch.Generator().manual_seed(0), max_zoom=1.0)
    assert torch.equal(same, batch[:4])


def test_max_zoom_below_one_is_a_config_error(stack_path, tmp_path):
    with pytest.raises(ConfigError, match="max-zoom"):
        train_prior([stack_path], tmp_path / "o", _config(max_zoom=0.5))


def test_zoomed_training_records_its_zoom_in_the_card(stack_path, tmp_path):
    train_prior([stack_path], tmp_path / "z", _config(steps=1, max_zoom=1.3))
    info = json.loads((tmp_path / "z" / "training_info.json").read_text())
    assert info["max_zoom"] == 1.3
    assert "random zooms about the centre by a factor in [1/1.3, 1.3]" in (tmp_path / "z" / "README.md").read_text()
