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

import pytest
from mlflow.tracking import MlflowClient

from debiasbench.track.store import FAILURE_TAG

TINY = ["--set", "dataset_params.n_train=64", "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
        "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "batch_size=32",
        "--set", "device=cpu", "--set", "log_model=false"]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


class Command:
    """A ``debiasbench`` command in a process of its own (a session of its own, so that a
    signal can go to its whole process group as a terminal's or a scheduler's does), its
    stderr read as it comes."""

    def __init__(self, args: list[str], cwd: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "debiasbench.cli", *args], cwd=cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "default"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")),  # type: ignore[union-attr]
                                       daemon=True)
        self.reader.start()

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while sum(text in line for line in self.lines) < count:
            assert time.time() < deadline and self.process.poll() is None, self.stderr
            time.sleep(0.1)

    def stop(self, signum: int, group: bool) -> tuple[int, float]:
        """Send ``signum``; the exit code and the seconds it took to exit."""
        began = time.monotonic()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self.reader.join(5)
        return code, time.monotonic() - began

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


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
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"]
    assert all(r.data.tags[FAILURE_TAG] == "interrupted by SIGTERM" for r in runs)
    assert seconds < 10, f"{seconds:.1f} s to stop"


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
    assert [r.info.status for r in all_runs(uri)] == ["KILLED", "KILLED"]
    assert seconds < 10, f"{seconds:.1f} s to stop"


# -- a refused base model is the correction's recorded failure ------------------------------


class Payload:
    """What a hostile ``model.pt`` holds: a pickle that calls a function when loaded."""

    def __reduce__(self) -> tuple:
        return (print, ("the payload ran",))


def test_a_base_model_that_is_not_plain_weights_fails_the_correction_in_one_line_and_is_recorded(
        tracking_uri, tmp_path, capfd):
    import pickle

    from typer.testing import CliRunner

    from debiasbench.cli import app

    base = ["-d", "synthetic_artifacts", *TINY, "--set", "log_model=true", "--set", "epochs=1", "--no-progress",
            "--tracking-uri", tracking_uri]
    made = CliRunner().invoke(app, ["run", "-m", "vanilla", *base])
    assert made.exit_code == 0, made.output
    [vanilla] = all_runs(tracking_uri)
    [weights] = (tmp_path / "mlruns").rglob(f"{vanilla.info.run_id}/artifacts/model.pt")
    weights.write_bytes(pickle.dumps(Payload()))
    capfd.readouterr()

    corrected = CliRunner().invoke(app, ["run", "-m", "rrclarc", *base, "--set", f"base_run={vanilla.info.run_id}"])
    assert corrected.exit_code == 1
    lines = [line for line in corrected.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"run failed: base model model.pt of run {vanilla.info.run_id} "
                                                   "refused: not plain weights"), corrected.output
    assert "the payload ran" not in corrected.output + capfd.readouterr().out
    [failed] = [r for r in all_runs(tracking_uri) if r.info.run_id != vanilla.info.run_id]
    assert failed.info.status == "FAILED"
    assert failed.data.tags[FAILURE_TAG].startswith("base model model.pt of run ")
    assert "refused: not plain weights" in failed.data.tags[FAILURE_TAG]
