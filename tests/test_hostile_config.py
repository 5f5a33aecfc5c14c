"""Hostile configurations and hostile output (issue 28): values of the wrong type where
others are merged into them, sweeps of a hundred million jobs, keys that would be ignored
silently, an stdout that cannot be written, and metrics a store holds as infinities.
Input is refused in one line (exit 2) before anything is written; output errors never
change what finished work reports."""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from debiasbench.cli import main
from refusals import refuse

SWEEP_OK = "methods: [vanilla]\ndatasets: [colored_digits]\n"


def write(folder: Path, name: str, content: str) -> str:
    path = folder / name
    path.write_text(content)
    return str(path)


# --- item 3: a sweep of 10^8 jobs is counted, not expanded -----------------------------------

def _axis(key: str, n: int) -> str:
    return f"  {key}: [{', '.join(str(i) for i in range(1, n + 1))}]\n"


@pytest.mark.parametrize("content,count", [
    (SWEEP_OK + "n_trials: 100000000\n", "100,000,000"),
    (SWEEP_OK + "grid:\n" + "".join(_axis(key, 100) for key in ("lr", "weight_decay", "momentum", "epochs")),
     "100,000,000"),
    ("methods: [vanilla, jtt]\ndatasets: [colored_digits]\nseeds: [0, 1, 2, 3, 4]\n"
     "grid:\n" + _axis("epochs", 100) + "hparams:\n  jtt:\n  " + _axis("upweight", 200), "100,500"),
])
def test_a_sweep_of_too_many_jobs_is_refused_at_once_with_its_count(here, capsys, content, count):
    began = time.perf_counter()
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", content), "--dry-run")
    assert time.perf_counter() - began < 20  # counted, not expanded (minutes before)
    assert f"the sweep expands to {count} jobs" in line
    assert "at most 100,000" in line


# --- item 13: a nested key of the wrong type, merged with a dotted key -----------------------

@pytest.mark.parametrize("content,argv,expected", [
    ("dataset_params: ~\n", ["--set", "dataset_params.bias_ratio=0.9"],
     "dataset_params: expected a mapping of names to values, got None"),
    ("dataset_params: 5\n", ["--set", "dataset_params.bias_ratio=0.9"],
     "dataset_params: expected a mapping of names to values, got 5"),
    ("hparams: [1]\n", ["--set", "hparams.x=1"], "hparams: expected a mapping of names to values, got [1]"),
    ("epochs: 1\n", ["--set", "hparams=5", "--set", "hparams.x=1"],
     "hparams: expected a mapping of names to values, got 5, so hparams.x cannot be set in it"),
])
def test_a_run_config_whose_nested_key_is_not_a_mapping_names_the_key(here, capsys, content, argv, expected):
    line = refuse(here, capsys, "run", "-c", write(here, "run.yaml", content), *argv)
    assert line == f"error: {expected}."


@pytest.mark.parametrize("extra,expected", [
    ("overrides: {dataset_params: ~}\ngrid: {dataset_params.bias_ratio: [0.9]}\n",
     "overrides.dataset_params: expected a mapping of names to values, got None"),
    ("overrides: {hparams: 5}\n", "overrides.hparams: expected a mapping of names to values, got 5"),
    ("grid: {dataset_params: 5, dataset_params.bias_ratio: [0.9]}\n",
     "grid.dataset_params: expected a mapping of names to values, got 5"),
    ("grid: {dataset_params: [[1]]}\n", "grid.dataset_params: expected a mapping of names to values, got [1]"),
])
def test_a_sweep_whose_nested_key_is_not_a_mapping_names_the_section_and_key(here, capsys, extra, expected):
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", SWEEP_OK + extra), "--dry-run")
    assert line == f"error: {expected}."


def test_a_mapping_given_whole_in_a_grid_is_not_shared_between_its_jobs(here):
    from debiasbench.sweep.driver import load_sweep

    path = write(here, "s.yaml", SWEEP_OK + "grid:\n  dataset_params: {image_size: 8}\n"
                                            "  dataset_params.bias_ratio: [0.9, 0.95]\n")
    jobs = load_sweep(path)
    assert sorted(j.dataset_params["bias_ratio"] for j in jobs) == [0.9, 0.95]
    assert {j.dataset_params["image_size"] for j in jobs} == {8}


# --- item 14: keys that would be ignored silently -------------------------------------------

