"""Run configs: layered defaults, overrides, and one clear message per bad value."""

from __future__ import annotations

import pytest

from debiasbench.contract.config import parse_overrides, resolve_config
from debiasbench.core.errors import ConfigError, UserError
from debiasbench.contract.method import Method
from debiasbench.core.registry import METHODS


def test_defaults_layer_dataset_then_method_then_user():
    config = resolve_config({"dataset": "synthetic_artifacts", "lr": 0.01})
    assert config.epochs == 5  # synthetic_artifacts' train default
    assert config.lr == 0.01
    assert config.dataset_params["p"] == 0.5


def test_set_overrides_parse_yaml_scalars_into_nested_keys():
    raw = parse_overrides(["lr=1e-2", "dataset_params.bias_ratio=0.995", "latent_layer=features.28"])
    assert raw == {"lr": 0.01, "dataset_params": {"bias_ratio": 0.995}, "latent_layer": "features.28"}
    assert resolve_config(raw).dataset_params["bias_ratio"] == 0.995


@pytest.mark.parametrize("raw,expected", [
    ({"epoch": 3}, "unknown key 'epoch'; did you mean 'epochs'?"),
    ({"seed": "abc"}, "seed: expected an integer in [0, 4294967295], got 'abc'"),
    ({"lr": -1.0}, "lr: expected a float >= 0.0"),
    ({"optimizer": "rmsprop"}, "optimizer: expected one of 'sgd', 'adam', 'adamw'"),
    ({"dataset_params": {"bias_ratio": 1.5}}, "dataset_params.bias_ratio: expected a float in [0.0, 1.0]"),
    ({"dataset_params": {"ratio": 0.9}}, "unknown key 'dataset_params.ratio'"),
    ({"hparams": {"lambda": 1.0}}, "unknown key 'hparams.lambda'"),
    ({"epochs": 2.5}, "epochs: expected an integer"),
    ({"amp": "yes"}, "amp: expected a boolean"),
])
def test_bad_values_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(ConfigError) as info:
        resolve_config(raw)
    assert expected in str(info.value)


def test_unknown_method_is_a_user_error_with_suggestion():
    with pytest.raises(UserError, match="did you mean 'vanilla'"):
        resolve_config({"method": "vanila"})


def test_method_requiring_masks_is_refused_on_a_dataset_without_them(register):
    class NeedsMasks(Method):
        name = "test_needs_masks"
        requires = frozenset({"artifact_masks"})

    register(METHODS, NeedsMasks)
    with pytest.raises(ConfigError, match="requires artifact_masks, which dataset 'colored_digits'"):
        resolve_config({"method": "test_needs_masks", "dataset": "colored_digits"})
    assert resolve_config({"method": "test_needs_masks", "dataset": "synthetic_artifacts"})


def test_run_key_ignores_the_device_but_not_the_seed():
    a = resolve_config({"seed": 1, "device": "cpu"})
    assert a.run_key() == resolve_config({"seed": 1, "device": "auto"}).run_key()
    assert a.run_key() != resolve_config({"seed": 2}).run_key()
