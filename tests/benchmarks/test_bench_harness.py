"""Per-run cost of the harness against the training it wraps, for a tiny run (2 epochs of
the small CNN on tiny ``synthetic_artifacts``): a bare PyTorch loop over the same data
is the baseline; ``debiasbench`` in this process adds building the data, tracking,
evaluation, explanation and checkpoints; a fresh process adds interpreter start and
imports, which is what a sweep job costs with ``--workers`` spawning a worker (once per
worker) or ``debiasbench run`` (every time)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from benchmarks.interleave import bench_threads
from debiasbench.run.runner import build_dataset, run
from debiasbench.testing import TINY_SYNTHETIC, bare_training_loop, tiny_config


@pytest.fixture
def config():
    return tiny_config(log_model=False)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_against_a_bare_training_loop(compare, config, tracker, tracking_uri):
    """The fresh process gets ``--threads`` with the count the comparison pins here. Timed by
    the wall clock: the fresh process's work is not this process's CPU time."""
    dataset = build_dataset(config)
    sets = [f"--set=dataset_params.{k}={v}" for k, v in TINY_SYNTHETIC.items()]
    command = [sys.executable, "-m", "debiasbench.cli", "run", "-m", "vanilla", "-d", "synthetic_artifacts",
               "--set=epochs=2", "--set=batch_size=32", "--set=device=cpu", "--set=log_model=false",
               *sets, "--tracking-uri", tracking_uri, f"--threads={bench_threads()}"]

    def fresh_process():
        subprocess.run(command, check=True, capture_output=True)

    compare(lambda: bare_training_loop(config, dataset),
            {"run_in_this_process_with_tracking_and_evaluation": lambda: run(config, tracker, progress=False),
             "run_in_a_fresh_process_through_the_cli": fresh_process},
            baseline_name="baseline_bare_training_loop", rounds=5)


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


@pytest.mark.slow
@pytest.mark.benchmark(group="sweep_of_6_runs")
def test_sweep_launchers_against_a_sequential_sweep(compare, benchmark, empty_store, tmp_path, monkeypatch):
    """Every sweep writes into a fresh copy of the empty store (a copy of a small file, timed
    with the sweep). torch gets every core this process may use: a sequential sweep runs
    its jobs on all of them, as it would outside the benchmark."""
    if benchmark.disabled:  # make test: tests/test_launchers.py runs every launcher end to end
        pytest.skip("a measurement only: make bench runs it")
    import shutil

    from debiasbench.core.resources import available_cores
    from debiasbench.sweep.driver import load_sweep, run_sweep
    from debiasbench.sweep.launchers import make_launcher

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    jobs = load_sweep(tmp_path / "sweep.yaml")
    stores = iter(range(1000))

    def sweep_with(launcher):
        def sweep():
            path = tmp_path / f"store{next(stores)}.db"
            shutil.copy(empty_store, path)
            results = run_sweep(jobs, f"sqlite:///{path}", log=lambda line: None, launcher=launcher)
            assert all(r.status == "FINISHED" for r in results)

        return sweep

    candidates = {"two_worker_processes": sweep_with(make_launcher("local", workers=2))}
    # ray.init() would join a Ray another pytest-xdist worker runs (tests/test_launchers.py
    # starts and stops heads); this measurement runs under `make bench`, in one process.
    if not os.environ.get("PYTEST_XDIST_WORKER") and importlib.util.find_spec("ray") is not None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        candidates["ray_one_cpu_per_run"] = sweep_with(make_launcher("ray", cpus_per_run=1.0))
    compare(sweep_with(make_launcher("local")), candidates, baseline_name="baseline_sequential", rounds=2,
            threads=available_cores())
