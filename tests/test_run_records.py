"""What a run leaves in the store when it is stopped, resumed, refused or raced: SIGTERM
ends runs KILLED as Ctrl-C does, a resumed run's record equals an uninterrupted one's, a
refused base model is a FAILED run with its reason, refused input leaves no claim, and a
run whose holder is alive is never marked KILLED, whatever the working directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from commands import Command
from mlflow.tracking import MlflowClient

from debiasbench.core.registry import METHODS
from debiasbench.methods.vanilla import Vanilla
from debiasbench.track.store import FAILURE_TAG

TINY = ["--set", "dataset_params.n_train=64", "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
        "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "batch_size=32",
        "--set", "device=cpu", "--set", "log_model=false"]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


# -- SIGTERM is Ctrl-C -------------------------------------------------------------------


def test_sigterm_to_a_run_ends_it_killed_with_its_reason_and_exit_code_143(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = Command(["run", "-d", "synthetic_artifacts", *TINY, "--set", "epochs=500", "--tracking-uri", uri],
                      tmp_path)
    command.wait_for("train epoch 2/")  # one line per epoch where stderr is not a terminal
    code, _ = command.stop(signal.SIGTERM, group=False)
    assert code == 143, command.stderr
    assert "Traceback" not in command.stderr and "leaked" not in command.stderr, command.stderr
    assert command.stderr.strip().splitlines()[-1].startswith("SIGTERM: interrupted in epoch ")
    [stopped] = all_runs(uri)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags[FAILURE_TAG] == "interrupted by SIGTERM"



def test_ctrl_c_to_a_run_ends_it_killed_with_its_checkpoint_within_seconds(tmp_path):
    """Ctrl-C as a terminal sends it (to the process group) mid-epoch: the process exits
    within seconds (about 1 s on a 2-core machine with two busy loops beside it; 10 s
    allowed here), the run is KILLED, and the checkpoint the line names is on disk."""
    import re

    import torch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = Command(["run", "-d", "synthetic_artifacts", *TINY, "--set", "epochs=500", "--tracking-uri", uri],
                      tmp_path)
    command.wait_for("train epoch 2/")
    time.sleep(0.3)  # inside an epoch
    code, seconds = command.stop(signal.SIGINT, group=True)
    assert code == 130, command.stderr
    assert seconds < 10, f"{seconds:.1f} s to exit"
    assert "Traceback" not in command.stderr and "leaked" not in command.stderr, command.stderr
    line = command.stderr.strip().splitlines()[-1]
    said = re.fullmatch(r"interrupted in epoch (\d+) of 500; run the same command again to resume after epoch "
                        r"(\d+) \(checkpointed\)\.", line)
    assert said is not None, line
    [stopped] = all_runs(uri)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags[FAILURE_TAG] == "interrupted by the user"
    [last] = (tmp_path / ".debiasbench" / "checkpoints").glob("*/last.pt")
    assert torch.load(last, weights_only=False)["epoch"] == int(said[2]) >= 1


SWEEP = """
methods: [vanilla]
datasets: [synthetic_artifacts]
seeds: [0, 1]
overrides:
  epochs: 500
  device: cpu
  log_model: false
  dataset_params: {n_train: 64, n_val: 32, n_test: 32, image_size: 16, patch_size: 3}
