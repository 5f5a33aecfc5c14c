"""Several processes on one store: a fresh sqlite store is created once, an experiment
is got or created, and overlapping sweeps split their jobs so each runs exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import mlflow_server

from debiasbench.run.claims import Claim, JobBusy
from debiasbench.sweep.launchers import JobContext, execute_job
from debiasbench.run.runner import run
from debiasbench.testing import tiny_config
from debiasbench.track.store import RUN_KEY_TAG, Tracker, get_or_create_experiment

TINY = "{synthetic_artifacts: {n_train: 40, n_val: 20, n_test: 20, image_size: 16, patch_size: 3}}"


class RacingClient:
    """An MLflow client that loses the race to create an experiment once, as a second
    process creating the same experiment on a fresh server does."""

    def __init__(self) -> None:
        self.created = False
        self.lookups = 0

    def get_experiment_by_name(self, name: str) -> Any:
        self.lookups += 1
        if not self.created:
            return None
        return type("Experiment", (), {"experiment_id": "7", "lifecycle_stage": "active",
                                       "tags": {"mlflow.experimentKind": "custom_model_development"}})()

    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: dict[str, str] | None = None) -> str:
        self.created = True  # the other process got there first
        raise RuntimeError(f"RESOURCE_ALREADY_EXISTS: Experiment(name={name}) already exists.")


def test_creating_an_experiment_another_process_just_created_gets_that_one():
    client = RacingClient()
    assert get_or_create_experiment(client, "debiasbench", None) == "7"
    assert client.lookups == 2


@pytest.mark.slow  # four processes importing mlflow at once: 10 s on 2 cores
def test_processes_opening_one_fresh_sqlite_store_at_once_all_succeed_and_leave_only_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    script = ("import sys; from debiasbench.track.store import Tracker; "
              "t = Tracker(sys.argv[1], 'shared'); print(t.experiment_id, len(t.search()))")
    procs = [subprocess.Popen([sys.executable, "-c", script, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert len({out.split()[0] for out, _ in outputs}) == 1  # one experiment, the same for all
    assert Tracker(uri, "shared").search() == []  # and the store stays usable
    # The creation lock is removed by whoever holds it last, so waiters that then lock a
    # new file find the store made: nothing but the store is left beside it.
    assert set(os.listdir(tmp_path)) <= {"fresh.db", "mlruns"}


def test_a_run_of_a_job_another_process_holds_is_refused_and_a_sweep_job_is_busy(tracker, tmp_path):
    config = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1)
    assert tracker.search() == []  # the store exists, as a sweep makes it before its jobs
    other = Claim(config.checkpoint_dir, config.run_key())
    assert other.acquire(wait=False)
    try:
        with pytest.raises(JobBusy, match=f"another process \\(pid {os.getpid()}\\) is running this job"):
            run(config, tracker, progress=False)
        assert execute_job(config, JobContext(tracker.uri, {})).status == "BUSY"
    finally:
        other.release()
    assert tracker.search() == []  # nothing ran, nothing was marked
    assert execute_job(config, JobContext(tracker.uri, {})).status == "FINISHED"
    assert execute_job(config, JobContext(tracker.uri, {}, wait_for_claims=True)).status == "SKIPPED"


def _four_overlapping_sweeps(folder: Path, tracking_uri: str) -> list[subprocess.CompletedProcess]:
    """Four sweeps of 3 of 5 seeds each (every seed in at least two), started together."""
    seed_sets = ([0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0])
    procs = []
    for i, seeds in enumerate(seed_sets):
        (folder / f"s{i}.yaml").write_text(f"methods: [vanilla]\ndatasets: [{TINY}]\nseeds: {seeds}\n"
                                           "overrides: {epochs: 1, device: cpu}\n")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "debiasbench.cli", "sweep", f"s{i}.yaml", "--tracking-uri", tracking_uri],
            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"}))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]


def _assert_every_job_ran_exactly_once(results: list[subprocess.CompletedProcess], tracker: Tracker) -> None:
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("vanilla") >= 1  # each sweep prints its whole table
    runs = tracker.search()
    keys = [r.data.tags[RUN_KEY_TAG] for r in runs]
    assert len(keys) == 5 and len(set(keys)) == 5, [(r.data.tags.get(RUN_KEY_TAG), r.info.status) for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_four_sweeps_on_one_fresh_sqlite_store_run_every_job_exactly_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = _four_overlapping_sweeps(tmp_path, uri)
    _assert_every_job_ran_exactly_once(results, Tracker(uri, "debiasbench"))
    again = subprocess.run([sys.executable, "-m", "debiasbench.cli", "sweep", "s0.yaml", "--tracking-uri", uri],
                           cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0 and "3 of 3 jobs finished earlier: skipped" in again.stderr


@pytest.mark.slow
def test_four_sweeps_on_one_fresh_mlflow_server_run_every_job_exactly_once(tmp_path):
    with mlflow_server(tmp_path) as uri:
        results = _four_overlapping_sweeps(tmp_path, uri)
        _assert_every_job_ran_exactly_once(results, Tracker(uri, "debiasbench"))
