"""Per-run cost of the harness against the training it wraps, for a tiny run (2 epochs of
the small CNN on tiny ``synthetic_artifacts``): a bare PyTorch loop over the same data
is the baseline; ``debiasbench`` in this process adds building the data, tracking,
evaluation, explanation and checkpoints; a fresh process adds interpreter start and
imports, which is what a sweep job costs with ``--workers`` spawning a worker (once per
worker) or ``debiasbench run`` (every time)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from debiasbench.run.runner import build_dataset, run
from debiasbench.testing import TINY_SYNTHETIC, bare_training_loop, tiny_config


@pytest.fixture
def config():
    return tiny_config(log_model=False)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_baseline_bare_training_loop(benchmark, config):
    dataset = build_dataset(config)
    benchmark.pedantic(lambda: bare_training_loop(config, dataset), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_in_this_process_with_tracking_and_evaluation(benchmark, config, tracker):
    benchmark.pedantic(lambda: run(config, tracker, progress=False), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_in_a_fresh_process_through_the_cli(benchmark, config, tracking_uri):
    sets = [f"--set=dataset_params.{k}={v}" for k, v in TINY_SYNTHETIC.items()]
    command = [sys.executable, "-m", "debiasbench.cli", "run", "-m", "vanilla", "-d", "synthetic_artifacts",
               "--set=epochs=2", "--set=batch_size=32", "--set=device=cpu", "--set=log_model=false",
               *sets, "--tracking-uri", tracking_uri]

    def fresh_process():
        subprocess.run(command, check=True, capture_output=True)

    benchmark.pedantic(fresh_process, rounds=3, warmup_rounds=1)


# A sweep of 6 small runs (1 epoch on 1,000 images of 32x32) through each launcher, each
# round into a fresh copy of an empty store (creating one costs seconds of migrations):
# how well the launchers use the machine's cores, start-up of workers / Ray included.
SWEEP = """
methods: [vanilla]
datasets: [synthetic_artifacts]
seeds: [0, 1, 2, 3, 4, 5]
overrides: {epochs: 1, device: cpu, log_model: false, dataset_params: {n_train: 1000, n_val: 200, n_test: 200}}
"""


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    from debiasbench.track.store import Tracker

    folder = tmp_path_factory.mktemp("store")
    Tracker(f"sqlite:///{folder / 'empty.db'}", "debiasbench").search()  # the store is made on first use
    return folder / "empty.db"


def _sweep_with(launcher_name: str, empty_store, tmp_path, benchmark, **options) -> None:
    if benchmark.disabled:  # make test: tests/test_launchers.py runs every launcher end to end
        pytest.skip("a measurement only: make bench runs it")

    import shutil

    from debiasbench.sweep.launchers import make_launcher
    from debiasbench.sweep.driver import load_sweep, run_sweep

    (tmp_path / "sweep.yaml").write_text(SWEEP)
    jobs = load_sweep(tmp_path / "sweep.yaml")
    launcher = make_launcher(launcher_name, **options)
    rounds = iter(range(1000))

    def fresh_store():
        path = tmp_path / f"round{next(rounds)}.db"
        shutil.copy(empty_store, path)
        return (f"sqlite:///{path}",), {}

    def sweep(uri):
        results = run_sweep(jobs, uri, log=lambda line: None, launcher=launcher)
        assert all(r.status == "FINISHED" for r in results)

    benchmark.pedantic(sweep, setup=fresh_store, rounds=2)


@pytest.mark.slow
@pytest.mark.benchmark(group="sweep_of_6_runs")
def test_sweep_baseline_sequential(benchmark, empty_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _sweep_with("local", empty_store, tmp_path, benchmark)


@pytest.mark.slow
@pytest.mark.benchmark(group="sweep_of_6_runs")
def test_sweep_two_worker_processes(benchmark, empty_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _sweep_with("local", empty_store, tmp_path, benchmark, workers=2)


@pytest.mark.slow
@pytest.mark.benchmark(group="sweep_of_6_runs")
def test_sweep_ray_one_cpu_per_run(benchmark, empty_store, tmp_path, monkeypatch):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # ray.init() joins a Ray another worker runs (tests/test_launchers.py starts and stops
        # heads); this measurement runs under `make bench`, which uses one process.
        pytest.skip("measured by make bench, not beside other workers' Ray")
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _sweep_with("ray", empty_store, tmp_path, benchmark, cpus_per_run=1.0)
