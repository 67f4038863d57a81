"""The ``ctbird`` command line: help, full runs on a tiny prior, outputs, errors and --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from ctbird.cli import main
from ctbird.config import BirdConfig

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_prior_dir(tmp_path_factory):
    """A 32x32 one-channel prior folder (unet/ + scheduler/) with seeded random weights."""
    from ctbird.priors import DiffusionPrior

    config = {"sample_size": 32, "in_channels": 1, "out_channels": 1, "block_out_channels": (8, 16),
              "layers_per_block": 1, "down_block_types": ("DownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 4}
    scheduler = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
                 "prediction_type": "epsilon"}
    return DiffusionPrior.from_config(config, scheduler, seed=0).save_pretrained(tmp_path_factory.mktemp("prior") / "tiny")


@pytest.fixture
def phantom_npy(tmp_path):
    """A 64x64 HU phantom: water disk with a bone insert in air."""
    yy, xx = np.mgrid[-1:1:64j, -1:1:64j]
    hu = np.full((64, 64), -1000.0, np.float32)
    hu[xx**2 + yy**2 < 0.7] = 0.0
    hu[(xx - 0.2) ** 2 + yy**2 < 0.05] = 800.0
    path = tmp_path / "inputs" / "phantom.npy"
    path.parent.mkdir()
    np.save(path, hu)
    return path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["reconstruct"], ["restore"], ["train-prior"]])
def test_help(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command == ["reconstruct"]:
        assert "--geometry-file" in result.output and "--method" in result.output


def test_help_in_a_real_subprocess():
    done = subprocess.run([sys.executable, "-m", "ctbird.cli", "reconstruct", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and "--views" in done.stdout


def test_full_reconstruct_of_an_npy_image_with_bird_and_fbp(tmp_path, tiny_prior_dir, phantom_npy):
    out = tmp_path / "results"
    result = _invoke("reconstruct", phantom_npy, "--prior", tiny_prior_dir, "--method", "bird,fbp", "--iters", 2,
                     "--delta-t", 500, "--views", 8, "--dose", 1e5, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    expected = {"bird.dcm", "bird.npy", "bird.png", "fbp.dcm", "fbp.npy", "fbp.png", "metrics.json",
                "comparison.png", "config.toml", "sinogram.npy", "geometry.json"}
    assert expected <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"] == 8 and metrics["data_range_hu"] == [-1000.0, 1000.0] and metrics["seed"] == 0
    for method in ("bird", "fbp"):
        entry = metrics["methods"][method]
        assert np.isfinite(entry["psnr"]) and -1 <= entry["ssim"] <= 1 and entry["rmse_hu"] >= 0
        assert np.load(out / f"{method}.npy").shape == (64, 64)
    bird = metrics["methods"]["bird"]
    assert (bird["iters"], bird["delta_t"], bird["grad_mode"]) == (2, 500, "detached")
    ct_defaults = BirdConfig()
    assert bird["latent_optimizer"] == ct_defaults.latent_optimizer == "normalized-gd"
    assert bird["lr_latent"] == ct_defaults.lr_latent
    assert bird["latent_lr_schedule"] == ct_defaults.latent_lr_schedule == "cosine"
    assert bird["keep_best"] is ct_defaults.keep_best is True
    assert bird["data_filter"] == 0.5
    assert "latent_optimizer" not in metrics["methods"]["fbp"]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["method"] == "bird,fbp" and config["iters"] == 2 and config["dose"] == 1e5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_dicom_reconstruct_writes_derived_dicom_matching_the_npy(tmp_path):
    out = tmp_path / "out"
    result = _invoke("reconstruct", CT_SMALL, "--method", "fbp", "--views", 12, "--window", "soft-tissue",
                     "--anonymize", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    source = pydicom.dcmread(CT_SMALL)
    derived = pydicom.dcmread(out / "fbp.dcm")
    assert derived.SOPInstanceUID != source.SOPInstanceUID
    assert derived.SeriesInstanceUID != source.SeriesInstanceUID
    reference = derived.SourceImageSequence[0].ReferencedSOPInstanceUID  # remapped: --anonymize must not leak it
    assert reference != source.SOPInstanceUID and pydicom.uid.UID(reference).is_valid
    assert derived.PatientIdentityRemoved == "YES" and str(derived.PatientName) == ""
    assert (derived.Rows, derived.Columns) == (128, 128)
    assert [float(v) for v in derived.PixelSpacing] == pytest.approx([float(v) for v in source.PixelSpacing])
    hu = derived.pixel_array * float(derived.RescaleSlope) + float(derived.RescaleIntercept)
    np.testing.assert_allclose(hu, np.load(out / "fbp.npy"), atol=0.5 * float(derived.RescaleSlope) + 1e-3)


def test_sinogram_input_with_geometry_file(tmp_path):
    geometry = tmp_path / "inputs" / "geometry.toml"
    geometry.parent.mkdir()
    geometry.write_text('type = "parallel"\nviews = 10\nangle_range_deg = [0, 180]\nimage_size = 24\n')
    from operators.geometry import ParallelBeam
    from operators.radon import Radon
    import torch

    disk = torch.zeros(1, 1, 24, 24)
    disk[..., 6:18, 6:18] = 0.02
    sinogram = Radon(ParallelBeam(views=10).resolved(24), 24)(disk)[0, 0].numpy()
    np.save(tmp_path / "inputs" / "measured.npy", sinogram)
    out = tmp_path / "out"
    result = _invoke("reconstruct", tmp_path / "inputs" / "measured.npy", "--geometry-file", geometry,
                     "--method", "fbp,sirt", "--iters", 5, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "psnr" not in metrics["methods"]["fbp"] and np.load(out / "sirt.npy").shape == (24, 24)
    assert pydicom.dcmread(out / "fbp.dcm").Modality == "CT"


def _bad_input(tmp_path, case) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    raw = CT_SMALL.read_bytes()
    path = folder / "input.dcm"
    if case == "corrupt":
        path.write_bytes(raw[:200] + b"\xff" * 400 + raw[600:])
    elif case == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "non-dicom":
        path.write_text("just text\n")
    elif case == "mr":
        path.write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    elif case == "wrong-shape":
        path = folder / "input.npy"
        np.save(path, np.zeros((2, 3, 4, 5), np.float32))
    elif case == "wrong-sinogram":
        path = folder / "input.npy"
        np.save(path, np.zeros((7, 20), np.float32))
        (folder / "g.toml").write_text('type = "parallel"\nviews = 8\ndetectors = 20\n')
    return path


@pytest.mark.parametrize("case, needle", [
    ("corrupt", "input.dcm"), ("truncated", "input.dcm"), ("empty", "input.dcm"), ("non-dicom", "not a DICOM file"),
    ("mr", "is an MR image; ctbird reconstructs CT"), ("wrong-shape", "expected an HU volume"),
    ("wrong-sinogram", "7 views x 20 detectors"),
])
def test_bad_inputs_fail_cleanly_and_write_nothing(tmp_path, case, needle):
    path = _bad_input(tmp_path, case)
    out = tmp_path / "out"
    extra = ["--geometry-file", path.parent / "g.toml"] if case == "wrong-sinogram" else []
    result = CliRunner().invoke(main, ["reconstruct", str(path), "--method", "fbp", "--out", str(out), *map(str, extra)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert needle in result.output and result.output.startswith("Error: ")
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_option_errors(tmp_path, phantom_npy):
    bad_method = _invoke("reconstruct", phantom_npy, "--method", "bird,magic", "--out", tmp_path / "o")
    assert bad_method.exit_code == 1 and "magic" in bad_method.output
    bad_window = _invoke("reconstruct", phantom_npy, "--method", "fbp", "--window", "cardiac", "--out", tmp_path / "o")
    assert bad_window.exit_code == 1 and "window" in bad_window.output.lower()
    inside = _invoke("reconstruct", phantom_npy, "--method", "fbp", "--out", phantom_npy.parent)
    assert inside.exit_code == 1 and "overlaps the input" in inside.output
    missing_prior = _invoke("reconstruct", phantom_npy, "--method", "bird", "--prior", tmp_path / "nowhere",
                            "--out", tmp_path / "o")
    assert missing_prior.exit_code == 1 and missing_prior.output.startswith("Error: ")
    config = tmp_path / "c.toml"
    config.write_text("wobble = 3\n")
    unknown = _invoke("reconstruct", phantom_npy, "--config", config, "--out", tmp_path / "o")
    assert unknown.exit_code == 1 and "wobble" in unknown.output
    assert not (tmp_path / "o").exists()


def test_force_semantics_and_config_file(tmp_path, phantom_npy):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous results")
    config = tmp_path / "run.toml"
    config.write_text('method = "fbp"\nviews = 6\nwindow = "lung"\n')
    refused = _invoke("reconstruct", phantom_npy, "--config", config, "--out", out)
    assert refused.exit_code == 1 and "--force" in refused.output
    foreign = _invoke("reconstruct", phantom_npy, "--config", config, "--out", out, "--force")
    assert foreign.exit_code == 1 and "not written by ctbird" in foreign.output  # --force never deletes a user's files
    assert (out / "old.txt").read_text() == "previous results"
    (out / "old.txt").unlink()
    out.rmdir()
    assert _invoke("reconstruct", phantom_npy, "--config", config, "--out", out, "--quiet").exit_code == 0
    replaced = _invoke("reconstruct", phantom_npy, "--config", config, "--views", 9, "--out", out, "--force", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["views"] == 9 and resolved["window"] == "lung" and resolved["method"] == "fbp"
    assert json.loads((out / "metrics.json").read_text())["views"] == 9


def test_full_reconstruct_in_a_real_subprocess(tmp_path, phantom_npy):
    out = tmp_path / "sub-out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "ctbird.cli", "reconstruct", str(phantom_npy), "--method", "fbp",
               "--views", "8", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "fbp.dcm").is_file() and (out / "comparison.png").stat().st_size > 1000
    failed = subprocess.run([sys.executable, "-m", "ctbird.cli", "reconstruct", str(tmp_path / "missing.dcm"),
                             "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert failed.returncode == 1 and failed.stderr.startswith("Error: ") and "Traceback" not in failed.stderr


@pytest.fixture(scope="module")
def tiny_rgb_prior_dir(tmp_path_factory):
    from ctbird.priors import DiffusionPrior

    config = {"sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16),
              "layers_per_block": 1, "down_block_types": ("DownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 4}
    return DiffusionPrior.from_config(config, seed=0).save_pretrained(tmp_path_factory.mktemp("rgb") / "tiny")


@pytest.mark.parametrize("task, blind, extra", [
    ("denoise", False, []), ("gaussian-deblur", True, []), ("gaussian-deblur", False, ["--kernel", "1.5"]),
    ("inpaint", False, ["--mask", "mask.png"]), ("sr", True, ["--sr-factor", "2"]),
])
def test_restore_writes_image_kernel_metrics_and_config(tmp_path, tiny_rgb_prior_dir, task, blind, extra):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "inputs"
    folder.mkdir()
    side = 16 if task == "sr" else 32
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / "photo.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "truth.png")
    Image.fromarray((rng.random((32, 32)) > 0.3).astype(np.uint8) * 255).save(folder / "mask.png")
    extra = [str(folder / e) if e.endswith(".png") else e for e in extra]
    out = tmp_path / "restored"
    result = _invoke("restore", folder / "photo.png", "--task", task, "--blind" if blind else "--no-blind",
                     "--prior", tiny_rgb_prior_dir, "--iters", 2, "--delta-t", 500, "--reference",
                     folder / "truth.png", "--out", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    restored = np.load(out / "restored.npy")
    assert restored.shape == (3, 32, 32) and 0.0 <= restored.min() and restored.max() <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and np.isfinite(metrics["psnr"]) and metrics["data_range"] == [0.0, 1.0]
    assert (out / "comparison.png").is_file() and tomllib.loads((out / "config.toml").read_text())["task"] == task
    if task == "gaussian-deblur" and blind:
        kernel = np.load(out / "kernel.npy")
        assert (out / "kernel.png").is_file() and kernel.ndim == 2 and kernel.sum() == pytest.approx(1.0, abs=1e-4)


def test_restore_option_errors(tmp_path):
    (tmp_path / "ok.png").write_bytes(_png_bytes())
    no_kernel = _invoke("restore", tmp_path / "ok.png", "--task", "motion-deblur", "--no-blind", "--prior", tmp_path,
                        "--out", tmp_path / "o")
    assert no_kernel.exit_code == 1 and "--kernel" in no_kernel.output
    missing_task = _invoke("restore", tmp_path / "x.png", "--prior", tmp_path, "--out", tmp_path / "o")
    assert missing_task.exit_code == 1 and "--task" in missing_task.output
    (tmp_path / "x.png").write_bytes(b"garbage")
    bad_image = _invoke("restore", tmp_path / "x.png", "--task", "sr", "--prior", tmp_path, "--out", tmp_path / "o")
    assert bad_image.exit_code == 1 and "x.png" in bad_image.output and not (tmp_path / "o").exists()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_python_dash_m_ctbird(tmp_path, phantom_npy):
    done = subprocess.run([sys.executable, "-m", "ctbird", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0 and "reconstruct" in done.stdout and "Usage: ctbird" in done.stdout
    out = tmp_path / "m-out"
    done = subprocess.run([sys.executable, "-m", "ctbird", "reconstruct", str(phantom_npy), "--method", "fbp",
                           "--views", "6", "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["views"] == 6


def test_config_file_method_tables(tmp_path, tiny_prior_dir, phantom_npy):
    config = tmp_path / "run.toml"
    config.write_text('method = "bird,sirt"\nviews = 6\n\n[bird]\nlr_latent = 0.02\niters = 9\nn_samples = 2\n'
                      'latent_optimizer = "adam"\n\n[sirt]\niters = 4\n')
    out = tmp_path / "out"
    result = _invoke("reconstruct", phantom_npy, "--config", config, "--prior", tiny_prior_dir, "--delta-t", 500,
                     "--iters", 2, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    # the table's settings apply; --iters (a flag) wins over the table's iters, for every method that has iters
    assert (methods["bird"]["lr_latent"], methods["bird"]["latent_optimizer"]) == (0.02, "adam")
    assert (methods["bird"]["iters"], methods["bird"]["delta_t"], methods["sirt"]["iters"]) == (2, 500, 2)
    assert methods["bird"]["n_samples"] == 2 and (out / "bird_std.npy").is_file()  # no --samples: the table's
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["bird"]["lr_latent"] == 0.02 and resolved["bird"]["keep_best"] is True
    assert resolved["sirt"] == {"iters": 2} and resolved["preset"] == "cpu-fast"
    config.write_text('method = "bird"\n[bird]\nlr_latnet = 0.02\n')
    typo = _invoke("reconstruct", phantom_npy, "--config", config, "--prior", tiny_prior_dir, "--out", tmp_path / "o")
    assert typo.exit_code == 1 and "'lr_latnet'" in typo.output and "valid keys: iters, delta_t" in typo.output
    config.write_text('[birdd]\niters = 2\n')
    table = _invoke("reconstruct", phantom_npy, "--config", config, "--out", tmp_path / "o")
    assert table.exit_code == 1 and "[birdd]" in table.output and "[bird-raw]" in table.output
    config.write_text('[bird]\niters = 0\n')
    bad = _invoke("reconstruct", phantom_npy, "--config", config, "--out", tmp_path / "o")
    assert bad.exit_code == 1 and "'iters' must be an integer >= 1" in bad.output
    assert not (tmp_path / "o").exists()
