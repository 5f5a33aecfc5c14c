"""Launchers: worker processes and Ray run a sweep's jobs; a failing run fails alone; a
sweep killed with SIGKILL and started again finishes only what is missing, with exactly
one finished run per job."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from servers import free_port

from debiasbench.sweep.launchers import make_launcher
from debiasbench.core.errors import ConfigError
from debiasbench.sweep.driver import load_sweep, run_sweep
from debiasbench.sweep.monitor import SweepLines
from debiasbench.track.store import RUN_KEY_TAG

TINY = "{n_train: 100, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}"


def sweep_file(tmp_path: Path, body: str, epochs: int = 1) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""
        datasets: [synthetic_artifacts]
        overrides:
          epochs: {epochs}
          device: cpu
          log_model: false
          dataset_params: {TINY}
    """) + textwrap.dedent(body))
    return path


def runs_by_status(tracking_uri: str) -> dict[str, Counter]:
    """status -> Counter of run keys, over every experiment of the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    out: dict[str, Counter] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            out.setdefault(run.info.status, Counter())[run.data.tags.get(RUN_KEY_TAG)] += 1
    return out


@pytest.mark.slow  # two worker processes importing torch: 15-20 s on 2 cores
def test_worker_processes_run_every_job_and_a_failing_run_fails_alone(tmp_path, tracking_uri):
    path = sweep_file(tmp_path, """
        methods: [vanilla]
        seeds: [0, 1]
        grid: {lr: [0.001, 1.0e30]}
    """)
    jobs = load_sweep(path)
    lines: list[str] = []
    results = run_sweep(jobs, tracking_uri, log=lines.append, launcher=make_launcher("local", workers=2))
    status = {(r.config.lr, r.config.seed): r.status for r in results}
    assert status == {(0.001, 0): "FINISHED", (0.001, 1): "FINISHED", (1e30, 0): "FAILED", (1e30, 1): "FAILED"}
    assert all("non-finite loss" in r.reason for r in results if r.status == "FAILED")
    store = runs_by_status(tracking_uri)
    assert sum(store["FINISHED"].values()) == 2 and sum(store["FAILED"].values()) == 2
    assert lines[-1].startswith("[2 done · 2 failed · 0 left")
    assert all("ETA" in line for line in lines)


def test_bad_launcher_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown launcher 'pbs'"):
        make_launcher("pbs")
    with pytest.raises(ConfigError, match="--workers: expected an integer >= 1"):
        make_launcher("local", workers=0)
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        make_launcher("ray", gpus_per_run=-1)


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"the sweep ended (code {process.returncode}) before it could be killed: "
                        f"{process.stderr.read().decode() if process.stderr else ''}")
        time.sleep(0.2)
    pytest.fail("the sweep never reached the point where it is killed")


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_and_started_again_ends_with_one_finished_run_per_job(tmp_path, tracking_uri):
    path = sweep_file(tmp_path, """
        methods: [vanilla]
        seeds: [0, 1, 2, 3]
    """, epochs=4)
    jobs = load_sweep(path)
    command = [sys.executable, "-m", "debiasbench.cli", "sweep", str(path), "--workers", "2",
               "--tracking-uri", tracking_uri]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def one_finished_and_one_running() -> bool:
        """Read with sqlite3, not MLflow: an MLflow client would race the sweep's creation
        of the store."""
        try:
            with sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True) as db:
                statuses = {row[0] for row in db.execute("SELECT status FROM runs")}
        except sqlite3.Error:
            return False
        return {"FINISHED", "RUNNING"} <= statuses

    _wait_for(one_finished_and_one_running, 240, first)
    os.kill(first.pid, signal.SIGKILL)  # the sweep only: its workers must die with it
    first.wait()
    time.sleep(1.0)
    interrupted = runs_by_status(tracking_uri)
    assert sum(interrupted["FINISHED"].values()) < len(jobs)

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "finished earlier: skipped" in second.stderr
    store = runs_by_status(tracking_uri)
    assert store["FINISHED"] == Counter({job.run_key(): 1 for job in jobs})
    assert "RUNNING" not in store  # runs of the killed sweep are closed as KILLED
    rerun = len(jobs) - sum(interrupted["FINISHED"].values())
    assert second.stderr.count(": finished in ") == rerun


@pytest.mark.slow
def test_ray_launcher_runs_a_small_sweep_on_this_machine_into_the_store(tmp_path, tracking_uri, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = sweep_file(tmp_path, """
        methods: [vanilla, rrclarc]
        seeds: [0]
        grid: {lr: [0.001, 1.0e30]}
    """)
    jobs = load_sweep(path)
    lines: list[str] = []
    results = run_sweep(jobs, tracking_uri, log=lambda line: None,
                        launcher=make_launcher("ray", cpus_per_run=0.5), view=SweepLines(lines.append, interval=0))
    assert any("vanilla on synthetic_artifacts (small_cnn, seed 0) · train epoch 1/1" in line for line in lines)
    by_job = {(r.config.method, r.config.lr): r.status for r in results}
    assert by_job == {("vanilla", 0.001): "FINISHED", ("vanilla", 1e30): "FAILED",
                      ("rrclarc", 0.001): "FINISHED", ("rrclarc", 1e30): "FAILED"}
    store = runs_by_status(tracking_uri)
    finished_keys = set(store["FINISHED"])
    assert {r.config.run_key() for r in results if r.status == "FINISHED"} <= finished_keys
    assert all(count == 1 for count in store["FINISHED"].values())


def die_on_seed_1(config, context):
    """A job runner whose worker process dies (like a kill or the OOM killer) on seed 1."""
    from debiasbench.sweep.launchers import JobResult

    if config.seed == 1:
        os._exit(137)
    time.sleep(0.5)
    return JobResult(config, "FINISHED", {"test_acc": 1.0})


def test_a_worker_that_dies_fails_only_its_own_job(tmp_path, tracking_uri):
    from debiasbench.sweep.launchers import JobContext, ProcessPool

    jobs = load_sweep(sweep_file(tmp_path, "methods: [vanilla]\nseeds: [0, 1, 2, 3]\n"))
    yielded = list(ProcessPool(2, execute=die_on_seed_1)(jobs, JobContext(tracking_uri, {})))
    [restarted] = [r for r in yielded if r.status == "RESTARTED"]  # its worker died once: it ran again, once
    assert restarted.config.seed == 1 and "died (exit code 137)" in restarted.reason, restarted.reason
    results = [r for r in yielded if r.status != "RESTARTED"]
    status = {r.config.seed: r.status for r in results}
    assert status == {0: "FINISHED", 1: "FAILED", 2: "FINISHED", 3: "FINISHED"}
    assert len(results) == 4
    assert "worker process died" in next(r.reason for r in results if r.status == "FAILED")


def probe_collector(config, context):
    """``execute_job`` in a worker, with vanilla's loss noting whether the garbage collector
    runs at each training step; the result's metrics say so, and whether the worker froze
    objects at its start (only its initializer freezes)."""
    import gc

    from debiasbench.methods.vanilla import Vanilla
    from debiasbench.sweep.launchers import execute_job

    frozen = gc.get_freeze_count() > 0
    steps: list[bool] = []
    loss = Vanilla.loss

    def noting(self, model, batch):
        steps.append(gc.isenabled())
        return loss(self, model, batch)

    Vanilla.loss = noting  # type: ignore[method-assign]
    try:
        result = execute_job(config, context)
    finally:
        Vanilla.loss = loss  # type: ignore[method-assign]
    result.metrics.update(collector_in_steps=float(bool(steps) and all(steps)), frozen_at_start=float(frozen))
    return result


@pytest.mark.slow  # two worker processes importing torch
def test_worker_processes_import_with_the_collector_paused_and_train_with_it_running(tmp_path, tracking_uri,
                                                                                   tracker):
    """A worker imports a job's modules when it starts, with the collector paused, and
    freezes them (``job_process.prepare_job_process``); its jobs train with the collector
    running, and finish."""
    from debiasbench.sweep.launchers import JobContext, ProcessPool

    tracker.finished_runs()  # the store, made before the workers start as a sweep makes it
    jobs = load_sweep(sweep_file(tmp_path, "methods: [vanilla]\nseeds: [0, 1]\n"))
    results = list(ProcessPool(2, execute=probe_collector, imports=True)(jobs, JobContext(tracking_uri, {})))
    assert [r.status for r in results] == ["FINISHED", "FINISHED"], [r.reason for r in results]
    assert all(r.metrics["collector_in_steps"] == 1.0 and r.metrics["frozen_at_start"] == 1.0 for r in results)
    assert ProcessPool(2).imports and not ProcessPool(2, execute=die_on_seed_1).imports  # execute_job's only


def test_a_worker_that_cannot_see_the_sqlite_store_fails_instead_of_creating_one(tmp_path):
    from debiasbench.sweep.launchers import JobContext, execute_job

    job = load_sweep(sweep_file(tmp_path, "methods: [vanilla]\n"))[0]
    elsewhere = tmp_path / "on-another-node" / "mlflow.db"
    result = execute_job(job, JobContext(f"sqlite:///{elsewhere}", {}))
    assert result.status == "FAILED" and "tracking server" in result.reason
    assert not elsewhere.exists()


def test_each_sweep_tags_its_own_runs_in_one_process(tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    jobs = load_sweep(sweep_file(tmp_path, "methods: [vanilla]\nseeds: [0, 1]\n"))
    for job, name in zip(jobs, ("first.yaml", "second.yaml")):
        run_sweep([job], tracking_uri, log=lambda line: None, tags={"debiasbench.sweep_file": name})
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(jobs[0].experiment)
    assert experiment is not None  # the sweep's runs created it
    runs = client.search_runs([experiment.experiment_id])
    tagged = {run.data.tags[RUN_KEY_TAG]: run.data.tags["debiasbench.sweep_file"] for run in runs}
    assert tagged == {jobs[0].run_key(): "first.yaml", jobs[1].run_key(): "second.yaml"}


@pytest.mark.slow
def test_a_sweep_joins_an_existing_ray_cluster_on_loopback(tmp_path, tracking_uri):
    """A head started here on 127.0.0.1 only (`ray start --head --node-ip-address=127.0.0.1`):
    RAY_ADDRESS joins it, with the auth token in the file RAY_AUTH_TOKEN_PATH names (token
    mode turned on by the sweep), and the jobs finish there."""
    pytest.importorskip("ray")
    from ray_nodes import clean_environment, ray_cluster

    with ray_cluster(tmp_path / "ray", [{"OMP_NUM_THREADS": "1"}]) as (driver, _):
        path = sweep_file(tmp_path, """
            methods: [vanilla]
            seeds: [0, 1]
        """)
        result = subprocess.run([sys.executable, "-m", "debiasbench.cli", "sweep", str(path), "--launcher", "ray",
                                 "--tracking-uri", tracking_uri], cwd=tmp_path, capture_output=True, text=True,
                                env={**clean_environment(), **driver}, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert runs_by_status(tracking_uri)["FINISHED"] == Counter({job.run_key(): 1 for job in load_sweep(path)})


def test_an_unreachable_ray_address_is_one_line_naming_it(tmp_path, tracking_uri, monkeypatch, capsys):
    pytest.importorskip("ray")
    from debiasbench.cli import main

    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    path = sweep_file(tmp_path, """
        methods: [vanilla]
    """)
    began = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        main(["sweep", str(path), "--launcher", "ray", "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: RAY_ADDRESS '127.0.0.1:{port}': no Ray cluster answers at 127.0.0.1:{port}")
    assert time.perf_counter() - began < 30


def test_an_unreachable_tracking_server_is_one_line_at_once(capsys, tmp_path, monkeypatch):
    from debiasbench.cli import main

    monkeypatch.chdir(tmp_path)
    port = free_port()
    began = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        main(["run", "--set", "epochs=1", "--tracking-uri", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1
    assert f"no server answers at 127.0.0.1:{port}" in err[0]
    assert time.perf_counter() - began < 30
