"""``ctbird restore --method``: BIRD with the classical baselines on a 3-channel image, and baselines alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ctbird.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def rgb_prior(tmp_path_factory):
    from ctbird.priors import DiffusionPrior

    config = {"sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16),
              "layers_per_block": 1, "down_block_types": ("DownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 4}
    return DiffusionPrior.from_config(config, seed=0).save_pretrained(tmp_path_factory.mktemp("rgb") / "tiny")


def _smooth_rgb(side: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB test image ``[side, side, 3]`` uint8 (blurred noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.random((side, side, 3)), sigma=(3, 3, 0))
    image = (image - image.min()) / (image.max() - image.min())
    return (255 * image).astype(np.uint8)


def test_bird_and_wiener_on_rgb_png_write_scores_kernel_and_figure(tmp_path, rgb_prior):
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    truth = _smooth_rgb(32)
    blurred = np.stack([gaussian_filter(truth[..., c].astype(float), 1.0) for c in range(3)], -1).astype(np.uint8)
    Image.fromarray(truth).save(tmp_path / "truth.png")
    Image.fromarray(blurred).save(tmp_path / "blurred.png")
    out = tmp_path / "out"
    result = _invoke("restore", tmp_path / "blurred.png", "--task", "gaussian-deblur", "--prior", rgb_prior,
                     "--method", "bird,wiener,richardson-lucy", "--iters", 2, "--delta-t", 500,
                     "--reference", tmp_path / "truth.png", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["bird", "wiener", "richardson-lucy"] and metrics["data_range"] == [0.0, 1.0]
    assert (metrics["padding"], metrics["warm_start"]) == ("reflect", True)  # the task's set-up, recorded
    assert len(metrics["initial_width_px"]) == 1 and metrics["initial_width_px"][0] >= 1.0  # where the width started
    assert set(metrics["scores"]) == {"input", "wiener", "richardson-lucy"}
    # the observation's score is the PSNR of the blurred PNG against the truth
    expected = 10 * np.log10(1.0 / np.mean((blurred / 255.0 - truth / 255.0) ** 2))
    assert metrics["scores"]["input"]["psnr"] == pytest.approx(expected, abs=1e-3)
    for name in ("wiener", "richardson-lucy"):
        image = np.load(out / f"{name}.npy")
        assert image.shape == (3, 32, 32) and (out / f"{name}.png").is_file()
    kernel = np.load(out / "kernel.npy")
    assert kernel.ndim == 2 and kernel.sum() == pytest.approx(1.0, abs=1e-4) and (out / "comparison.png").is_file()


@pytest.mark.parametrize("task, method, extra", [("denoise", "tv", []), ("sr", "bicubic", ["--sr-factor", "2"]),
                                                 ("inpaint", "biharmonic", ["--mask", "mask.png"])])
def test_baselines_alone_need_no_prior(tmp_path, task, method, extra):
    from PIL import Image

    truth = _smooth_rgb(32)
    rng = np.random.default_rng(1)
    mask = np.ones((32, 32), bool)
    mask[10:20, 10:20] = False
    if task == "sr":
        observed = truth.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    elif task == "denoise":
        observed = np.clip(truth + rng.normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    else:
        observed = truth * mask[..., None]
    Image.fromarray(observed).save(tmp_path / "observed.png")
    Image.fromarray(truth).save(tmp_path / "truth.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    extra = [str(tmp_path / e) if e.endswith(".png") else e for e in extra]
    out = tmp_path / "out"
    result = _invoke("restore", tmp_path / "observed.png", "--task", task, "--method", method,
                     "--reference", tmp_path / "truth.png", "--out", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == 0 and metrics["methods"] == [method]
    restored = np.load(out / "restored.npy")
    assert restored.shape == (3, 32, 32)
    if task != "sr":  # each baseline improves on its observation here
        assert metrics["psnr"] > metrics["scores"]["input"]["psnr"]
    if task == "denoise":
        sigma = metrics["noise_sigma_estimate"]["wavelet"]
        assert 0.5 * 20 / 255 < sigma < 1.5 * 20 / 255


def test_unknown_method_is_one_clear_error(tmp_path):
    from PIL import Image

    Image.fromarray(_smooth_rgb(16)).save(tmp_path / "x.png")
    result = _invoke("restore", tmp_path / "x.png", "--task", "denoise", "--method", "wiener", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "tv" in result.output and not (tmp_path / "o").exists()


def test_dicom_in_gives_a_derived_dicom_in_hu_matching_the_restored_image(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from ctbird.units import unit_to_hu

    source = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out"
    result = _invoke("restore", source, "--task", "denoise", "--method", "tv", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    derived = pydicom.dcmread(out / "restored.dcm")
    original = pydicom.dcmread(source)
    assert derived.SOPInstanceUID != original.SOPInstanceUID and (derived.Rows, derived.Columns) == (128, 128)
    hu = derived.pixel_array * float(derived.RescaleSlope) + float(derived.RescaleIntercept)
    expected = unit_to_hu(2.0 * np.load(out / "restored.npy")[0] - 1.0)
    np.testing.assert_allclose(hu, expected, atol=0.5 * float(derived.RescaleSlope) + 1e-2)


def test_refinement_is_recorded_and_can_be_turned_off_or_set(tmp_path, rgb_prior):
    import tomllib

    from PIL import Image

    from ctbird.config import RefineConfig

    Image.fromarray(_smooth_rgb(32)).save(tmp_path / "noisy.png")
    common = ["--task", "denoise", "--prior", rgb_prior, "--iters", 1, "--delta-t", 500, "--quiet"]
    _invoke("restore", tmp_path / "noisy.png", *common, "--out", tmp_path / "on")
    _invoke("restore", tmp_path / "noisy.png", *common, "--no-refine", "--out", tmp_path / "off")
    (tmp_path / "run.toml").write_text("[refinement]\nt0 = 40\nsamples = 2\n")
    _invoke("restore", tmp_path / "noisy.png", *common, "--config", tmp_path / "run.toml", "--out", tmp_path / "set")
    on, off, chosen = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("on", "off", "set"))
    assert on["refine"] == RefineConfig.for_task("denoise").to_dict() and off["refine"] is None
    assert on["padding"] is None and on["warm_start"] is False  # no operator border; the search was skipped
    assert chosen["refine"] == RefineConfig.for_task("denoise").replace(t0=40, samples=2).to_dict()
    assert on["nfe"] == 1 and off["nfe"] > 1  # denoising's refinement replaces BIRD's search by one Tweedie step
    assert (on["iters_run"], off["iters_run"]) == (0, 1)
    assert on["search_misfit"] is None and len(off["search_misfit"]) == 1 and off["search_misfit"][0] > 0
    assert not np.array_equal(np.load(tmp_path / "on" / "restored.npy"), np.load(tmp_path / "off" / "restored.npy"))
    table = tomllib.loads((tmp_path / "set" / "config.toml").read_text())
    assert table["refinement"]["t0"] == 40 and "refinement" not in tomllib.loads((tmp_path / "off" / "config.toml").read_text())
    (tmp_path / "bad.toml").write_text("[refinement]\nt0 = 5000\n")
    result = CliRunner().invoke(main, ["restore", str(tmp_path / "noisy.png"), *map(str, common), "--config",
                                       str(tmp_path / "bad.toml"), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "[refinement]" in result.output and "Traceback" not in result.output


def test_simulate_degrades_the_clean_input_and_scores_against_it(tmp_path, rgb_prior):
    from PIL import Image

    import torch

    from ctbird.metrics import kernel_error, psnr
    from ctbird.simulate import degrade_image

    truth = _smooth_rgb(32)
    Image.fromarray(truth).save(tmp_path / "clean.png")
    out = tmp_path / "out"
    result = _invoke("restore", tmp_path / "clean.png", "--task", "motion-deblur", "--simulate", "--prior", rgb_prior,
                     "--method", "bird,richardson-lucy", "--iters", 1, "--delta-t", 500, "--seed", 3, "--out", out,
                     "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    clean = (truth.transpose(2, 0, 1) / 255.0).astype(np.float32)
    expected = degrade_image("motion-deblur", torch.from_numpy(clean), seed=3)
    np.testing.assert_allclose(np.load(out / "observed.npy"), expected["y"][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.load(out / "true_kernel.npy"), expected["kernel"].numpy(), atol=1e-7)
    restored = np.load(out / "restored.npy")
    assert metrics["psnr"] == pytest.approx(psnr(restored, clean, data_range=(0.0, 1.0)), abs=1e-4)
    assert set(metrics["scores"]) == {"input", "richardson-lucy"}
    assert metrics["scores"]["input"]["psnr"] == pytest.approx(
        psnr(np.load(out / "observed.npy"), clean, data_range=(0.0, 1.0)), abs=1e-4)
    assert metrics["kernel"]["error"] == pytest.approx(kernel_error(np.load(out / "kernel.npy"), expected["kernel"]))
    assert (out / "true_kernel.png").is_file() and (out / "observed.png").is_file()


@pytest.mark.parametrize("task, extra, shape", [("sr", ["--sr-factor", "4", "--method", "bicubic"], (3, 32, 32)),
                                                ("inpaint", ["--method", "biharmonic"], (3, 32, 32)),
                                                ("motion-deblur", ["--method", "l0-blind"], (3, 32, 32))])
def test_simulate_works_for_baselines_alone(tmp_path, task, extra, shape):
    from PIL import Image

    Image.fromarray(_smooth_rgb(32)).save(tmp_path / "clean.png")
    out = tmp_path / "out"
    result = _invoke("restore", tmp_path / "clean.png", "--task", task, "--simulate", *extra, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.load(out / "restored.npy").shape == shape and "psnr" in metrics
    observed = np.load(out / "observed.npy")
    assert observed.shape == ((3, 8, 8) if task == "sr" else shape)
    if task == "motion-deblur":  # the blind baseline's own kernel, scored against the simulated one
        assert np.load(out / "kernel.npy").shape[-2:] == np.load(out / "true_kernel.npy").shape[-2:]
        assert 0 <= metrics["kernel"]["error"] < 10


def test_simulate_refuses_a_reference_or_mask(tmp_path):
    from PIL import Image

    Image.fromarray(_smooth_rgb(32)).save(tmp_path / "clean.png")
    result = CliRunner().invoke(main, ["restore", str(tmp_path / "clean.png"), "--task", "inpaint", "--simulate",
                                       "--method", "biharmonic", "--mask", str(tmp_path / "clean.png"),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--simulate" in result.output and "--mask" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
