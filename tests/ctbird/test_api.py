"""ctbird.reconstruct / ctbird.restore contracts on tiny priors and phantoms."""

from __future__ import annotations

import pytest
import torch

import ctbird
from ctbird.config import BirdConfig, DPSConfig
from ctbird.errors import ConfigError, InputError, PriorError
from ctbird.units import hu_to_mu
from operators import ParallelBeam
from operators.radon import Radon

SPACING_MM = 0.5


def _water_disk_hu(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2, indexing="ij")
    return torch.where(xx ** 2 + yy ** 2 <= (0.35 * n) ** 2, 0.0, -1000.0)[None, None]


def _sinogram(hu: torch.Tensor, geometry) -> torch.Tensor:
    """Line integrals of mu (1/mm) with lengths in mm: Radon (pixel units) of mu times the pixel spacing."""
    radon = Radon(geometry, hu.shape[-1], backend="matrix")
    with torch.no_grad():
        return radon(hu_to_mu(hu) * SPACING_MM)


@pytest.fixture
def prior_folder(tiny_prior, tmp_path):
    return tiny_prior.save_pretrained(tmp_path / "ct-prior")


@pytest.fixture
def rgb_prior_folder(tiny_rgb_prior, tmp_path):
    return tiny_rgb_prior.save_pretrained(tmp_path / "rgb-prior")


def test_fbp_and_sirt_return_hu_in_the_documented_units():
    n = 32
    geometry = ParallelBeam(views=60)
    hu = _water_disk_hu(n)
    sino = _sinogram(hu, geometry)
    centre = (slice(None), slice(None), slice(n // 2 - 3, n // 2 + 3), slice(n // 2 - 3, n // 2 + 3))
    for method in ("fbp", "sirt"):
        result = ctbird.reconstruct(sino, geometry, image_size=n, pixel_spacing_mm=SPACING_MM, method=method)
        assert result.image.shape == (1, 1, n, n) and result.image.dtype == torch.float32
        assert result.nfe == 0 and result.method == method
        assert abs(float(result.image[centre].mean())) < 60.0  # water is 0 HU
        assert float(result.image[..., :2, :2].mean()) < -800.0  # air corners
        # a wrong pixel spacing scales mu, which shows as a large HU error: the units matter
        wrong = ctbird.reconstruct(sino, geometry, image_size=n, pixel_spacing_mm=2 * SPACING_MM, method=method)
        assert float(wrong.image[centre].mean()) < -400.0


@pytest.mark.parametrize("method", ["bird", "bird-raw", "dps"])
def test_prior_methods_on_a_tiny_case(prior_folder, method):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    seen = []
    samples = {"n_samples": 2} if method == "bird" else {}
    result = ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                                method=method, iters=3, callback=seen.append, **samples)
    assert result.image.shape == (1, 1, 16, 16) and torch.isfinite(result.image).all()
    refine_steps = BirdConfig().refine_from_t // BirdConfig().refine_delta_t + 1 if method == "bird" else 0
    assert result.nfe > 0 and len(seen) == 3 + refine_steps and result.method == method
    from ctbird.methods import get_method

    assert get_method(method).progress_steps(result.config) == len(seen)  # the CLI's bar total
    if method == "bird":
        assert result.grad_mode == "detached" and result.delta_t == BirdConfig().delta_t
        assert result.uncertainty.shape == (1, 1, 16, 16)
        assert result.loss_history[-1] < result.loss_history[0]
        lo, hi = ctbird.units.PRIOR_HU_WINDOW
        assert result.image.min() >= lo - 1e-3 and result.image.max() <= hi + 1e-3


def test_bird_refinement_fits_the_data_better_than_bird_raw(prior_folder):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    radon = Radon(geometry, 16)
    runs = {m: ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                                  method=m, iters=2) for m in ("bird", "bird-raw")}
    residual = {m: float((radon(r.mu) - sino).norm()) for m, r in runs.items()}
    assert residual["bird"] < 0.5 * residual["bird-raw"]
    steps = BirdConfig().refine_from_t // BirdConfig().refine_delta_t + 1
    assert runs["bird"].nfe == runs["bird-raw"].nfe + steps and runs["bird"].info["refine_nfe"] == steps
    # bird-raw is the BIRD stage of bird: the same optimized x_T decodes to its image
    assert torch.equal(runs["bird"].solver_result.image, runs["bird-raw"].solver_result.image)
    # refine_from_t=0 turns the refinement off: bird is then bird-raw
    off = ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                             iters=2, refine_from_t=0)
    assert torch.equal(off.image, runs["bird-raw"].image) and off.nfe == runs["bird-raw"].nfe


