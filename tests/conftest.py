"""Shared fixtures: a throwaway tracking store and tiny, fast run configs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty sqlite store in a temporary folder, also the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tracker(tracking_uri: str):
    from debiasbench.tracking import Tracker

    return Tracker(tracking_uri, "tests")


@pytest.fixture
def register():
    """Register a plugin class for one test only: ``register(METHODS, cls)``; whatever
    the name meant before comes back after the test."""
    with contextlib.ExitStack() as overrides:

        def add(registry, cls):
            return overrides.enter_context(registry.override(cls))

        yield add