"""


def test_sigterm_to_a_sweeps_process_group_ends_every_run_killed_within_seconds(tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = Command(["sweep", "sweep.yaml", "-j", "2", "--tracking-uri", uri], tmp_path)
    command.wait_for("train epoch", count=2)
    time.sleep(1.0)  # both jobs are inside an epoch
    code, seconds = command.stop(signal.SIGTERM, group=True)  # as a scheduler stops a job
    assert code == 143, command.stderr
    assert "Traceback" not in command.stderr and "leaked" not in command.stderr, command.stderr
    runs = all_runs(uri)
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"], [r.data.tags.get(FAILURE_TAG) for r in runs]
    assert all(r.data.tags[FAILURE_TAG] == "interrupted by SIGTERM" for r in runs)
    assert seconds < 20, f"{seconds:.1f} s to stop"


@pytest.mark.slow
def test_sigterm_to_the_sweep_alone_stops_its_workers_too(tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = Command(["sweep", "sweep.yaml", "-j", "2", "--tracking-uri", uri], tmp_path)
    command.wait_for("train epoch", count=2)
    time.sleep(1.0)
    code, seconds = command.stop(signal.SIGTERM, group=False)  # docker stop: to the main process
    assert code == 143, command.stderr
    assert "Traceback" not in command.stderr and "leaked" not in command.stderr, command.stderr
    runs = all_runs(uri)
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"], [r.data.tags.get(FAILURE_TAG) for r in runs]
    assert all(r.data.tags[FAILURE_TAG] == "interrupted by SIGTERM" for r in runs)
    assert seconds < 20, f"{seconds:.1f} s to stop"


# -- a refused base model is the correction's recorded failure ------------------------------


class Payload:
    """What a hostile ``model.pt`` holds: a pickle that calls a function when loaded."""

    def __reduce__(self) -> tuple:
        return (print, ("the payload ran",))


def vanilla_with_logged_weights(tracking_uri: str, tmp_path: Path) -> tuple[list[str], str, Path]:
    """A 1-epoch vanilla run with ``log_model``: the keys a correction of it shares, its run
    id and its ``model.pt`` artifact on disk (the store's artifacts are under ``tmp_path``)."""
    from typer.testing import CliRunner

    from debiasbench.cli import app

    base = ["-d", "synthetic_artifacts", *TINY, "--set", "log_model=true", "--set", "epochs=1", "--no-progress",
            "--tracking-uri", tracking_uri]
    made = CliRunner().invoke(app, ["run", "-m", "vanilla", *base])
    assert made.exit_code == 0, made.output
    [vanilla] = all_runs(tracking_uri)
    [weights] = (tmp_path / "mlruns").rglob(f"{vanilla.info.run_id}/artifacts/model.pt")
    return base, vanilla.info.run_id, weights


def test_a_base_model_that_is_not_plain_weights_fails_the_correction_in_one_line_and_is_recorded(
        tracking_uri, tmp_path, capfd):
    import pickle

    from typer.testing import CliRunner

    from debiasbench.cli import app

    base, vanilla_id, weights = vanilla_with_logged_weights(tracking_uri, tmp_path)
    weights.write_bytes(pickle.dumps(Payload()))
    capfd.readouterr()

    corrected = CliRunner().invoke(app, ["run", "-m", "rrclarc", *base, "--set", f"base_run={vanilla_id}"])
    assert corrected.exit_code == 1
    lines = [line for line in corrected.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"run failed: base model model.pt of run {vanilla_id} "
                                                   "refused: not plain weights"), corrected.output
    assert "the payload ran" not in corrected.output + capfd.readouterr().out
    [failed] = [r for r in all_runs(tracking_uri) if r.info.run_id != vanilla_id]
    assert failed.info.status == "FAILED"
    assert failed.data.tags[FAILURE_TAG].startswith("base model model.pt of run ")
    assert "refused: not plain weights" in failed.data.tags[FAILURE_TAG]


def test_a_base_model_that_is_a_folder_or_empty_fails_the_correction_naming_the_base_run(tracking_uri, tmp_path):
    """Whatever keeps the base model's weights from loading is the correction's recorded
    failure in one line naming the base run, never the temporary copy's path."""
    import shutil

    from typer.testing import CliRunner

    from debiasbench.cli import app

    base, vanilla_id, weights = vanilla_with_logged_weights(tracking_uri, tmp_path)
    where = f"base model model.pt of run {vanilla_id}"

    def empty_file() -> None:
        weights.write_bytes(b"")

    def folder() -> None:
        weights.unlink()
        weights.mkdir()
        (weights / "x").write_bytes(b"x")

    for make, expected in [(empty_file, f"{where} cannot be read: EOFError: the file ends early"),
                           (folder, f"{where} refused: it is a folder, not a regular file")]:
        if weights.is_dir():
            shutil.rmtree(weights)
        make()
        corrected = CliRunner().invoke(app, ["run", "-m", "rrclarc", *base, "--rerun",
                                             "--set", f"base_run={vanilla_id}"])
        lines = [line for line in corrected.output.splitlines() if line.strip()]
        assert corrected.exit_code == 1 and len(lines) == 1, corrected.output
        assert lines[0].startswith(f"run failed: {expected}"), corrected.output
        [failed] = [r for r in all_runs(tracking_uri) if r.info.run_name.startswith("rrclarc")
                    and r.data.tags.get(FAILURE_TAG, "").startswith(expected)]
        assert failed.info.status == "FAILED"


def test_a_base_model_that_is_a_pipe_or_a_device_is_refused_for_what_it_is(tracking_uri, tmp_path):
    """A base run's model.pt that cannot be downloaded because it is a named pipe or a link
    to a device is named for what it is, not reported missing ('was it run with
    log_model=false?'), in one line, without waiting on the pipe."""
    base, vanilla_id, weights = vanilla_with_logged_weights(tracking_uri, tmp_path)

    def debiasbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "debiasbench.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    where = f"error: base model model.pt of run {vanilla_id} refused: it"
    for make, expected in [(lambda: os.mkfifo(weights), f"{where} is a named pipe (FIFO), not a regular file."),
                           (lambda: weights.symlink_to("/dev/zero"),
                            f"{where} is a character device, not a regular file.")]:
        weights.unlink()
        make()
        corrected = debiasbench("run", "-m", "rrclarc", *base, "--set", f"base_run={vanilla_id}")
        assert corrected.returncode == 2 and corrected.stderr.strip() == expected, corrected.stderr


# -- a resumed run's record equals an uninterrupted one's -----------------------------------

#: Seconds each training step of ``SlowVanilla`` sleeps: a run's ``train_seconds`` is at
#: least this times its steps.
STEP_SLEEP = 0.03


class SlowVanilla(Vanilla):
    """Vanilla whose steps take at least ``STEP_SLEEP`` s; Ctrl-C at step ``stop_at`` (counted
    over the process) once, or, with ``stop_before_explaining``, once all epochs are done
    and checkpointed, before the run's explanation metrics."""

    name = "slow_vanilla"
    steps = 0
    stop_at = -1
    stop_before_explaining = False

    def loss(self, model: Any, batch: Any) -> Any:
        type(self).steps += 1
        if type(self).steps == type(self).stop_at:
            type(self).stop_at = -1
            raise KeyboardInterrupt
        time.sleep(STEP_SLEEP)
        return super().loss(model, batch)

    def artifact_cav(self) -> Any:
        if type(self).stop_before_explaining:
            type(self).stop_before_explaining = False
            raise KeyboardInterrupt
        return super().artifact_cav()


def curves(tracker: Any, run_id: str) -> dict[tuple[str, int], float]:
    """Every point of a run's ``epoch/`` metrics: its value by metric and step."""
    client = tracker.client
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("epoch/")]
    return {(k, m.step): m.value for k in keys for m in client.get_metric_history(run_id, k)}