def test_bird_data_filter_weighs_the_data_term(prior_folder):
    from operators import SinogramFilter

    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    choices = {"default": {}, None: {"data_filter": None}, 1.0: {"data_filter": 1.0}}
    runs = {f: ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                                  method="bird-raw", iters=3, **kwargs) for f, kwargs in choices.items()}
    assert runs["default"].info["data_filter"] == BirdConfig().data_filter == 0.5
    assert runs[None].info["data_filter"] is None and runs[1.0].info["data_filter"] == 1.0
    assert not torch.equal(runs["default"].image, runs[None].image)
    # the recorded loss is the filtered data term of BIRD's image
    radon = Radon(geometry, 16)
    weighting = SinogramFilter(radon.out_shape, exponent=0.5)
    filtered = float((weighting(radon(runs["default"].mu) - sino)).pow(2).mean())
    assert runs["default"].info["final_loss"][0] == pytest.approx(filtered, rel=1e-3)


def test_bird_latent_rate_schedule_defaults_to_the_ct_setting_and_can_be_overridden(prior_folder):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    runs = {s: ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                                  iters=4, latent_lr_schedule=s) for s in (None, "constant")}
    assert runs[None].info["latent_lr_schedule"] == BirdConfig().latent_lr_schedule == "cosine"
    assert runs["constant"].info["latent_lr_schedule"] == "constant"
    # same start, same first step; the decayed rate changes the later iterates
    assert runs[None].loss_history[:2] == runs["constant"].loss_history[:2]
    assert not torch.equal(runs[None].image, runs["constant"].image)


def test_prior_size_differs_from_image_size(prior_folder):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(24), geometry)
    result = ctbird.reconstruct(sino, geometry, image_size=24, pixel_spacing_mm=SPACING_MM, prior=prior_folder, iters=2)
    assert result.image.shape == (1, 1, 24, 24)


def test_reconstruct_validation(prior_folder, tmp_path, monkeypatch):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    with pytest.raises(ConfigError, match="method"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="art")
    with pytest.raises(InputError, match="views"):
        ctbird.reconstruct(sino[..., :5, :], geometry, image_size=16, method="fbp")
    # settings are checked against the method's own: a typo or another method's setting names the valid keys
    with pytest.raises(ConfigError, match="itres.*valid keys: iters, delta_t"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="bird", itres=3)
    with pytest.raises(ConfigError, match="'n_samples'.*iters, zeta, eta"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="dps", n_samples=2)
    with pytest.raises(ConfigError, match="takes a DPSConfig, got BirdConfig"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="dps", config=BirdConfig())
    with pytest.raises(ConfigError, match="refine_from_t"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="bird", refine_from_t=1000)
    with pytest.raises(ConfigError, match="delta_t"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="bird", delta_t=0)
    monkeypatch.setenv("CTBIRD_DEFAULT_PRIOR", str(tmp_path / "missing"))
    with pytest.raises(PriorError, match="prior"):
        ctbird.reconstruct(sino, geometry, image_size=16, method="bird")


def test_restore_contract_blind_gaussian_deblur(rgb_prior_folder):
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = ctbird.restore(image, task="gaussian-deblur", blind=True, prior=rgb_prior_folder, iters=3)
    assert result.image.shape == image.shape
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.kernel.shape == (2, 3, 3) and torch.allclose(result.kernel.sum(dim=(1, 2)), torch.ones(2))
    refine = ctbird.RefineConfig.for_task("gaussian-deblur")
    # + the warm start's DDIM inversion + the refinement's chain (both items in one batch)
    assert result.blind and result.iters_run == 3 and result.nfe == 40 + 10 + refine.t0 // refine.step + 1


