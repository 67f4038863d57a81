"""Whole volumes: batches, per-slice seeds, resume, interruption, outputs, z-TV (torchrun runs: test_cli_volume.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ctbird
from ctbird.errors import ConfigError
from ctbird.io.series import read_volume
from ctbird.units import hu_to_mu, mu_to_hu
from ctbird.volume import (SliceMap, apply_z_tv, auto_batch_size, reconstruct_volume, refine_z_tv, simulated_sinograms,
                           slice_consistency, write_volume_outputs)
from operators import ParallelBeam, Radon


def phantom_volume(slices: int = 4, size: int = 32) -> np.ndarray:
    """Shepp-Logan slices whose contrast varies smoothly along z: ``[S, N, N]`` HU."""
    from ctbird.phantoms import shepp_logan

    image = shepp_logan(size)[0, 0].numpy()
    z = np.linspace(-1.0, 1.0, slices)
    return np.stack([-1000.0 + 1000.0 * image * (0.7 + 0.3 * np.cos(np.pi * zz / 2)) for zz in z]).astype(np.float32)


@pytest.fixture
def problem():
    hu = phantom_volume()
    geometry = ParallelBeam(views=12).resolved(32)
    sinograms, truth = simulated_sinograms(hu, geometry, image_size=32, pixel_spacing_mm=1.0)
    return hu, geometry, sinograms, truth


@pytest.fixture
def prior_folder(tmp_path, tiny_prior):
    return tiny_prior.save_pretrained(tmp_path / "prior")


def test_batched_classical_volume_equals_per_slice_calls(problem, tmp_path):
    hu, geometry, sinograms, truth = problem
    result = reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "w", method="sirt",
                                slices="1:4", batch_size=2, iters=20, truth=truth, progress=False, device="cpu")
    assert result.indices == [1, 2, 3] and result.slices_run == 3
    for k, i in enumerate(result.indices):
        single = ctbird.reconstruct(torch.as_tensor(sinograms[i])[None, None], geometry, image_size=32,
                                    method="sirt", iters=20).image[0, 0].numpy()
        np.testing.assert_array_equal(result.slice(k), single)
    summary = result.metrics()
    assert [r["batch"] for r in summary["slices"]] == [[1, 2], [1, 2], [3]]
    assert summary["mean"]["psnr"] == pytest.approx(np.mean([r["metrics"]["psnr"] for r in summary["slices"]]))
    assert 20 < summary["mean"]["psnr"] < 60


def test_bird_slices_are_seeded_per_slice_whatever_the_batch(tmp_path, prior_folder):
    geometry = ParallelBeam(views=8).resolved(16)
    sinograms, _ = simulated_sinograms(phantom_volume(3, 16), geometry, image_size=16, pixel_spacing_mm=1.0)
    options = {"prior": str(prior_folder), "iters": 2, "delta_t": 500}
    runs = [reconstruct_volume(sinograms, geometry, image_size=16, work_dir=tmp_path / f"b{b}", method="bird",
                               batch_size=b, seed=5, progress=False, device="cpu", **options) for b in (1, 3)]
    assert [r["seed"] for r in runs[1].records()] == [5, 6, 7]
    # one batched UNet call differs from three single ones in float reduction order only (~1e-5 on [-1, 1]); the
    # refinement's chain of UNet and CG steps carries that to about 1 HU
    np.testing.assert_allclose(runs[0].load(), runs[1].load(), rtol=0, atol=2.0)
    single = ctbird.reconstruct(torch.as_tensor(sinograms[2])[None, None], geometry, image_size=16, method="bird",
                                seed=5 + 2, **options).image[0, 0].numpy()
    np.testing.assert_array_equal(runs[0].slice(2), single)
    assert not np.array_equal(runs[0].slice(0), runs[0].slice(1))  # different seeds, different starts


def test_interrupted_run_resumes_to_the_same_volume(problem, tmp_path):
    _, geometry, sinograms, truth = problem
    work = tmp_path / "work"
    calls = []

    def interrupt(state):
        calls.append(state["index"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_volume(sinograms, geometry, image_size=32, work_dir=work, method="fbp", batch_size=1,
                           progress=interrupt, device="cpu")
    assert sorted(p.name for p in work.glob("slice_*.npy")) == ["slice_00000.npy", "slice_00001.npy"]
    with pytest.raises(ConfigError, match="resume"):
        reconstruct_volume(sinograms, geometry, image_size=32, work_dir=work, method="fbp", progress=False, device="cpu")
    with pytest.raises(ConfigError, match="method"):
        reconstruct_volume(sinograms, geometry, image_size=32, work_dir=work, method="sirt", resume=True,
                           progress=False, device="cpu")
    resumed = reconstruct_volume(sinograms, geometry, image_size=32, work_dir=work, method="fbp", resume=True,
                                 progress=False, device="cpu")
    assert (resumed.slices_skipped, resumed.slices_run) == (2, 2)
    fresh = reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "fresh", method="fbp",
                               batch_size=1, progress=False, device="cpu")
    np.testing.assert_array_equal(resumed.load(), fresh.load())


def test_resume_refuses_a_changed_input(problem, tmp_path):
    hu, geometry, sinograms, _ = problem
    reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "w", method="fbp", batch_size=1,
                       progress=False, device="cpu")
    changed = SliceMap(sinograms, lambda y: y * 1.01)
    with pytest.raises(ConfigError, match="another input"):
        reconstruct_volume(changed, geometry, image_size=32, work_dir=tmp_path / "w", method="fbp", resume=True,
                           progress=False, device="cpu")


def test_outputs_are_written_whole_or_not_at_all(problem, tmp_path, monkeypatch):
    hu, geometry, sinograms, truth = problem
    np.save(tmp_path / "hu.npy", hu)
    volume = read_volume(tmp_path / "hu.npy")
    result = reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "w", method="fbp",
                                progress=False, device="cpu")
    import ctbird.figures_volume

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctbird.figures_volume, "volume_figure", broken)
    with pytest.raises(KeyboardInterrupt):
        write_volume_outputs(tmp_path / "out", {"fbp": result}, volume, truth=truth)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    monkeypatch.undo()
    out = write_volume_outputs(tmp_path / "out", {"fbp": result}, volume, truth=truth)
    assert sorted(p.name for p in out.iterdir()) == [".ctbird-output", "fbp", "fbp.npy", "metrics.json", "volume.png"]
    np.testing.assert_array_equal(np.load(out / "fbp.npy"), result.load())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["methods"]["fbp"]["slices"]) == 4 and "coronal_psnr" in metrics["methods"]["fbp"]["consistency"]
    assert len(list((out / "fbp").iterdir())) == 4
    assert (out / "volume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulated_sinograms_are_the_simulation_of_each_slice_with_its_own_noise_seed(problem):
    from ctbird.simulate import simulate

    hu, geometry, _, _ = problem
    noisy, truth = simulated_sinograms(hu, geometry, image_size=32, pixel_spacing_mm=1.0, dose=1e4, seed=3)
    for i in (0, 2):
        expected = simulate(hu[i], image_size=32, geometry=geometry, dose=1e4, seed=3 + i)
        torch.testing.assert_close(noisy[i], expected.sinogram[0, 0], rtol=0, atol=0)
        np.testing.assert_array_equal(truth[i], expected.truth_hu)


def test_auto_batch_size_scales_with_memory(monkeypatch):
    import ctbird.volume as volume

    monkeypatch.setattr(volume, "available_memory_bytes", lambda device: 4 << 30)
    classical = auto_batch_size(256, 30, 363, method="fbp", device=torch.device("cpu"))
    prior = auto_batch_size(256, 30, 363, method="bird", device=torch.device("cpu"))
    assert classical == volume.MAX_AUTO_BATCH and 1 <= prior < classical
    monkeypatch.setattr(volume, "available_memory_bytes", lambda device: 1 << 20)
    assert auto_batch_size(256, 30, 363, method="bird", device=torch.device("cpu")) == 1


def test_z_tv_lowers_the_z_gradient_error(tmp_path):
    """Noisy sparse views reconstructed slice by slice: z-TV removes slice-to-slice jitter the truth does not have."""
    hu = phantom_volume(8, 32)
    geometry = ParallelBeam(views=16).resolved(32)
    clean, truth = simulated_sinograms(hu, geometry, image_size=32, pixel_spacing_mm=1.0)
    rng = np.random.default_rng(0)
    noisy = [np.asarray(clean[i]) + rng.normal(0.0, 0.05 * float(np.asarray(clean[i]).std()), clean[i].shape)
             for i in range(len(clean))]
    result = reconstruct_volume(np.stack(noisy).astype(np.float32), geometry, image_size=32, work_dir=tmp_path / "w",
                                method="sirt", iters=50, progress=False, device="cpu")
    reference = np.stack([truth[i] for i in range(8)])
    per_slice = slice_consistency(result.load(refined=False), reference)
    radon = Radon(geometry, 32)
    mu = hu_to_mu(torch.from_numpy(result.load(refined=False)))[:, None]
    y = torch.from_numpy(np.stack(noisy).astype(np.float32))[:, None]
    data_only = slice_consistency(mu_to_hu(refine_z_tv(mu, y, radon, weight=0.0, iters=50))[:, 0].numpy(), reference)
    apply_z_tv(result, np.stack(noisy).astype(np.float32), geometry, iters=50, chunk=3, halo=2)
    z_tv = slice_consistency(result.load(), reference)
    for without in (per_slice, data_only):
        assert z_tv["z_gradient_rmse_hu"] < 0.8 * without["z_gradient_rmse_hu"]
        assert z_tv["coronal_psnr"] > without["coronal_psnr"] + 0.5
        assert z_tv["sagittal_psnr"] > without["sagittal_psnr"] + 0.5


def test_slice_consistency_streams_the_plane_psnrs_of_ctbird_metrics():
    from ctbird.metrics import psnr
    from ctbird.units import EVAL_HU_RANGE

    rng = np.random.default_rng(1)
    truth = rng.uniform(-1100.0, 1100.0, (5, 6, 7))
    volume = truth + rng.normal(0.0, 50.0, truth.shape)
    measured = slice_consistency(list(volume), list(truth))  # sequences of slices: never stacked
    planes = {"axial_psnr": (0, 1, 2), "coronal_psnr": (1, 0, 2), "sagittal_psnr": (2, 0, 1)}
    for name, axes in planes.items():
        expected = psnr(volume.transpose(axes)[:, None], truth.transpose(axes)[:, None], data_range=EVAL_HU_RANGE)
        assert measured[name] == pytest.approx(expected, rel=1e-12)
    air_volume, air_truth = volume.copy(), truth.copy()
    air_volume[:, 0, :] = air_truth[:, 0, :] = -1000.0  # an exact (air) coronal plane is left out of the coronal mean
    expected = psnr(volume[:, 1:].transpose(1, 0, 2)[:, None], truth[:, 1:].transpose(1, 0, 2)[:, None],
                    data_range=EVAL_HU_RANGE)
    assert slice_consistency(air_volume, air_truth)["coronal_psnr"] == pytest.approx(expected, rel=1e-12)
    assert slice_consistency(truth, truth)["sagittal_psnr"] == float("inf")
    clipped = [np.clip(v, *EVAL_HU_RANGE) for v in (volume, truth)]
    gradient_error = np.diff(clipped[0], axis=0) - np.diff(clipped[1], axis=0)
    assert measured["z_gradient_rmse_hu"] == pytest.approx(np.sqrt(np.mean(gradient_error ** 2)), rel=1e-12)


def test_a_dicom_series_goes_in_and_a_derived_series_comes_out(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from ctbird.io import to_working_size, working_pixel_spacing

    source = tmp_path / "series"
    source.mkdir()
    uid = pydicom.uid.generate_uid()
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, z in enumerate([5.0, 7.5, 10.0]):
        ds = base.copy()
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [-40.0, -40.0, z]
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.save_as(source / f"z{9 - k}.dcm")  # names against positions
    volume = read_volume(source)
    pixel_mm = working_pixel_spacing(volume.pixel_spacing_mm, volume.hu.shape[1:], 32)
    geometry = ParallelBeam(views=16).resolved(32)
    sinograms, truth = simulated_sinograms(volume.hu, geometry, image_size=32, pixel_spacing_mm=volume.pixel_spacing_mm)
    np.testing.assert_allclose(truth[1], to_working_size(np.clip(volume.hu[1], -1024, 3071), 32))
    result = reconstruct_volume(sinograms, geometry, image_size=32, pixel_spacing_mm=pixel_mm, work_dir=tmp_path / "w",
                                method="fbp", truth=truth, progress=False, device="cpu")
    out = write_volume_outputs(tmp_path / "out", {"fbp": result}, volume, truth=truth)
    assert np.load(out / "fbp.npy").shape == (3, 128, 128)
    written = [pydicom.dcmread(p) for p in sorted((out / "fbp").iterdir())]
    assert len({ds.SeriesInstanceUID for ds in written}) == 1 and written[0].SeriesInstanceUID != uid
    assert {ds.StudyInstanceUID for ds in written} == {base.StudyInstanceUID}
    assert [float(ds.ImagePositionPatient[2]) for ds in written] == [5.0, 7.5, 10.0]
    assert [int(ds.InstanceNumber) for ds in written] == [1, 2, 3]
    assert all([float(v) for v in ds.PixelSpacing] == list(volume.pixel_spacing_mm) for ds in written)
    assert read_volume(out / "fbp").hu.shape == (3, 128, 128)


def test_z_tv_option_refines_after_all_slices_and_needs_neighbours(problem, tmp_path):
    _, geometry, sinograms, _ = problem
    result = reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "w", method="fbp", z_tv=0.03,
                                z_tv_iters=5, progress=False, device="cpu")
    assert result.z_tv == {"weight": 0.03, "anchor": 0.002, "iters": 5}
    assert len(list((tmp_path / "w" / "z_tv").glob("slice_*.npy"))) == 4
    assert not np.array_equal(result.load(), result.load(refined=False))
    with pytest.raises(ConfigError, match="contiguous"):
        reconstruct_volume(sinograms, geometry, image_size=32, work_dir=tmp_path / "gap", method="fbp", slices="0,2",
                           z_tv=0.03, progress=False, device="cpu")


def test_a_partly_finished_batch_is_redone_whole_on_resume(tmp_path, prior_folder):
    """Slices of one batch are saved one by one; an interruption between them is resumed by redoing the batch, so the
    volume is bitwise the uninterrupted one (a smaller batch would change the float reduction order)."""
    geometry = ParallelBeam(views=8).resolved(16)
    sinograms, _ = simulated_sinograms(phantom_volume(5, 16), geometry, image_size=16, pixel_spacing_mm=1.0)
    options = {"prior": str(prior_folder), "iters": 2, "delta_t": 500, "batch_size": 3, "progress": False,
               "device": "cpu", "method": "bird"}

    def stop_inside_the_second_batch(state):
        if state["done"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_volume(sinograms, geometry, image_size=16, work_dir=tmp_path / "w",
                           **{**options, "progress": stop_inside_the_second_batch})
    assert len(list((tmp_path / "w").glob("slice_*.json"))) == 4
    resumed = reconstruct_volume(sinograms, geometry, image_size=16, work_dir=tmp_path / "w", resume=True, **options)
    assert (resumed.slices_skipped, resumed.slices_run) == (3, 2)
    fresh = reconstruct_volume(sinograms, geometry, image_size=16, work_dir=tmp_path / "fresh", **options)
    np.testing.assert_array_equal(resumed.load(), fresh.load())