def uninterrupted(config: Any, tracker: Any) -> Any:
    from debiasbench.run.runner import run
    from debiasbench.track.store import Tracker

    SlowVanilla.stop_at, SlowVanilla.stop_before_explaining = -1, False
    return run(config, Tracker(tracker.uri, "uninterrupted"), progress=False)


def test_a_run_resumed_after_ctrl_c_reports_every_epochs_curves_and_its_whole_training_time(
        register, tracker, tmp_path):
    from debiasbench.run.runner import run
    from debiasbench.testing import one_thread, tiny_config

    register(METHODS, SlowVanilla)
    config = tiny_config(method="slow_vanilla", epochs=3, checkpoint_dir=str(tmp_path / "ckpt"), log_model=False)
    with one_thread():
        whole = uninterrupted(config, tracker)
        steps_per_epoch = SlowVanilla.steps // 3
        SlowVanilla.steps, SlowVanilla.stop_at = 0, steps_per_epoch + 2  # in epoch 2, after epoch 1's checkpoint
        with pytest.raises(KeyboardInterrupt):
            run(config, tracker, progress=False)
        SlowVanilla.steps = 0
        resumed = run(config, tracker, progress=False)
    assert SlowVanilla.steps == 2 * steps_per_epoch  # it trained epochs 2 and 3 only
    assert set(resumed.metrics) == set(whole.metrics)
    assert curves(tracker, resumed.run_id) == pytest.approx(curves(tracker, whole.run_id))
    assert sorted(step for key, step in curves(tracker, resumed.run_id) if key == "epoch/train_loss") == [1, 2, 3]
    assert set(tracker.client.get_run(resumed.run_id).data.metrics) == set(
        tracker.client.get_run(whole.run_id).data.metrics)
    # the training time of all three epochs: more than the two trained after the resume
    assert resumed.metrics["train_seconds"] >= 3 * steps_per_epoch * STEP_SLEEP
    assert resumed.metrics["samples_per_second"] == pytest.approx(
        whole.metrics["samples_per_second"] * whole.metrics["train_seconds"] / resumed.metrics["train_seconds"])


