"""Checkpoints kept in the tracking store: a job killed on one node resumes on another
that shares no folder with it, and ends as if never stopped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from debiasbench.core.registry import METHODS
from debiasbench.run.runner import CHECKPOINT_DIR_VARIABLE, run
from debiasbench.run.store_checkpoints import ARTIFACT_FOLDER, RESUMED_FROM_RUN_TAG, wanted
from debiasbench.testing import crashing_once, one_thread, tiny_config, without_timing
from debiasbench.track.store import Tracker


def _kept(tracker: Tracker, run_id: str) -> list[str]:
    return sorted(Path(item.path).name for item in tracker.client.list_artifacts(run_id, ARTIFACT_FOLDER))


def test_a_job_killed_on_one_node_resumes_on_another_from_the_checkpoint_kept_in_the_store(
        tracker, register, tmp_path):
    crashing = register(METHODS, crashing_once(METHODS.get("vanilla"), "crashing_vanilla", at_step=-1))
    config = tiny_config(method=crashing.name, epochs=3, store_checkpoints="always",
                         checkpoint_dir=str(tmp_path / "node_a"))
    with one_thread():
        crashing.crashed = True
        uninterrupted = run(config, Tracker(tracker.uri, "uninterrupted"), progress=False)
        crashing.crashed, crashing.at_step = False, crashing.steps_taken - 2  # in the last epoch
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(config, tracker, progress=False)
        (killed,) = tracker.search()
        assert _kept(tracker, killed.info.run_id) == ["last.pt"]
        elsewhere = replace(config, checkpoint_dir=str(tmp_path / "node_b"))  # shares no folder with node_a
        resumed = run(elsewhere, tracker, progress=False)
    assert without_timing(resumed.metrics) == without_timing(uninterrupted.metrics)
    tags = tracker.client.get_run(resumed.run_id).data.tags
    assert tags[RESUMED_FROM_RUN_TAG] == killed.info.run_id
    assert tags["debiasbench.resumed_from_epoch"] == str(config.epochs - 1)
    # the job finished: the checkpoints its runs kept are gone from the store and node_b
    assert _kept(tracker, killed.info.run_id) == [] and _kept(tracker, resumed.run_id) == []
    assert not (tmp_path / "node_b" / config.run_key()).exists()


def test_checkpoints_go_to_the_store_by_default_only_where_it_is_a_server(tmp_path):
    config = tiny_config()
    assert config.store_checkpoints == "auto"
    assert wanted(config, "http://mlflow.example:5000") and wanted(config, "https://mlflow.example")
    assert not wanted(config, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert wanted(replace(config, store_checkpoints="always"), "sqlite:///x.db")
    assert not wanted(replace(config, store_checkpoints="never"), "http://mlflow.example:5000")


def test_a_run_on_an_sqlite_store_keeps_no_checkpoint_artifact(tracker):
    result = run(tiny_config(epochs=1, log_model=False), tracker, progress=False)
    assert _kept(tracker, result.run_id) == []


def test_the_environments_checkpoint_dir_replaces_the_configs(tracker, register, tmp_path, monkeypatch):
    crashing = register(METHODS, crashing_once(METHODS.get("vanilla"), "crashing_vanilla", at_step=-1))
    config = tiny_config(method=crashing.name, epochs=2, checkpoint_dir=str(tmp_path / "configured"))
    monkeypatch.setenv(CHECKPOINT_DIR_VARIABLE, str(tmp_path / "scratch"))
    crashing.crashed = True
    run(config, Tracker(tracker.uri, "uninterrupted"), progress=False)
    crashing.crashed, crashing.at_step = False, crashing.steps_taken - 2  # after the first epoch's checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(config, tracker, progress=False)
    assert (tmp_path / "scratch" / config.run_key() / "last.pt").is_file()
    assert not (tmp_path / "configured").exists()
