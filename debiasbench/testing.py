"""Helpers for tests of the project and of plugins: tiny, fast settings for CPU runs."""

from __future__ import annotations

from typing import Any

from debiasbench.config import RunConfig, merge, resolve_config

#: synthetic_artifacts small enough for an end-to-end run in about a second on a CPU.
TINY_SYNTHETIC: dict[str, Any] = {"n_train": 200, "n_val": 60, "n_test": 100, "image_size": 16,
                                  "patch_size": 3}


def tiny_config(**overrides: Any) -> RunConfig:
    """A validated CPU run config on tiny ``synthetic_artifacts`` (2 epochs, small_cnn)."""
    base = {"dataset": "synthetic_artifacts", "dataset_params": dict(TINY_SYNTHETIC), "epochs": 2,
            "batch_size": 32, "device": "cpu", "experiment": "tests"}
    return resolve_config(merge(base, overrides))
