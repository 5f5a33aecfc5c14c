"""The Slurm launcher: its settings (command line, a sweep file's ``launcher:`` section) and,
against a real single-node Slurm started by the fixture (``tests/slurm_cluster.py``), a
sweep's jobs run as Slurm jobs once each, a cancelled job resumed from its checkpoint by
the next start of the sweep, a job past its time limit reported with Slurm's reason, and a
sweep killed on the login node picking up its running jobs without submitting them again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from debiasbench.core.errors import ConfigError
from debiasbench.sweep.driver import load_launcher_section, load_sweep, run_sweep
from debiasbench.sweep.launchers import make_launcher
from debiasbench.sweep.monitor import SweepLines
from debiasbench.sweep.slurm import ALIVE, STATE_FOLDER, check_memory, parse_time, sbatch_options

sys.path.insert(0, str(Path(__file__).parent))
from deadlines import deadline  # noqa: E402
from slurm_cluster import SlurmCluster, missing_programs, start_cluster  # noqa: E402
from test_launchers import runs_by_status  # noqa: E402

TINY = "{n_train: 100, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}"
#: Epochs of a second or so each on a busy 2-core machine: a job long enough to be cancelled.
SLOWER = "{n_train: 3000, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}"


def sweep_file(tmp_path: Path, body: str, epochs: int = 1, data: str = TINY) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""
        datasets: [synthetic_artifacts]
        methods: [vanilla]
        overrides:
          epochs: {epochs}
          device: cpu
          log_model: false
          dataset_params: {data}
    """) + textwrap.dedent(body))
    return path


# --- settings, no cluster needed ---------------------------------------------------------

def test_time_limits_are_read_as_slurm_reads_them():
    assert parse_time("90") == 90 and parse_time(5) == 5
    assert parse_time("1:30") == 2  # MM:SS, seconds rounded up
    assert parse_time("2:00:00") == 120
    assert parse_time("1-00") == 1440 and parse_time("1-02:30") == 1590 and parse_time("0-00:00:30") == 1
    for bad in ("soon", "1h", "0", "-1", "1:2:3:4"):
        with pytest.raises(ConfigError, match="--time"):
            parse_time(bad)


def test_memory_and_extra_sbatch_options_are_checked():
    assert check_memory("16G") == "16G" and check_memory("16gb") == "16G" and check_memory(500) == "500"
    with pytest.raises(ConfigError, match="--mem"):
        check_memory("lots")
    assert sbatch_options(["--qos=high", "--constraint a100", "--exclusive"]) == {
        "qos": "high", "constraint": "a100", "exclusive": True}
    with pytest.raises(ConfigError, match="long sbatch option"):
        sbatch_options(["-p gpu"])
    with pytest.raises(ConfigError, match="set by the launcher"):
        sbatch_options(["--output=x.log"])


def test_make_launcher_checks_slurm_settings():
    launcher = make_launcher("slurm", cpus_per_run=2, gpus_per_run=1, memory="8G", partition="gpu", time="1:00:00",
                             account="lab", max_running=4, sbatch=["--qos=high"], log_folder="logs")
    parameters = launcher.settings.parameters("name")  # type: ignore[attr-defined]
    assert parameters["cpus_per_task"] == 2 and parameters["gpus_per_node"] == 1 and parameters["time"] == 60
    assert parameters["partition"] == "gpu" and parameters["account"] == "lab" and parameters["array_parallelism"] == 4
    assert parameters["additional_parameters"] == {"qos": "high", "mem": "8G"}
    assert make_launcher("slurm").settings.parameters("x")["time"] is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="whole CPUs"):
        make_launcher("slurm", cpus_per_run=0.5)
    with pytest.raises(ConfigError, match="whole GPUs"):
        make_launcher("slurm", gpus_per_run=0.25)
    with pytest.raises(ConfigError, match="--max-running"):
        make_launcher("slurm", max_running=0)
    with pytest.raises(ConfigError, match="unknown launcher setting 'nodes'"):
        make_launcher("slurm", nodes=2)


def test_a_sweep_files_launcher_section_is_checked(tmp_path):
    path = sweep_file(tmp_path, """
        launcher: {name: slurm, partition: gpu, time: "2:00:00", gpus_per_run: 1, sbatch: [--qos=high]}
    """)
    assert load_launcher_section(path) == {"name": "slurm", "partition": "gpu", "time": "2:00:00",
                                           "gpus_per_run": 1, "sbatch": ["--qos=high"]}
    assert len(load_sweep(path)) == 1  # the section is not a job key
    path.write_text(path.read_text().replace("partition: gpu", "partiton: gpu"))
    with pytest.raises(ConfigError, match="unknown launcher key 'partiton'"):
        load_launcher_section(path)
    path.write_text(path.read_text().replace("partiton: gpu", "max_running: many"))
    with pytest.raises(ConfigError, match="launcher.max_running: expected an integer"):
        load_launcher_section(path)


