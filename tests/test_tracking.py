"""The tracking store keeps what a run logs where the store is, not where the user stood."""

from __future__ import annotations

from pathlib import Path

import pytest

from debiasbench.runner import run
from debiasbench.testing import tiny_config
from debiasbench.tracking import Tracker, artifact_location


def test_an_sqlite_stores_artifacts_lie_beside_the_database_whatever_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", "tests")
    result = run(tiny_config(epochs=1, log_model=True), tracker, progress=False)
    artifacts = store / "mlruns" / "tests" / result.run_id / "artifacts"
    assert (artifacts / "model.pt").exists()
    assert not (elsewhere / "mlruns").exists()


def test_a_relative_sqlite_uri_is_resolved_when_the_experiment_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = artifact_location("sqlite:///mlflow.db", "my runs/2026")
    assert location == (tmp_path.resolve() / "mlruns" / "my_runs_2026").as_uri()
    assert artifact_location("http://mlflow-server:5000", "x") is None
