"""Calibration of an uncertainty map (:func:`ctbird.metrics.uncertainty_calibration`) and its record in the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ctbird.errors import InputError
from ctbird.metrics import uncertainty_calibration
from ctbird.units import EVAL_HU_RANGE


def _errors_with_std(seed: int = 0, shape=(128, 128)):
    rng = np.random.default_rng(seed)
    std = rng.uniform(5.0, 150.0, shape)
    truth = rng.uniform(-600.0, 600.0, shape)
    return truth + rng.standard_normal(shape) * std, std, truth, rng


def test_gaussian_errors_of_the_given_std_are_calibrated():
    mean, std, truth, _ = _errors_with_std()
    scores = uncertainty_calibration(mean, std, truth, data_range=EVAL_HU_RANGE)
    assert scores["within_2std"] == pytest.approx(0.9545, abs=0.005)  # P(|z| <= 2) for a standard normal
    assert scores["spearman"] > 0.4
    overconfident = uncertainty_calibration(mean, std / 4, truth, data_range=EVAL_HU_RANGE)
    assert overconfident["within_2std"] == pytest.approx(0.383, abs=0.01)  # P(|z| <= 0.5)
    assert overconfident["spearman"] == pytest.approx(scores["spearman"])  # a rank correlation ignores the scale


def test_a_std_unrelated_to_the_error_has_no_rank_correlation():
    mean, std, truth, rng = _errors_with_std(1)
    shuffled = rng.permutation(std.ravel()).reshape(std.shape)
    scores = uncertainty_calibration(mean, shuffled, truth, data_range=EVAL_HU_RANGE)
    assert abs(scores["spearman"]) < 0.03


def test_the_data_range_clips_the_images_and_tensors_batches_work():
    truth = torch.tensor([[[[1500.0, 0.0], [-1200.0, 100.0]]]])
    mean = torch.tensor([[[[1100.0, 30.0], [-1000.0, 100.0]]]])  # both clip to the range where the truth is outside
    std = torch.tensor([[[[1.0, 10.0], [1.0, 0.0]]]])
    scores = uncertainty_calibration(mean, std, truth, data_range=(-1000.0, 1000.0))
    assert scores["within_2std"] == 0.75  # only the 30 HU error exceeds 2 std
    unclipped = uncertainty_calibration(mean, std, truth, data_range=3000.0)
    assert unclipped["within_2std"] == 0.25


def test_degenerate_and_invalid_inputs():
    mean, std, truth, _ = _errors_with_std(shape=(16, 16))
    assert uncertainty_calibration(mean, np.full_like(std, 3.0), truth, data_range=EVAL_HU_RANGE)["spearman"] is None
    with pytest.raises(InputError, match=">= 0"):
        uncertainty_calibration(mean, -std, truth, data_range=EVAL_HU_RANGE)
    with pytest.raises(InputError, match="same shape"):
        uncertainty_calibration(mean, std[:8], truth, data_range=EVAL_HU_RANGE)


def test_cli_records_the_calibration_of_bird_restarts(tmp_path, tiny_unet_config_factory, bird_scheduler_config):
    from ctbird.cli import main
    from ctbird.priors import DiffusionPrior

    folder = DiffusionPrior.from_config(tiny_unet_config_factory(size=32), bird_scheduler_config,
                                        seed=0).save_pretrained(tmp_path / "prior")
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    np.save(tmp_path / "phantom.npy", np.where(xx ** 2 + yy ** 2 < 0.7, 0.0, -1000.0).astype(np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "phantom.npy"), "--prior", str(folder), "--method",
                                       "bird,fbp", "--iters", "2", "--delta-t", "500", "--samples", "2", "--views", "8",
                                       "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    recorded = methods["bird"]["uncertainty"]
    expected = uncertainty_calibration(np.load(out / "bird.npy"), np.load(out / "bird_std.npy"),
                                       np.load(tmp_path / "phantom.npy"), data_range=EVAL_HU_RANGE)
    assert recorded["within_2std"] == pytest.approx(expected["within_2std"])
    assert 0.0 <= recorded["within_2std"] <= 1.0 and -1.0 <= recorded["spearman"] <= 1.0
    assert "uncertainty" not in methods["fbp"]


def test_ct_benchmark_tables_dds_and_the_calibration_of_bird_restarts(tmp_path, tiny_unet_config_factory,
                                                                      bird_scheduler_config):
    from benchmarks.ct import main
    from ctbird.config import DDSConfig
    from ctbird.priors import DiffusionPrior

    folder = DiffusionPrior.from_config(tiny_unet_config_factory(size=32), bird_scheduler_config,
                                        seed=0).save_pretrained(tmp_path / "prior")
    assert main(["--synthetic", "--size", "32", "--max-slices", "1", "--views", "18", "--geometry", "parallel",
                 "--noise", "none", "--methods", "fbp,dds,bird-raw,bird", "--iters", "2", "--delta-t", "500",
                 "--samples", "2", "--prior", str(folder), "--device", "cpu", "--tag", "u", "--out-dir",
                 str(tmp_path / "out"), "--no-figures"]) == 0
    payload = json.loads((tmp_path / "out" / "u.json").read_text())
    rows = {r["method"]: r for r in payload["results"]}
    assert rows["dds"]["nfe_mean"] == DDSConfig().iters and payload["settings"]["dds"] == DDSConfig().to_dict()
    for method in ("bird-raw", "bird"):  # both carry the restarts' std map (bird's: of the refined restarts)
        assert 0.0 <= rows[method]["within_2std_mean"] <= 1.0
        assert rows[method]["per_slice"][0]["within_2std"] == rows[method]["within_2std_mean"]
    assert "within_2std_mean" not in rows["fbp"] and "within_2std_mean" not in rows["dds"]
    page = (tmp_path / "out" / "u.md").read_text()
    assert "| error ≤ 2 std |" in page and "| dds |" in page
