"""Ctrl-C during a run says in which epoch it stopped and that the same command resumes;
the rerun resumes from the last finished epoch."""
from __future__ import annotations

from typing import Any

import pytest

from commands import Command
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.core.registry import METHODS
from debiasbench.methods.vanilla import Vanilla

ARGS = ["run", "--method", "interrupted_vanilla", "--dataset", "synthetic_artifacts",
        "--set", "dataset_params.n_train=64", "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
        "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "epochs=3",
        "--set", "batch_size=32", "--set", "device=cpu", "--set", "log_model=false"]


class InterruptedVanilla(Vanilla):
    """Vanilla whose third step (the first of epoch 2) is a Ctrl-C, once."""

    name = "interrupted_vanilla"
    steps = 0
    interrupt = True

    def loss(self, model: Any, batch: Any) -> Any:
        type(self).steps += 1
        if type(self).interrupt and type(self).steps == 3:
            type(self).interrupt = False
            raise KeyboardInterrupt
        return super().loss(model, batch)


def stop_then_resume(args: list[str], tracking_uri: str, line: str, resumed_after: int) -> list[Any]:
    """Run ``args`` until its Ctrl-C, whose last line must be ``line``, then the same command
    again, which must finish resuming after epoch ``resumed_after``; the store's runs."""
    stopped = CliRunner().invoke(app, [*args, "--tracking-uri", tracking_uri])
    assert stopped.exit_code == 130
    # the last line on stderr (the epochs' progress lines come before it)
    assert stopped.output.strip().splitlines()[-1] == line
    resumed = CliRunner().invoke(app, [*args, "--tracking-uri", tracking_uri])
    assert resumed.exit_code == 0, resumed.output
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert finished.data.tags["debiasbench.resumed_from_epoch"] == str(resumed_after)
    return runs


def test_ctrl_c_in_an_epoch_names_it_and_the_same_command_resumes(register, tracking_uri):
    register(METHODS, InterruptedVanilla)
    runs = stop_then_resume(ARGS, tracking_uri, "interrupted in epoch 2 of 3; run the same command again to "
                            "resume after epoch 1 (checkpointed).", resumed_after=1)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def test_ctrl_c_while_the_last_epoch_validates_resumes_that_epoch_as_the_line_says(tracking_uri, monkeypatch):
    """An epoch counts as done once its checkpoint is written: interrupted while validating
    (before ``last.pt``), the line names that epoch and the one before as checkpointed (it
    said 'epoch 3 of 2', 'after epoch 2'), and the rerun resumes where the line says."""
    from debiasbench.run import runner

    calls = {"validations": 0}
    evaluate = runner.evaluate

    def interrupted_validation(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("facts") is False:  # an epoch's validation, not the final evaluation
            calls["validations"] += 1
            if calls["validations"] == 1:
                raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", interrupted_validation)
    args = [a.replace("epochs=3", "epochs=2") for a in ARGS]
    args[args.index("interrupted_vanilla")] = "vanilla"
    stop_then_resume(args, tracking_uri, "interrupted in epoch 2 of 2; run the same command again to "
                     "resume after epoch 1 (checkpointed).", resumed_after=1)


def test_ctrl_c_during_an_epochs_checkpoint_write_counts_that_epoch_as_checkpointed(tracking_uri, monkeypatch):
    """A Ctrl-C during ``torch.save`` arrives once the file is written (``interrupts.deferred``):
    the line names that epoch as the one a rerun resumes after, as the rerun does."""
    from debiasbench.run import checkpoints

    save = checkpoints.save_atomic
    writes = {"last.pt": 0}

    def interrupted_after_writing(state: Any, path: Any) -> None:
        save(state, path)
        if str(path).endswith("last.pt"):
            writes["last.pt"] += 1
            if writes["last.pt"] == 1:
                raise KeyboardInterrupt  # as deferred() raises it after the write

    monkeypatch.setattr(checkpoints, "save_atomic", interrupted_after_writing)
    args = [a if a != "interrupted_vanilla" else "vanilla" for a in ARGS]
    stop_then_resume(args, tracking_uri, "interrupted in epoch 2 of 3; run the same command again to "
                     "resume after epoch 1 (checkpointed).", resumed_after=1)


class InterruptedPreparation(Vanilla):
    """Vanilla whose preparation (an auxiliary model, mining, a CAV in other methods) is
    interrupted by a Ctrl-C."""

    name = "interrupted_preparation"

    def prepare(self, ctx: Any) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_while_a_method_prepares_says_its_preparation_starts_again(register, tracking_uri):
    """Nothing of a preparation is kept: the line does not claim finished epochs are."""
    register(METHODS, InterruptedPreparation)
    args = [a if a != "interrupted_vanilla" else "interrupted_preparation" for a in ARGS]
    stopped = CliRunner().invoke(app, [*args, "--tracking-uri", tracking_uri])
    assert stopped.exit_code == 130
    assert stopped.output.strip().splitlines()[-1] == ("interrupted while interrupted_preparation prepared (not "
                                                       "checkpointed); run the same command again to start it again.")
    [killed] = MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()])
    assert killed.info.status == "KILLED"