@pytest.mark.parametrize("section,key,listed", [
    ("overrides", "seed", "seeds"), ("overrides", "method", "methods"), ("overrides", "dataset", "datasets"),
    ("overrides", "model", "models"), ("grid", "seed", "seeds"),
])
def test_a_sweep_section_naming_a_job_axis_says_which_list_to_use(here, capsys, section, key, listed):
    value = "[1, 2]" if section == "grid" else "jtt" if key == "method" else "3"
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", SWEEP_OK + f"{section}: {{{key}: {value}}}\n"))
    assert line.startswith(f"error: {section}.{key}: {key} is a job axis")
    assert line.endswith(f"list its values in {listed} instead.")


def test_base_run_on_a_method_that_is_not_a_correction_is_refused(here, capsys):
    line = refuse(here, capsys, "run", "--set", "base_run=0123456789abcdef")
    assert line == ("error: base_run applies only to corrections (methods that start from a vanilla model): "
                    "method 'vanilla' trains its model from scratch; leave base_run out.")
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", "methods: [vanilla, jtt]\ndatasets: [colored_digits]\n"
                                                            "overrides: {base_run: abc}\n"))
    assert "base_run applies only to corrections" in line


# --- item 12: an stdout that cannot be written -----------------------------------------------

def _cli(argv: list[str], stdout: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``debiasbench argv`` in a process of its own whose stdout is ``stdout``."""
    env = {**os.environ, "PYTHONUNBUFFERED": ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-c", "from debiasbench.cli import main; main()", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, timeout=300)


@contextlib.contextmanager
def closed_pipe() -> Iterator[int]:
    """The writing end of a pipe whose reader is gone (``| head -1`` once head has exited)."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield write
    finally:
        os.close(write)


FULL_DISK_LINE = ("error: standard output could not be written (No space left on device): what was printed is "
                  "incomplete.\n")


@pytest.mark.parametrize("argv", [["methods"], ["models"], ["datasets"], ["--help"], ["--version"], ["run", "--help"],
                                  ["leaderboard", "--help"], ["sweep", "s.yaml", "--dry-run"]])
def test_a_command_that_only_prints_exits_1_in_one_line_when_its_output_is_lost(tmp_path, argv):
    """Listings, help, the version and a sweep's dry run make nothing but their output."""
    (tmp_path / "s.yaml").write_text(SWEEP_OK)
    with open("/dev/full", "w") as full:
        done = _cli(argv, full, tmp_path)
    assert (done.returncode, done.stderr) == (1, FULL_DISK_LINE)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_leaderboard_written_keeps_exit_0_when_its_printed_table_is_lost(non_finite_store, tmp_path):
    argv = ["leaderboard", "--tracking-uri", non_finite_store[0], "--rule", "val_acc", "--out", str(tmp_path / "b")]
    with open("/dev/full", "w") as full:
        done = _cli(argv, full, tmp_path)
    assert (done.returncode, done.stderr) == (0, FULL_DISK_LINE)
    assert (tmp_path / "b" / "summary.csv").is_file()


def test_a_sweep_that_ran_keeps_exit_0_when_its_printed_table_is_lost(tmp_path):
    from mlflow.tracking import MlflowClient

    sweep = write(tmp_path, "s.yaml", "methods: [vanilla]\ndatasets: [{synthetic_artifacts: {n_train: 64, n_val: 32, "
                                      "n_test: 32, image_size: 16, patch_size: 3}}]\n"
                                      "overrides: {epochs: 1, batch_size: 32, device: cpu, log_model: false}\n")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    with open("/dev/full", "w") as full:
        done = _cli(["sweep", sweep, "--no-progress", "--tracking-uri", uri], full, tmp_path)
    assert done.returncode == 0 and done.stderr.endswith(FULL_DISK_LINE), done.stderr
    experiment = MlflowClient(uri).get_experiment_by_name("debiasbench")
    assert experiment is not None
    assert [r.info.status for r in MlflowClient(uri).search_runs([experiment.experiment_id])] == ["FINISHED"]


@pytest.mark.parametrize("command", ["methods", "--help"])
def test_a_listing_to_a_closed_pipe_says_nothing_and_exits_0(tmp_path, command):
    with closed_pipe() as pipe:
        done = _cli([command], pipe, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_finished_run_keeps_exit_0_and_its_record_when_stdout_fails(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["run", "--set", "epochs=1", "--set", "log_model=false", "--no-progress", "--tracking-uri", uri]
    with open("/dev/full", "w") as full:
        done = _cli(argv, full, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("error: standard output could not be written (No space left "
                                                    "on device): what was printed is incomplete.")
    experiment = MlflowClient(uri).get_experiment_by_name("debiasbench")
    assert experiment is not None
    runs = MlflowClient(uri).search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    with closed_pipe() as pipe:  # found finished this time: its metrics, printed to no reader
        again = _cli(argv, pipe, tmp_path)
    assert again.returncode == 0 and "Traceback" not in again.stderr and "error" not in again.stderr, again.stderr


# --- item 18: metrics a store holds as infinities or NaN ------------------------------------

def _log(client: Any, experiment: str, method: str, seed: int, metrics: dict[str, float]) -> str:
    from debiasbench.track.store import RUN_KEY_TAG

    run = client.create_run(experiment, tags={RUN_KEY_TAG: f"{method}-{seed}"})
    for name, value in {"method": method, "dataset": "colored_digits", "model": "small_cnn", "seed": str(seed),
                        "lr": "0.001"}.items():
        client.log_param(run.info.run_id, name, value)
    for metric, number in metrics.items():
        client.log_metric(run.info.run_id, metric, number)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.fixture
def non_finite_store(tracking_uri: str) -> tuple[str, str, str]:
    """Four seeds of two methods: ``sound`` at 0.80-0.83; ``shaky`` at 0.50 on three seeds,
    one seed with test accuracy inf (MLflow keeps 1.8e308) and one with a NaN conflicting
    accuracy."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for seed in range(4):
        _log(client, experiment, "sound", seed, {"val_acc": 0.7, "test_acc": 0.80 + 0.01 * seed,
                                                 "test_conflicting_acc": 0.6})
    ids = [_log(client, experiment, "shaky", seed, {"val_acc": 0.7, "test_acc": 0.5,
                                                    "test_conflicting_acc": 0.4 + 0.01 * seed})
           for seed in range(2)]
    ids.append(_log(client, experiment, "shaky", 2, {"val_acc": 0.7, "test_acc": 0.5,
                                                     "test_conflicting_acc": math.nan}))
    ids.append(_log(client, experiment, "shaky", 3, {"val_acc": 0.7, "test_acc": math.inf,
                                                     "test_conflicting_acc": 0.43}))
    return tracking_uri, ids[2], ids[3]


def test_non_finite_metrics_count_as_missing_with_n_per_cell_and_the_runs_named(non_finite_store, capsys):
    import pandas as pd

    uri, nan_run, inf_run = non_finite_store
    with pytest.raises(SystemExit) as exited:
        main(["leaderboard", "--tracking-uri", uri, "--rule", "val_acc", "--out", "board"])
    printed = capsys.readouterr().out
    assert exited.value.code == 0
    summary = pd.read_csv("board/summary.csv").set_index("method")
    shaky, sound = summary.loc["shaky"], summary.loc["sound"]
    assert shaky["n"] == 4 and shaky["test_acc"] == pytest.approx(0.5) and shaky["test_acc_n"] == 3
    assert shaky["test_conflicting_acc"] == pytest.approx(statistics.mean([0.40, 0.41, 0.43]))
    assert shaky["test_conflicting_acc_n"] == 3
    assert (sound["rank_test_acc"], shaky["rank_test_acc"]) == (1, 2)  # inf is no 309-digit win
    readme = Path("board/README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| shaky"))
    assert "0.500 ± 0.000 (n=3) (#2)" in row and "(n=3)" in row.split("0.500")[-1]
    assert "| sound" in readme and not re.search(r"\d{20}", readme)
    for text in (readme, printed, Path("board/index.html").read_text()):
        flat = " ".join(text.split())
        assert "Runs with non-finite metrics, counted as missing" in flat
        assert f"{inf_run} (shaky on colored_digits, seed 3: test_acc=inf)" in flat
        assert f"{nan_run} (shaky on colored_digits, seed 2: test_conflicting_acc=nan)" in flat
    assert "(n=3)" in printed


def test_the_selection_score_ignores_a_non_finite_validation_metric(tracking_uri):
    from mlflow.tracking import MlflowClient

    from debiasbench.report.leaderboard import finished_once, runs_frame
    from debiasbench.report.selection import select

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    _log(client, experiment, "m", 0, {"val_acc": math.inf, "test_acc": 0.9})
    _log(client, experiment, "m", 1, {"val_acc": 0.6, "test_acc": 0.7})
    summary = select(finished_once(runs_frame(tracking_uri)[0]), "val_acc", metrics=("test_acc",))
    assert summary.iloc[0]["selection_score"] == pytest.approx(0.6)