def test_the_command_line_wins_over_the_sweep_files_launcher_section(tmp_path, monkeypatch):
    from debiasbench import cli

    seen: dict = {}

    def fake_make_launcher(name, **settings):
        seen.update(settings, name=name)
        raise ConfigError("stop here")

    monkeypatch.setattr("debiasbench.sweep.launchers.make_launcher", fake_make_launcher)
    path = sweep_file(tmp_path, "launcher: {name: slurm, partition: cpu, time: 30, max_running: 2}\n")
    with pytest.raises(SystemExit):
        cli.main(["sweep", str(path), "--partition", "gpu", "--sbatch=--qos=high"])
    assert seen == {"name": "slurm", "partition": "gpu", "time": 30, "max_running": 2, "sbatch": ["--qos=high"]}


def test_a_sweep_started_again_finds_its_folder_however_its_file_is_spelled(tmp_path):
    from debiasbench.sweep.launchers import JobContext
    from debiasbench.sweep.slurm import sweep_folder

    def folder(spelling: str, uri: str = "http://mlflow:5000") -> Path:
        return sweep_folder(JobContext(uri, {"debiasbench.sweep_file": spelling}, cwd=str(tmp_path)))

    assert folder("sweep.yaml") == folder("./sweep.yaml") == folder(str(tmp_path / "sweep.yaml"))
    assert folder("sweep.yaml").parent == tmp_path / STATE_FOLDER
    assert folder("other.yaml") != folder("sweep.yaml") != folder("sweep.yaml", "http://elsewhere:5000")


def test_without_slurms_commands_the_launcher_says_so_in_one_line(tmp_path, tracking_uri, monkeypatch):
    from debiasbench.core.errors import UserError
    from debiasbench.sweep.launchers import JobContext

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    jobs = load_sweep(sweep_file(tmp_path, ""))
    with pytest.raises(UserError, match="sbatch is not on PATH"):
        list(make_launcher("slurm")(jobs, JobContext(tracking_uri, {}, cwd=str(tmp_path))))


# --- a real Slurm -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd on this machine for the module's tests, stopped by PID."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    pytest.importorskip("submitit")
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def recorded_jobs(workdir: Path) -> dict:
    """run key -> recorded Slurm job, over every sweep folder of ``workdir``."""
    out: dict = {}
    for path in (workdir / STATE_FOLDER).glob("*/jobs.json"):
        out.update(json.loads(path.read_text())["jobs"])
    return out


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the sweep ended (code {process.returncode}) while waiting for {what}: "
                        f"{process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
def test_a_small_sweep_runs_every_job_once_as_a_slurm_job(slurm, tmp_path, tracking_uri):
    jobs = load_sweep(sweep_file(tmp_path, "seeds: [0, 1, 2]\n"))
    lines: list[str] = []
    views: list[str] = []
    before = set(slurm.jobs())
    began = time.monotonic()
    with deadline(300):
        results = run_sweep(jobs, tracking_uri, log=lines.append, view=SweepLines(views.append, interval=0),
                            launcher=make_launcher("slurm", max_running=2, poll_seconds=1, memory="500M"))
    print(f"3 jobs on Slurm in {time.monotonic() - began:.1f} s")
    assert [r.status for r in results] == ["FINISHED"] * 3, [r.reason for r in results]
    assert lines[-1].startswith("[3 done · 0 failed · 0 left")
    assert any("train epoch 1/1" in line for line in views), views  # progress came back from the jobs
    store = runs_by_status(tracking_uri)
    assert store == {"FINISHED": Counter({job.run_key(): 1 for job in jobs})}
    known = {job_id: state for job_id, state in slurm.jobs().items() if job_id not in before}
    assert sorted(state for state, _ in known.values()) == ["COMPLETED"] * 3
    assert len({job_id.split("_")[0] for job_id in known}) == 1  # one job array
    assert recorded_jobs(tmp_path) == {}  # every result collected
    logs = list((tmp_path / STATE_FOLDER).glob("*/logs/*/*_log.err"))
    assert len(logs) == 3
    again = run_sweep(jobs, tracking_uri, log=lines.append, launcher=make_launcher("slurm", poll_seconds=1))
    assert [r.status for r in again] == ["SKIPPED"] * 3 and len(slurm.jobs()) == len(before) + 3  # none submitted


