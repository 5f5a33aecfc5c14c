"""`--threads`: the torch threads of a run or of each sweep job, by default the cores the
process may use (divided among a sweep's workers; never more than torch has), recorded
with every run."""

from __future__ import annotations

import textwrap

import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.core.resources import available_cores
from debiasbench.run.runner import THREADS_TAG

TINY = ["--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=64", "--set", "dataset_params.n_val=32",
        "--set", "dataset_params.n_test=32", "--set", "dataset_params.image_size=16",
        "--set", "dataset_params.patch_size=3", "--set", "epochs=1", "--set", "device=cpu",
        "--set", "log_model=false", "--no-progress"]


def recorded_threads(uri: str) -> list[str]:
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return sorted(r.data.tags[THREADS_TAG] for r in runs)


def test_run_uses_the_threads_asked_for_and_records_them(tracking_uri):
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["run", *TINY, "--threads", "1", "--tracking-uri", tracking_uri])
        assert result.exit_code == 0, result.output
        assert recorded_threads(tracking_uri) == ["1"]
        torch.set_num_threads(before)
        again = CliRunner().invoke(app, ["run", *TINY, "--seed", "1", "--tracking-uri", tracking_uri])
        assert again.exit_code == 0, again.output
        assert recorded_threads(tracking_uri) == sorted(["1", str(min(available_cores(), before))])
    finally:
        torch.set_num_threads(before)


def test_a_sweep_gives_each_worker_its_share_of_the_cores_or_the_threads_asked_for(tracking_uri, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent("""
        methods: [vanilla]
        datasets: [synthetic_artifacts]
        seeds: [0, 1]
        overrides:
          epochs: 1
          device: cpu
          log_model: false
          dataset_params: {n_train: 64, n_val: 32, n_test: 32, image_size: 16, patch_size: 3}
    """))
    result = CliRunner().invoke(app, ["sweep", str(sweep), "-j", "2", "--no-progress", "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    share = str(max(1, available_cores() // 2))
    assert recorded_threads(tracking_uri) == [share, share]


def test_a_thread_count_below_one_is_one_line():
    result = CliRunner().invoke(app, ["run", "--threads", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --threads: expected a positive number of torch threads, got 0."