def test_restore_other_tasks(rgb_prior_folder):
    gen = torch.Generator().manual_seed(1)
    low = torch.rand(1, 3, 4, 4, generator=gen)
    sr = ctbird.restore(low, task="sr", sr_factor=4, prior=rgb_prior_folder, iters=2)
    assert sr.image.shape == (1, 3, 16, 16)
    image = torch.rand(1, 3, 16, 16, generator=gen)
    mask = torch.rand(16, 16, generator=gen) > 0.3
    assert ctbird.restore(image, task="inpaint", mask=mask, prior=rgb_prior_folder, iters=2).kernel is None
    assert ctbird.restore(image, task="denoise", prior=rgb_prior_folder, iters=2).image.shape == image.shape
    motion = ctbird.restore(image, task="motion-deblur", prior=rgb_prior_folder, iters=2, kernel_size=5)
    assert motion.kernel.shape == (1, 5, 5)
    fixed = ctbird.restore(image, task="gaussian-deblur", blind=False, kernel=1.0, prior=rgb_prior_folder, iters=2)
    assert not fixed.blind


def test_restore_validation(rgb_prior_folder):
    image = torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ctbird.restore(image * 255, prior=rgb_prior_folder, iters=1)
    with pytest.raises(InputError, match="channels"):
        ctbird.restore(image[:, :1], prior=rgb_prior_folder, iters=1)
    with pytest.raises(ConfigError, match="mask"):
        ctbird.restore(image, task="inpaint", prior=rgb_prior_folder, iters=1)
    with pytest.raises(ConfigError, match="task"):
        ctbird.restore(image, task="colorize", prior=rgb_prior_folder)
    with pytest.raises(ConfigError, match="kernel"):
        ctbird.restore(image, task="motion-deblur", blind=False, prior=rgb_prior_folder, iters=1)


def test_ct_and_photos_keep_the_best_fitting_iterate_by_default(prior_folder):
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    runs = {k: ctbird.reconstruct(sino, geometry, image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder,
                                  iters=4, lr_latent=0.2, keep_best=k) for k in (None, False)}
    assert runs[None].info["keep_best"] is BirdConfig().keep_best is True
    assert runs[False].info["keep_best"] is False
    assert runs[None].loss_history == runs[False].loss_history  # same trajectory
    assert runs[None].info["final_loss"][0] <= runs[False].info["final_loss"][0]
    assert all(BirdConfig.for_task(task).keep_best is True for task in ctbird.api.RESTORE_TASKS)


def test_config_objects_and_keyword_overrides_agree(prior_folder):
    """A config object and the same settings as keywords give the same run; the run records its settings."""
    geometry = ParallelBeam(views=8)
    sino = _sinogram(_water_disk_hu(16), geometry)
    common = dict(image_size=16, pixel_spacing_mm=SPACING_MM, prior=prior_folder)
    by_config = ctbird.reconstruct(sino, geometry, config=BirdConfig(iters=3, delta_t=250, keep_best=False,
                                                                     refine_from_t=40, refine_delta_t=10), **common)
    by_keywords = ctbird.reconstruct(sino, geometry, iters=3, delta_t=250, keep_best=False, refine_from_t=40, refine_delta_t=10, **common)
    assert torch.equal(by_config.image, by_keywords.image)
    assert by_config.delta_t == 250 and by_config.nfe == 3 * 4 + 4 + 5  # delta_t and the refinement from the settings
    assert by_config.config == BirdConfig(iters=3, delta_t=250, keep_best=False, refine_from_t=40, refine_delta_t=10)
    # keywords override the object; None keeps the object's value
    mixed = ctbird.reconstruct(sino, geometry, config=BirdConfig(iters=3, delta_t=250), delta_t=500, iters=None, **common)
    assert (mixed.config.iters, mixed.delta_t) == (3, 500)
    dps = ctbird.reconstruct(sino, geometry, method="dps", config=DPSConfig(iters=5), **common)
    assert dps.nfe == 5 and dps.delta_t == 200


def test_restore_reads_the_task_settings_and_rejects_ct_ones(rgb_prior_folder):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = ctbird.restore(image, task="denoise", prior=rgb_prior_folder, iters=2)
    assert result.config == BirdConfig.for_task("denoise").replace(iters=2)
    assert result.config.latent_optimizer == "normalized-gd" and result.config.lr_operator == 0.0
    with pytest.raises(ConfigError, match="data_filter"):
        ctbird.restore(image, task="denoise", prior=rgb_prior_folder, config=BirdConfig(iters=1))
    with pytest.raises(ConfigError, match="lr_latnet"):
        ctbird.restore(image, task="denoise", prior=rgb_prior_folder, lr_latnet=1.0)