@pytest.mark.slow
def test_a_job_slurm_refuses_is_one_line_naming_sbatchs_reason(slurm, tmp_path, tracking_uri):
    from debiasbench.core.errors import UserError

    jobs = load_sweep(sweep_file(tmp_path, ""))
    with pytest.raises(UserError, match="sbatch refused the sweep's jobs: .*invalid partition") as refused:
        run_sweep(jobs, tracking_uri, log=lambda line: None, launcher=make_launcher("slurm", partition="nowhere"))
    assert "\n" not in str(refused.value), str(refused.value)
    assert recorded_jobs(tmp_path) == {}


def _only_job(slurm: SlurmCluster, state: str) -> str:
    ids = [job_id for job_id, (s, _) in slurm.jobs().items() if s == state]
    return ids[0] if len(ids) == 1 else ""


@pytest.mark.slow
def test_a_cancelled_job_resumes_from_its_checkpoint_when_the_sweep_runs_again(slurm, tmp_path, tracking_uri):
    path = sweep_file(tmp_path, "launcher: {name: slurm, poll_seconds: 1}\n", epochs=12, data=SLOWER)
    command = [sys.executable, "-m", "debiasbench.cli", "sweep", str(path), "--tracking-uri", tracking_uri,
               "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / ".debiasbench" / "checkpoints"
    wait_until(lambda: checkpoints.is_dir() and any(checkpoints.rglob("*.pt")), 240, "a checkpoint", first)
    job_id = _only_job(slurm, "RUNNING")
    assert job_id
    slurm.command("scancel", job_id)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    said = " ".join(err.split())  # the console wraps lines
    assert (f"Slurm job {job_id} was cancelled (scancel or an administrator): state CANCELLED; its run resumes "
            "from its last checkpoint when the sweep runs again") in said, err
    assert slurm.jobs()[job_id][0] == "CANCELLED"

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    store = runs_by_status(tracking_uri)
    job = load_sweep(path)[0]
    assert store["FINISHED"] == Counter({job.run_key(): 1})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(job.experiment)
    assert experiment is not None
    finished = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")[0]
    assert int(finished.data.tags["debiasbench.resumed_from_epoch"]) >= 1  # not trained from scratch
    assert "RUNNING" not in store


@pytest.mark.slow
def test_a_job_past_its_time_limit_is_reported_with_slurms_reason(slurm, tmp_path, tracking_uri):
    jobs = load_sweep(sweep_file(tmp_path, "", epochs=100_000))
    lines: list[str] = []
    began = time.monotonic()
    with deadline(400):
        results = run_sweep(jobs, tracking_uri, log=lines.append,
                            launcher=make_launcher("slurm", time="1", poll_seconds=2))
    print(f"timed out after {time.monotonic() - began:.1f} s")
    assert [r.status for r in results] == ["FAILED"]
    reason = results[0].reason
    assert "reached its time limit: state TIMEOUT, reason TimeLimit" in reason, reason
    assert "resumes from its last checkpoint" in reason, reason
    assert "TIMEOUT" in lines[-1]


@pytest.mark.slow
def test_a_sweep_killed_on_the_login_node_picks_up_its_slurm_jobs_without_running_them_twice(
        slurm, tmp_path, tracking_uri):
    path = sweep_file(tmp_path, """
        seeds: [0, 1, 2]
        launcher: {name: slurm, poll_seconds: 1, max_running: 1}
    """, epochs=3, data=SLOWER)
    jobs = load_sweep(path)
    command = [sys.executable, "-m", "debiasbench.cli", "sweep", str(path), "--tracking-uri", tracking_uri,
               "--no-progress"]
    earlier = set(slurm.jobs())  # other tests' jobs
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(recorded_jobs(tmp_path)) == 3 and _only_job(slurm, "RUNNING") != "", 240,
               "the sweep's jobs to be submitted and one to run", first)
    submitted = set(slurm.jobs()) - earlier
    assert len(submitted) == 3
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert any(slurm.jobs()[job_id][0] in ALIVE for job_id in submitted)  # the jobs outlive the sweep

    second = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr
    assert "still queued or running in Slurm" in second.stderr, second.stderr
    known = slurm.jobs()
    assert set(known) - earlier == submitted  # nothing submitted again
    assert all(known[job_id][0] == "COMPLETED" for job_id in submitted), known
    store = runs_by_status(tracking_uri)
    assert store == {"FINISHED": Counter({job.run_key(): 1 for job in jobs})}  # no run killed, none twice
