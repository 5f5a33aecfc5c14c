"""Generated datasets draw from named streams of their seed, and a run records the version
of the data it was made on, so runs on old and new data never share a run key or a
leaderboard row."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from debiasbench.contract.config import resolve_config
from debiasbench.core.errors import ConfigError, UserError
from debiasbench.core.randomness import derive_seed, stream
from debiasbench.core.registry import DATASETS
from debiasbench.report.selection import select
from debiasbench.run.base_model import check_matches
from debiasbench.testing import TINY_SYNTHETIC, tiny_config


def test_a_named_stream_of_a_seed_is_its_derived_seed_and_names_keep_streams_apart():
    a, b = stream(0, "colored_digits.val"), stream(0, "colored_digits.test")
    assert a.initial_seed() == derive_seed(0, "colored_digits.val")
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=stream(0, "colored_digits.val")))
    assert not torch.equal(torch.rand(5, generator=stream(0, "colored_digits.val")), torch.rand(5, generator=b))


def test_the_colour_datasets_are_version_2_and_record_it_in_the_run_key():
    assert DATASETS.get("colored_digits").version == DATASETS.get("colored_mnist").version == 2
    config = resolve_config({"dataset": "colored_digits"})
    assert config.dataset_version == 2 and config.flat()["dataset_version"] == 2
    assert config.run_key() != dataclasses.replace(config, dataset_version=1).run_key()


def test_a_dataset_at_version_1_keeps_the_run_key_it_had_before_versions_were_recorded():
    config = tiny_config()
    assert config.dataset_version == 1
    before = {k: v for k, v in config.to_dict().items()
              if k not in config.NON_SEMANTIC and k not in ("explain_samples", "dataset_version")}
    assert config.run_key() == hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_a_config_read_back_must_be_of_the_installed_version():
    recorded = resolve_config({"dataset": "colored_digits"}).to_dict()
    assert resolve_config(recorded).run_key() == resolve_config({"dataset": "colored_digits"}).run_key()
    with pytest.raises(ConfigError, match="dataset_version: the config was recorded with version 1"):
        resolve_config({**recorded, "dataset_version": 1})


def test_colored_digits_validation_colours_change_nothing_in_train_or_test():
    defaults = resolve_config({"dataset": "colored_digits"}).dataset_params
    base = DATASETS.get("colored_digits")(**defaults)
    params = {**defaults, "val_bias_ratio": 0.5}
    apart = DATASETS.get("colored_digits")(**params)
    for split in ("train", "test"):
        assert torch.equal(base.splits[split].bias, apart.splits[split].bias)
    assert not torch.equal(base.splits["val"].bias, apart.splits["val"].bias)
    same = DATASETS.get("colored_digits")(**{**params, "val_bias_ratio": params["bias_ratio"]})
    assert torch.equal(same.splits["val"].bias, base.splits["val"].bias)  # explicit = null


def test_the_leaderboard_never_pools_runs_of_two_data_versions():
    rows = []
    for version, acc in ((None, 0.5), ("2", 0.9)):  # None: a run stored before versions were recorded
        for seed in (0, 1):
            rows.append({"run_id": f"{version}-{seed}", "params.method": "vanilla", "params.dataset": "colored_digits",
                         "params.model": "small_cnn", "params.seed": str(seed), "params.lr": "0.001",
                         "params.dataset_version": version, "metrics.val_acc": acc, "metrics.test_acc": acc})
    summary = select(pd.DataFrame(rows), "val_acc", metrics=("test_acc",))
    assert sorted(summary["setting"]) == ["dataset_version=1", "dataset_version=2"]
    assert sorted(summary["test_acc"]) == [0.5, 0.9] and list(summary["n"]) == [2, 2]
    one_version = select(pd.DataFrame(rows[2:]), "val_acc", metrics=("test_acc",))
    assert list(one_version["setting"]) == [""] and math.isclose(one_version["test_acc"][0], 0.9)


def test_a_correction_refuses_a_vanilla_base_of_another_data_version():
    config = resolve_config({"dataset": "colored_digits"})
    params = {key: str(getattr(config, key)) for key in ("dataset", "model", "seed", "pretrained", "class_weights")}
    params.update({f"dataset_params.{k}": str(v) for k, v in config.dataset_params.items()})
    old = SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(params=params))
    with pytest.raises(UserError, match="dataset_version is '1', this run needs '2'"):
        check_matches(config, old)
    old.data.params = {**params, "dataset_version": "2"}
    check_matches(config, old)
    synthetic = resolve_config({"method": "rrclarc", "dataset": "synthetic_artifacts",
                                "dataset_params": TINY_SYNTHETIC})
    params = {key: str(getattr(synthetic, key)) for key in ("dataset", "model", "seed", "pretrained", "class_weights")}
    params.update({f"dataset_params.{k}": str(v) for k, v in synthetic.dataset_params.items()})
    check_matches(synthetic, SimpleNamespace(info=SimpleNamespace(run_id="r2"), data=SimpleNamespace(params=params)))
