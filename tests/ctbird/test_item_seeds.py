"""One seed per batch item: a batched solve gives each item what it gets alone (BIRD, DPS, ctbird.reconstruct)."""

from __future__ import annotations

import pytest
import torch

import ctbird
from ctbird.errors import ConfigError, InputError
from ctbird.solvers import BIRD, DPS, EarlyStopping
from operators import Identity, ParallelBeam
from operators.radon import Radon

SHAPE = (1, 16, 16)


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_bird_items_stop_early_on_their_own_and_stay_frozen(gaussian_prior):
    """Item b reaches its plateau early and item a does not: the batch goes on for a, b keeps its stopping point."""
    latent_true = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y_a = gaussian_prior.decode(latent_true)
    y_b = 0.3 * y_a

    def run(y, generator):
        return BIRD(gaussian_prior, Identity(SHAPE), iters=40, lr_latent=5e-2, n_samples=2,
                    early_stopping=EarlyStopping(patience=2, rel_tol=0.05)).run(y, generator=generator)

    alone_a, alone_b = run(y_a, _gens(1)[0]), run(y_b, _gens(2)[0])
    both = run(torch.cat([y_a, y_b]), _gens(1, 2))
    assert alone_a.info["stopped_at"] == [None] and alone_b.info["stopped_at"][0] < 10
    assert both.info["stopped_at"] == [None, alone_b.info["stopped_at"][0]]
    assert both.iters_run == 40 and not both.stopped_early
    torch.testing.assert_close(both.image[0], alone_a.image[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both.image[1], alone_b.image[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both.final_loss, torch.cat([alone_a.final_loss, alone_b.final_loss]), rtol=1e-4, atol=1e-7)


def test_bird_and_dps_draw_each_items_noise_from_its_generator(tiny_prior):
    radon = Radon(ParallelBeam(views=8), 16, backend="matrix")
    y = torch.rand(2, 1, 8, radon.out_shape[-1], generator=torch.Generator().manual_seed(0))
    bird = BIRD(tiny_prior, radon, iters=2, lr_latent=5e-2, n_samples=2)
    alone = [bird.run(y[b:b + 1], generator=g) for b, g in enumerate(_gens(3, 4))]
    both = bird.run(y, generator=_gens(3, 4))
    for b in range(2):  # batched UNet calls differ from single ones only in float reduction order
        torch.testing.assert_close(both.samples[b], alone[b].samples[0], rtol=0, atol=1e-4)
    shared = bird.run(y, generator=torch.Generator().manual_seed(3))  # one generator: the old batch draw
    assert not torch.allclose(shared.samples[1], both.samples[1], atol=1e-3)
    dps = DPS(tiny_prior, Identity(SHAPE), zeta=0.1, steps=4, eta=1.0)
    y_img = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    alone = [dps.run(y_img[b:b + 1], generator=g).image for b, g in enumerate(_gens(3, 4))]
    torch.testing.assert_close(dps.run(y_img, generator=_gens(3, 4)).image, torch.cat(alone), rtol=0, atol=1e-4)
    with pytest.raises(InputError, match="one per item"):
        bird.run(y, generator=_gens(3))


def test_reconstruct_takes_one_seed_per_slice(tiny_prior):
    geometry = ParallelBeam(views=8).resolved(16)
    sinograms = torch.rand(2, 1, 8, geometry.detectors, generator=torch.Generator().manual_seed(0))
    options = {"image_size": 16, "prior": tiny_prior, "iters": 2, "delta_t": 500}
    both = ctbird.reconstruct(sinograms, geometry, seed=[7, 9], **options).image
    for b, seed in enumerate((7, 9)):
        alone = ctbird.reconstruct(sinograms[b:b + 1], geometry, seed=seed, **options).image
        torch.testing.assert_close(both[b:b + 1], alone, rtol=0, atol=0.5)  # HU: ~1e-5 on the prior's scale
    with pytest.raises(ConfigError, match="one per item"):
        ctbird.reconstruct(sinograms, geometry, seed=[7], **options)
    with pytest.raises(ConfigError, match="seed"):
        ctbird.reconstruct(sinograms, geometry, seed=[7, -1], **options)


def test_dds_takes_one_seed_per_slice(tiny_prior):
    geometry = ParallelBeam(views=8).resolved(16)
    sinograms = torch.rand(2, 1, 8, geometry.detectors, generator=torch.Generator().manual_seed(1))
    options = {"image_size": 16, "prior": tiny_prior, "method": "dds", "iters": 3, "cg_iters": 2, "eta": 1.0}
    both = ctbird.reconstruct(sinograms, geometry, seed=[3, 5], **options).image
    for b, seed in enumerate((3, 5)):
        alone = ctbird.reconstruct(sinograms[b:b + 1], geometry, seed=seed, **options).image
        torch.testing.assert_close(both[b:b + 1], alone, rtol=0, atol=0.5)
    swapped = ctbird.reconstruct(sinograms, geometry, seed=[5, 3], **options).image
    assert not torch.allclose(swapped[:1], both[:1], atol=0.5)