def test_a_run_stopped_after_its_last_checkpoint_resumes_to_a_full_record(register, tracker, tmp_path):
    from debiasbench.run.runner import run
    from debiasbench.testing import one_thread, tiny_config

    register(METHODS, SlowVanilla)
    config = tiny_config(method="slow_vanilla", epochs=2, checkpoint_dir=str(tmp_path / "ckpt"), log_model=False)
    with one_thread():
        whole = uninterrupted(config, tracker)
        SlowVanilla.steps, SlowVanilla.stop_before_explaining = 0, True  # every epoch done and checkpointed
        with pytest.raises(KeyboardInterrupt):
            run(config, tracker, progress=False)
        trained = SlowVanilla.steps
        SlowVanilla.steps = 0
        resumed = run(config, tracker, progress=False)
    assert SlowVanilla.steps == 0  # nothing left to train
    stored = tracker.client.get_run(resumed.run_id)
    assert stored.info.status == "FINISHED" and stored.data.tags["debiasbench.resumed_from_epoch"] == "2"
    assert resumed.metrics["train_seconds"] >= trained * STEP_SLEEP > 0
    assert resumed.metrics["samples_per_second"] > 0
    assert curves(tracker, resumed.run_id) == pytest.approx(curves(tracker, whole.run_id))
    assert set(stored.data.metrics) == set(tracker.client.get_run(whole.run_id).data.metrics)


# -- a run is marked KILLED only when its holder is provably gone ---------------------------


def test_the_same_job_from_two_working_directories_runs_once_and_nothing_alive_is_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # one absolute store
    (tmp_path / "store").mkdir()
    # about 0.3 s an epoch on an idle 2-core CPU: the first is still training when the second starts
    args = ["run", "-d", "synthetic_artifacts", *TINY, "--set", "dataset_params.n_train=256", "--set",
            "dataset_params.image_size=32", "--set", "dataset_params.patch_size=5", "--set", "epochs=60",
            "--tracking-uri", uri]
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"  # claims in each one's .debiasbench
    first_dir.mkdir()
    second_dir.mkdir()
    first = Command(args, first_dir)
    first.wait_for("train epoch 1/")
    second = Command([*args, "--no-progress"], second_dir)
    assert second.process.wait(timeout=120) == 2, second.stderr
    second.reader.join(5)
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("error: another process (") and "is running this job" in line, second.stderr
    assert "Traceback" not in second.stderr
    # the first was left alone: its only run is still RUNNING, until the first itself ends it
    assert [r.info.status for r in all_runs(uri)] == ["RUNNING"]
    first.stop(signal.SIGINT, group=False)
    runs = all_runs(uri)
    assert [(r.info.status, r.data.tags.get(FAILURE_TAG)) for r in runs] == [("KILLED", "interrupted by the user")]


def test_a_run_whose_holder_was_killed_is_taken_over_from_another_working_directory(tmp_path):
    from debiasbench.contract.config import resolve_config
    from debiasbench.run.runner import run
    from debiasbench.track.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "first").mkdir()
    first = Command(["run", "-d", "synthetic_artifacts", *TINY, "--set", "epochs=40", "--tracking-uri", uri],
                    tmp_path / "first")
    first.wait_for("train epoch 2/")
    first.stop(signal.SIGKILL, group=True)
    [left] = all_runs(uri)
    assert left.info.status == "RUNNING"
    raw = {"dataset": "synthetic_artifacts", "epochs": 40, "batch_size": 32, "device": "cpu", "log_model": False,
           "dataset_params": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 16, "patch_size": 3},
           "checkpoint_dir": str(tmp_path / "second")}
    result = run(resolve_config(raw), Tracker(uri, "debiasbench"), progress=False)
    killed = MlflowClient(uri).get_run(left.info.run_id)
    assert killed.info.status == "KILLED"
    assert "has ended" in killed.data.tags[FAILURE_TAG]  # its pid is gone: no wait for its heartbeat
    assert MlflowClient(uri).get_run(result.run_id).info.status == "FINISHED"


