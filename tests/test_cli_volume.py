"""``ctbird reconstruct --slices``: volume runs from the command line, sharded under torchrun, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from ctbird.cli import main
from ctbird.io.atomic import MARKER_NAME

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}


def phantom_volume(slices: int, size: int = 32) -> np.ndarray:
    """Shepp-Logan slices whose contrast varies along z: ``[S, N, N]`` HU."""
    from ctbird.phantoms import shepp_logan

    image = shepp_logan(size)[0, 0].numpy()
    return np.stack([-1000.0 + 1000.0 * image * (0.7 + 0.3 * np.cos(np.pi * z / 2))
                     for z in np.linspace(-1.0, 1.0, slices)]).astype(np.float32)


@pytest.fixture
def volume_npy(tmp_path):
    path = tmp_path / "inputs" / "volume.npy"
    path.parent.mkdir()
    np.save(path, phantom_volume(4))
    return path


@pytest.fixture
def prior_dir(tmp_path, tiny_prior):
    return tiny_prior.save_pretrained(tmp_path / "prior")


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _ctbird(*args, processes: int = 1, timeout: float = 120) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "ctbird", "reconstruct", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_two_processes_write_the_one_process_volume(tmp_path, volume_npy, prior_dir):
    """torchrun with 2 CPU processes (gloo) shards the batches; rank 0 writes and speaks; the volumes are bitwise equal."""
    common = [volume_npy, "--slices", "all", "--method", "fbp,bird", "--prior", prior_dir, "--iters", "2",
              "--delta-t", "500", "--views", "8", "--dose", "1e5", "--batch-size", "2"]
    single = _ctbird(*common, "--out", tmp_path / "one")
    assert single.returncode == 0, single.stderr[-3000:]
    pair = _ctbird(*common, "--out", tmp_path / "two", processes=2, timeout=180)
    assert pair.returncode == 0, pair.stderr[-3000:]
    assert pair.stderr.count("Wrote 4 slice(s)") == 1 and "(2 processes)" in pair.stderr
    for method in ("fbp", "bird"):
        np.testing.assert_array_equal(np.load(tmp_path / "one" / f"{method}.npy"),
                                      np.load(tmp_path / "two" / f"{method}.npy"))
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [s["rank"] for s in metrics["methods"]["bird"]["slices"]] == [0, 0, 1, 1]
    assert [s["seed"] for s in metrics["methods"]["bird"]["slices"]] == [0, 1, 2, 3]
    assert metrics["processes"] == 2 and metrics["batch_size"] == 2 and metrics["image_size"] == 16
    assert not (tmp_path / "one.work").exists() and not (tmp_path / "two.work").exists()


def test_volume_outputs_and_single_slice_options(tmp_path, volume_npy):
    out = tmp_path / "out"
    result = _invoke("reconstruct", volume_npy, "--slices", "1:4", "--method", "fbp,sirt", "--iters", "5",
                     "--views", "12", "--batch-size", "2", "--keep-work", "--z-tv", "0.03", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "fbp", "fbp.npy", "metrics.json", "sirt", "sirt.npy",
                                                    "volume.png"]
    volume = np.load(out / "sirt.npy")
    assert volume.shape == (3, 32, 32) and volume.dtype == np.float32
    series = [pydicom.dcmread(p) for p in sorted((out / "sirt").iterdir())]
    assert len(series) == 3 and len({ds.SeriesInstanceUID for ds in series}) == 1
    assert len({ds.StudyInstanceUID for ds in series}) == 1
    assert [int(ds.InstanceNumber) for ds in series] == [1, 2, 3]
    assert [float(ds.ImagePositionPatient[2]) for ds in series] == [1.0, 2.0, 3.0]
    metrics = json.loads((out / "metrics.json").read_text())
    sirt = metrics["methods"]["sirt"]
    assert metrics["slices"] == [1, 2, 3] and [s["index"] for s in sirt["slices"]] == [1, 2, 3]
    assert sirt["mean"]["psnr"] == pytest.approx(np.mean([s["metrics"]["psnr"] for s in sirt["slices"]]))
    assert {"coronal_psnr", "sagittal_psnr", "z_gradient_rmse_hu"} <= set(sirt["consistency"])
    assert sirt["z_tv"]["weight"] == 0.03 and metrics["settings"]["sirt"]["iters"] == 5
    assert (tmp_path / "out.work" / "sirt" / "z_tv").is_dir()  # --keep-work
    for args, message in [(["--slices", "all", "--slice", "1"], "--slice"), (["--resume"], "--slices"),
                          (["--z-tv", "0.1"], "--slices"), (["--slices", "9"], "out of range"),
                          (["--slices", "0,2", "--z-tv", "0.1"], "contiguous")]:
        failed = _invoke("reconstruct", volume_npy, "--method", "fbp", "--out", tmp_path / "x", *args)
        assert failed.exit_code == 1 and message in failed.output, (args, failed.output)
        assert failed.output.startswith("Error:") and not (tmp_path / "x").exists()


def test_a_killed_run_resumes_to_the_fresh_volume(tmp_path, prior_dir):
    """SIGKILL after some slices are finished: no output folder; --resume completes it to the uninterrupted volume."""
    np.save(tmp_path / "volume.npy", phantom_volume(8))
    common = [tmp_path / "volume.npy", "--slices", "all", "--method", "bird", "--prior", prior_dir, "--iters", "30",
              "--delta-t", "250", "--views", "8", "--batch-size", "1", "--quiet"]
    work = tmp_path / "killed.work" / "bird"
    process = subprocess.Popen([sys.executable, "-m", "ctbird", "reconstruct", *map(str, common),
                                "--out", str(tmp_path / "killed")], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(work.glob("slice_*.json"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    finished = len(list(work.glob("slice_*.json")))
    assert 2 <= finished < 8, f"the run was not interrupted midway ({finished} slices; {stderr[-1000:]})"
    assert not (tmp_path / "killed").exists()
    refused = _invoke("reconstruct", *common, "--out", tmp_path / "killed")
    assert refused.exit_code == 1 and "--resume" in refused.output
    resumed = _invoke("reconstruct", *common, "--resume", "--out", tmp_path / "killed")
    assert resumed.exit_code == 0, resumed.output
    fresh = _invoke("reconstruct", *common, "--out", tmp_path / "fresh")
    assert fresh.exit_code == 0, fresh.output
    np.testing.assert_array_equal(np.load(tmp_path / "killed" / "bird.npy"), np.load(tmp_path / "fresh" / "bird.npy"))
    assert not (tmp_path / "killed.work").exists()


def test_volume_runs_refuse_calibration_options(tmp_path, volume_npy):
    result = _invoke("reconstruct", volume_npy, "--slices", "all", "--method", "fbp", "--views", 8,
                     "--calibrate", "center", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code != 0 and "--calibrate" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
