"""The DDS baseline (``method="dds"``): data-consistent DDIM sampling on the tiny prior, its CG, settings and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ctbird
from ctbird.config import DDSConfig
from ctbird.errors import ConfigError
from ctbird.solvers.refine import conjugate_gradient, refine_data_consistency
from ctbird.units import hu_to_mu
from operators import ParallelBeam
from operators.radon import Radon


def _disk_problem(n: int, views: int = 12):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    hu = torch.full((1, 1, n, n), -1000.0)
    hu[0, 0][xx ** 2 + yy ** 2 < 0.6] = 0.0
    hu[0, 0][(xx - 0.25) ** 2 + yy ** 2 < 0.05] = 700.0
    geometry = ParallelBeam(views=views)
    sinogram = Radon(geometry, n, backend="matrix")(hu_to_mu(hu) * 1.5)
    return sinogram, geometry, hu


def _misfit(result, sinogram, geometry, n):
    radon = Radon(geometry, n, backend="matrix")
    return float((radon(result.mu) - sinogram).square().mean())


@pytest.mark.parametrize("image_size", [16, 32])  # the prior's size, and a grid twice as fine
def test_dds_fits_the_data_far_better_than_the_unconditional_sample(tiny_prior, image_size):
    sinogram, geometry, hu = _disk_problem(image_size)
    common = dict(image_size=image_size, pixel_spacing_mm=1.5, prior=tiny_prior, method="dds", seed=3)
    free = ctbird.reconstruct(sinogram, geometry, config=DDSConfig(iters=10, cg_iters=0), **common)
    dds = ctbird.reconstruct(sinogram, geometry, config=DDSConfig(iters=10, cg_iters=5), **common)
    assert _misfit(dds, sinogram, geometry, image_size) < 0.05 * _misfit(free, sinogram, geometry, image_size)
    assert float((dds.image - hu).abs().mean()) < 0.5 * float((free.image - hu).abs().mean())
    assert dds.method == "dds" and dds.image.shape == (1, 1, image_size, image_size) and dds.image.dtype == torch.float32
    assert dds.nfe == 10 and dds.delta_t == 100 and dds.seconds > 0 and len(dds.loss_history) == 10
    assert dds.info["final_loss"][0] == pytest.approx(_misfit(dds, sinogram, geometry, image_size), rel=1e-3)


def test_dds_is_deterministic_per_seed_and_counts_one_unet_call_per_step(tiny_prior):
    sinogram, geometry, _ = _disk_problem(16)
    common = dict(image_size=16, pixel_spacing_mm=1.5, prior=tiny_prior, method="dds", iters=8, cg_iters=3)
    first = ctbird.reconstruct(sinogram, geometry, seed=1, **common)
    again = ctbird.reconstruct(sinogram, geometry, seed=1, **common)
    other = ctbird.reconstruct(sinogram, geometry, seed=2, **common)
    assert torch.equal(first.image, again.image)
    assert not torch.equal(first.image, other.image)
    assert first.nfe == 8 and first.config == DDSConfig(iters=8, cg_iters=3)
    deterministic = ctbird.reconstruct(sinogram, geometry, seed=1, eta=0.0, **common)
    assert not torch.equal(first.image, deterministic.image)  # eta reaches the renoising


def test_dds_anchor_weight_keeps_the_estimate_closer_to_the_prior(tiny_prior):
    sinogram, geometry, _ = _disk_problem(16)
    common = dict(image_size=16, pixel_spacing_mm=1.5, prior=tiny_prior, method="dds", iters=5, cg_iters=5, seed=0)
    free = ctbird.reconstruct(sinogram, geometry, gamma=0.0, **common)
    anchored = ctbird.reconstruct(sinogram, geometry, gamma=100.0, **common)
    assert _misfit(anchored, sinogram, geometry, 16) > 2 * _misfit(free, sinogram, geometry, 16)


@pytest.mark.parametrize("settings, needle", [({"eta": 1.5}, "'eta' must be in [0, 1]"),
                                              ({"cg_iters": -1}, "'cg_iters' must be an integer >= 0"),
                                              ({"gamma": -1.0}, "'gamma' must be a finite number >= 0"),
                                              ({"iters": 0}, "'iters' must be an integer >= 1")])
def test_dds_settings_are_validated(settings, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        DDSConfig(**settings)


def test_conjugate_gradient_solves_a_small_spd_system_in_as_many_steps_as_unknowns():
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    matrix = basis @ basis.T + 0.1 * torch.eye(6, dtype=torch.float64)
    truth = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    rhs = truth @ matrix
    start = torch.zeros_like(truth)
    solved = conjugate_gradient(lambda v: v @ matrix, start, rhs - start @ matrix, 6)
    torch.testing.assert_close(solved, truth, rtol=1e-6, atol=1e-6)
    two = conjugate_gradient(lambda v: v @ matrix, start, rhs, 2)
    assert (two - truth).norm() < truth.norm()  # partial solves move toward the solution


def test_refine_data_consistency_is_the_anchored_cg():
    sinogram, geometry, hu = _disk_problem(16)
    radon = Radon(geometry, 16, backend="matrix")
    anchor = hu_to_mu(torch.zeros_like(hu)) * 1.5
    refined = refine_data_consistency(sinogram, radon, anchor, weight=0.01, iters=20)
    before = (radon(anchor) - sinogram).square().sum()
    assert (radon(refined) - sinogram).square().sum() < 0.1 * before


def test_cli_reconstructs_with_dds(tmp_path, tiny_unet_config_factory, bird_scheduler_config):
    from ctbird.cli import main
    from ctbird.priors import DiffusionPrior

    prior = DiffusionPrior.from_config(tiny_unet_config_factory(size=32), bird_scheduler_config, seed=0)
    folder = prior.save_pretrained(tmp_path / "prior")
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    hu = np.where(xx ** 2 + yy ** 2 < 0.7, 0.0, -1000.0).astype(np.float32)
    np.save(tmp_path / "phantom.npy", hu)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "phantom.npy"), "--prior", str(folder),
                                       "--method", "dds,fbp", "--iters", "4", "--views", "8", "--out", str(out),
                                       "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {"dds.npy", "dds.png", "dds.dcm", "fbp.npy"} <= {p.name for p in out.iterdir()}
    entry = json.loads((out / "metrics.json").read_text())["methods"]["dds"]
    assert (entry["nfe"], entry["iters"], entry["cg_iters"], entry["delta_t"]) == (4, 4, DDSConfig().cg_iters, 250)
    assert np.isfinite(entry["psnr"]) and np.load(out / "dds.npy").shape == (32, 32)


def test_tune_dds_scores_every_setting_against_fbp_and_sirt(tmp_path, tiny_unet_config_factory, bird_scheduler_config):
    from benchmarks.studies.tune_dds import main
    from ctbird.priors import DiffusionPrior

    folder = DiffusionPrior.from_config(tiny_unet_config_factory(size=32), bird_scheduler_config,
                                        seed=0).save_pretrained(tmp_path / "prior")
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    disks = [np.where(xx ** 2 + yy ** 2 < r, 0.0, -1000.0) for r in (0.5, 0.8)]
    stack = tmp_path / "stack.npz"
    np.savez(stack, images=np.stack(disks).astype(np.int16), pixel_spacing_mm=np.full(2, 1.5, np.float32))
    assert main(["--slice", f"{stack}:0", "--slice", f"{stack}:1", "--steps", "3", "--cg-iters", "0,4", "--views", "8",
                 "--size", "32", "--prior", str(folder), "--device", "cpu", "--tag", "t", "--out-dir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "dds_t.json").read_text())
    rows = {(r["method"], r["cg_iters"]): r for r in payload["results"]}
    assert list(rows) == [("fbp", None), ("sirt", None), ("dds", 0), ("dds", 4)]
    assert all(s["nfe"] == 3 for s in rows[("dds", 4)]["per_slice"]) and rows[("fbp", None)]["nfe_mean"] == 0
    assert rows[("dds", 4)]["psnr_mean"] > rows[("dds", 0)]["psnr_mean"] + 3  # the CG data steps reach the result
    assert "| dds | 3 | 4 | 1 | 0 |" in (tmp_path / "dds_t.md").read_text()