def _held_run(tracker: Any, key: str, beat_age: float) -> str:
    """A RUNNING run of ``key`` held by a process of another machine whose last heartbeat
    was ``beat_age`` seconds ago."""
    from debiasbench.track.heartbeat import HEARTBEAT_TAG, HOLDER_SPACE_TAG, HOLDER_TAG
    from debiasbench.track.store import RUN_KEY_TAG

    return tracker.client.create_run(tracker.experiment_id, tags={
        RUN_KEY_TAG: key, HOLDER_TAG: "elsewhere:4242", HOLDER_SPACE_TAG: "another machine",
        HEARTBEAT_TAG: f"{time.time() - beat_age:.3f}"}).info.run_id


def test_a_run_with_a_fresh_heartbeat_makes_its_job_busy_and_one_without_is_taken_over(tracker, tmp_path):
    from debiasbench.run.claims import JobBusy
    from debiasbench.run.runner import run
    from debiasbench.testing import tiny_config
    from debiasbench.track.heartbeat import timeout

    config = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1, log_model=False)
    alive = _held_run(tracker, config.run_key(), beat_age=1.0)
    with pytest.raises(JobBusy, match=r"another process \(elsewhere:4242, heartbeat \d+ s ago\) is running this job"):
        run(config, tracker, progress=False)
    assert [r.info.status for r in tracker.search()] == ["RUNNING"]  # left alone, nothing of ours
    tracker.client.set_terminated(alive, "FINISHED")

    again = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1, log_model=False, seed=1)
    silent = _held_run(tracker, again.run_key(), beat_age=timeout() + 5)
    result = run(again, tracker, progress=False)
    assert tracker.client.get_run(silent).info.status == "KILLED"
    assert "sent no heartbeat for" in tracker.client.get_run(silent).data.tags[FAILURE_TAG]
    assert tracker.client.get_run(result.run_id).info.status == "FINISHED"


def test_of_two_runs_of_a_job_created_at_once_the_later_gives_way(tracker, tmp_path):
    from debiasbench.run.claims import RunHeld
    from debiasbench.testing import tiny_config

    config = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1, log_model=False)
    first = _held_run(tracker, config.run_key(), beat_age=0.0)  # created just before ours, still alive
    with pytest.raises(RunHeld, match=f"run {first}"):
        with tracker.start(config):
            pass
    assert [r.info.run_id for r in tracker.search()] == [first]  # ours ended and deleted at once
    assert tracker.client.get_run(first).info.status == "RUNNING"


# -- a claim leaves nothing behind -----------------------------------------------------------


def test_input_refused_after_the_claim_was_taken_leaves_no_claim(tracking_uri, tmp_path):
    from typer.testing import CliRunner

    from debiasbench.cli import app

    client = MlflowClient(tracking_uri)  # a store whose experiment 'gone' was deleted
    client.delete_experiment(client.create_experiment("gone"))
    refused = CliRunner().invoke(app, ["run", "-d", "synthetic_artifacts", *TINY, "--set", "epochs=1",
                                       "--set", "experiment=gone", "--no-progress", "--tracking-uri", tracking_uri])
    assert refused.exit_code == 2
    assert refused.output.strip().startswith("error: experiment 'gone' was deleted"), refused.output
    assert not (tmp_path / ".debiasbench").exists()  # no claim, no claims folder, no checkpoint folder


def test_a_finished_run_leaves_no_claim_file(tracker, tmp_path):
    from debiasbench.run.runner import run
    from debiasbench.testing import tiny_config

    (tmp_path / "ckpt").mkdir()  # a checkpoint folder of the user's stays
    run(tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1, log_model=False), tracker, progress=False)
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_claim_taken_while_its_holder_removes_the_file_is_still_exclusive(tmp_path):
    from debiasbench.run.claims import Claim

    holder, waiter, third = (Claim(tmp_path / "ckpt", "key") for _ in range(3))
    assert holder.acquire(wait=False)
    took: list[bool] = []
    waiting = threading.Thread(target=lambda: took.append(waiter.acquire(wait=True)))
    waiting.start()
    time.sleep(0.3)  # the waiter has opened the file and waits for its lock
    assert took == []
    holder.release()  # removes the file the waiter locks next
    waiting.join(10)
    assert took == [True] and waiter.path.exists()
    assert not third.acquire(wait=False)  # the waiter holds the claim on the file the path names
    waiter.release()
    assert third.acquire(wait=False)
    third.release()
    assert list((tmp_path / "ckpt").rglob("*.lock")) == []
