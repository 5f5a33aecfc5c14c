"""Hostile configurations and hostile output (issue 28): values of the wrong type where
others are merged into them, sweeps of a hundred million jobs, keys that would be ignored
silently, an stdout that cannot be written, and metrics a store holds as infinities.
Input is refused in one line (exit 2) before anything is written; output errors never
change what finished work reports."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from debiasbench.cli import main

SWEEP_OK = "methods: [vanilla]\ndatasets: [colored_digits]\n"


def refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``debiasbench argv`` against a store in ``tmp_path``; assert exit 2, one line on
    stderr and nothing written; the line."""
    store = tmp_path / "store.db"
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--tracking-uri", f"sqlite:///{store}"])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not store.exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / ".debiasbench").exists()
    return lines[0]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def write(folder: Path, name: str, content: str) -> str:
    path = folder / name
    path.write_text(content)
    return str(path)


# --- item 3: a sweep of 10^8 jobs is counted, not expanded -----------------------------------

def _axis(key: str, n: int) -> str:
    return f"  {key}: [{', '.join(str(i) for i in range(n))}]\n"


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


@pytest.mark.parametrize("command", ["methods", "models"])
def test_a_listing_to_a_full_disk_is_one_line_and_exit_1(tmp_path, command):
    with open("/dev/full", "w") as full:
        done = _cli([command], full, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ("error: standard output could not be written (No space left on device): what was "
                           "printed is incomplete.\n")


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
