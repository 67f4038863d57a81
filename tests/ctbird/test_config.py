"""ctbird.config: frozen, validated settings with one default each."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ctbird.config import (METHOD_CONFIGS, PRESETS, RESTORE_TASKS, BirdConfig, DPSConfig, EarlyStopping,
                           FBPConfig, SIRTConfig, TVConfig, resolve_preset)
from ctbird.errors import ConfigError


def test_configs_are_frozen_and_module_defaults_immutable():
    config = BirdConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.iters = 5
    with pytest.raises(TypeError):
        PRESETS["cpu-fast"]["iters"] = 1
    with pytest.raises(TypeError):
        METHOD_CONFIGS["bird"] = DPSConfig
    assert BirdConfig().iters == 50 and PRESETS["cpu-fast"]["iters"] == 20  # nothing above leaked into the defaults


def test_unknown_and_mistyped_names_list_the_valid_keys():
    with pytest.raises(ConfigError, match=r"'lr_latnet'; valid keys: iters, delta_t, lr_latent"):
        BirdConfig().replace(lr_latnet=0.1)
    with pytest.raises(ConfigError, match=r"'steps'.*iters, zeta, eta"):
        DPSConfig.from_dict({"steps": 3})
    with pytest.raises(TypeError):
        BirdConfig(wobble=1)  # the constructor is Python's own: unknown keywords are TypeErrors


@pytest.mark.parametrize("cls, settings, name", [
    (BirdConfig, {"iters": 0}, "iters"), (BirdConfig, {"iters": 2.5}, "iters"), (BirdConfig, {"delta_t": True}, "delta_t"),
    (BirdConfig, {"lr_latent": 0.0}, "lr_latent"), (BirdConfig, {"lr_operator": -1.0}, "lr_operator"),
    (BirdConfig, {"latent_optimizer": "sgd"}, "latent_optimizer"), (BirdConfig, {"grad_mode": "full"}, "grad_mode"),
    (BirdConfig, {"keep_best": "yes"}, "keep_best"), (BirdConfig, {"data_filter": -0.5}, "data_filter"),
    (BirdConfig, {"early_stopping": 0}, "early_stopping"), (BirdConfig, {"refine_eta": 1.5}, "refine_eta"),
    (BirdConfig, {"refine_from_t": -1}, "refine_from_t"), (BirdConfig, {"refine_delta_t": 0}, "refine_delta_t"),
    (DPSConfig, {"eta": 1.5}, "eta"), (FBPConfig, {"filter": "box"}, "filter"), (TVConfig, {"lam": float("nan")}, "lam"),
    (SIRTConfig, {"iters": -1}, "iters"),
])
def test_invalid_values_name_the_setting(cls, settings, name):
    with pytest.raises(ConfigError, match=name):
        cls(**settings)


def test_round_trip_through_a_dict_and_json():
    config = BirdConfig(iters=7, lr_latent=1, early_stopping=4, data_filter=None, refine_from_t=0)
    assert config.lr_latent == 1.0 and isinstance(config.lr_latent, float)  # TOML integers are accepted as rates
    assert config.early_stopping == EarlyStopping(patience=4)
    record = json.loads(json.dumps(config.to_dict()))
    assert record["early_stopping"] == {"patience": 4, "rel_tol": 1e-3}
    assert BirdConfig.from_dict(record) == config


def test_with_overrides_keeps_settings_given_as_none_unless_none_is_a_value():
    config = BirdConfig(iters=3)
    assert config.with_overrides(iters=None, delta_t=None) == config
    assert config.with_overrides(data_filter=None).data_filter is None
    assert DPSConfig().with_overrides(n_samples=None, data_filter=None) == DPSConfig()  # None: not given
    with pytest.raises(ConfigError, match="itres"):
        config.with_overrides(itres=1)


def test_presets_and_tasks():
    assert BirdConfig.preset("full") == BirdConfig()
    fast = BirdConfig.preset("cpu-fast")
    assert (fast.iters, fast.delta_t, fast.refine_from_t, fast.refine_delta_t) == (20, 333, 300, 10)
    assert resolve_preset("auto", "cpu") == "cpu-fast" and resolve_preset("auto", "cuda:0") == "full"
    assert resolve_preset("full", "cpu") == "full"
    with pytest.raises(ConfigError, match="preset"):
        resolve_preset("turbo", "cpu")
    with pytest.raises(ConfigError, match="preset"):
        BirdConfig.preset("turbo")
    ct = BirdConfig.for_task("ct")
    assert ct == BirdConfig() and (ct.latent_optimizer, ct.keep_best, ct.data_filter) == ("normalized-gd", True, 0.5)
    for task in RESTORE_TASKS:
        photo = BirdConfig.for_task(task)
        assert (photo.latent_optimizer, photo.keep_best, photo.data_filter, photo.delta_t) == ("normalized-gd", True, None, 100)
    assert BirdConfig.for_task("denoise").lr_operator == 0.0 and BirdConfig.for_task("inpaint").lr_latent == 5e-2
    with pytest.raises(ConfigError, match="task"):
        BirdConfig.for_task("colorize")


def test_method_settings_classes_are_public():
    import ctbird
    from ctbird.methods import REGISTRY

    assert ctbird.BirdConfig is BirdConfig and ctbird.PRESETS is PRESETS
    assert {name: method.config for name, method in REGISTRY.items()} == dict(METHOD_CONFIGS)
    assert [name for name, method in REGISTRY.items() if method.needs_prior] == ["bird", "bird-raw", "dps", "dds"]