SWEEP = """
methods: [vanilla]
datasets: [synthetic_artifacts]
seeds: [0, 1]
overrides:
  epochs: 200
  device: cpu
  log_model: false
  dataset_params: {n_train: 64, n_val: 32, n_test: 32, image_size: 16, patch_size: 3}
"""


def _interrupt_sweep(tmp_path, whole_group: bool) -> tuple[float, int, str, list[str]]:
    """Start a 2-worker sweep, wait until both jobs train, send Ctrl-C (to the process group
    as a terminal does, or to the sweep's process only); seconds to exit, exit code,
    stderr and the statuses of the runs."""
    import signal
    import time

    (tmp_path / "sweep.yaml").write_text(SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = Command(["sweep", "sweep.yaml", "-j", "2", "--tracking-uri", uri], tmp_path)
    sweep.wait_for("train epoch", count=2)
    time.sleep(1.0)  # both jobs are inside an epoch
    code, seconds = sweep.stop(signal.SIGINT, group=whole_group)
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    return seconds, code, sweep.stderr, sorted(r.info.status for r in runs)


def test_ctrl_c_stops_a_sweep_and_its_workers_within_seconds_leaving_their_runs_killed(tmp_path):
    seconds, code, stderr, statuses = _interrupt_sweep(tmp_path, whole_group=True)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert statuses == ["KILLED", "KILLED"]
    assert seconds < 20, f"{seconds:.1f} s to stop"


@pytest.mark.slow
def test_an_interrupt_of_the_sweep_alone_also_stops_its_workers(tmp_path):
    seconds, code, stderr, statuses = _interrupt_sweep(tmp_path, whole_group=False)
    assert code == 130, stderr
    assert statuses == ["KILLED", "KILLED"]
    assert seconds < 20, f"{seconds:.1f} s to stop"


ONE_WORKER_SWEEP = """
methods: [vanilla]
datasets: [synthetic_artifacts]
seeds: [0, 1]
overrides:
  epochs: 40
  device: cpu
  log_model: false
  dataset_params: {n_train: 512, n_val: 32, n_test: 32, image_size: 16, patch_size: 3}
"""


def _worker_pids(pid: int) -> list[int]:
    """The sweep's worker processes: its spawned children (not multiprocessing's resource tracker)."""
    from pathlib import Path

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")]


@pytest.mark.parametrize("signum", [pytest.param("SIGTERM"), pytest.param("SIGKILL", marks=pytest.mark.slow)])
def test_a_signal_to_one_sweep_worker_reruns_its_job_alone_and_leaves_the_other_untouched(tmp_path, signum):
    """``kill -TERM`` (or ``-KILL``) of one of a 2-worker sweep's workers: the sweep says in
    one line which worker got which signal and that its job starts again; the other
    worker's job trains on untouched (one FINISHED run, no KILLED one), the killed job
    resumes and finishes, and the sweep exits 0."""
    import os
    import re
    import signal

    (tmp_path / "sweep.yaml").write_text(ONE_WORKER_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = Command(["sweep", "sweep.yaml", "-j", "2", "--tracking-uri", uri], tmp_path)
    try:
        sweep.wait_for("train epoch", count=2)
        workers = _worker_pids(sweep.process.pid)
        assert len(workers) == 2, sweep.stderr
        os.kill(workers[0], getattr(signal, signum))
        code = sweep.process.wait(timeout=240)
    finally:
        sweep.kill()
    sweep.reader.join(5)
    stderr = " ".join(line.strip() for line in sweep.lines)  # long lines are wrapped
    assert code == 0, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    said = re.search(rf"seed (\d)\): its worker process \(pid {workers[0]}\) was stopped by {signum}.*? the job "
                     r"starts again, from its last checkpoint, and the other jobs go on", stderr)
    assert said is not None, stderr
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_job: dict[str, list[tuple[str, str | None]]] = {}
    for run in runs:
        by_job.setdefault(run.data.tags["debiasbench.run_key"], []).append(
            (run.info.status, run.data.tags.get("debiasbench.failure")))
    untouched, restarted = sorted((sorted(job) for job in by_job.values()), key=len)
    assert untouched == [("FINISHED", None)], by_job  # the other worker's job: one run, never stopped
    assert [status for status, _ in restarted] == ["FINISHED", "KILLED"], by_job
    if signum == "SIGTERM":  # the worker recorded its run KILLED; a killed one's is marked so by the rerun
        assert restarted[1][1] == "interrupted by SIGTERM", by_job
    else:
        assert "has ended" in (restarted[1][1] or ""), by_job
