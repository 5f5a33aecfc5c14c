"""Progress while a run or a sweep trains: per-epoch reports from the loop (auxiliary
models included), what `run` prints, sweep workers' events, and the sweep's ETA."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pytest
import torch
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.config import RunConfig
from debiasbench.data.dataset import Loader, Split
from debiasbench.run.runner import run
from debiasbench.sweep.driver import load_sweep, run_sweep
from debiasbench.sweep.launchers import JobResult, make_launcher
from debiasbench.sweep.events import STARTED, JobEvent
from debiasbench.sweep.monitor import (JobHistory, JobState, SweepLines, SweepMonitor, SweepView, estimate_eta,
                                       job_remaining)
from debiasbench.testing import tiny_config
from debiasbench.train.loop import train_epochs
from debiasbench.train.progress import reporting
from debiasbench.train.step import TrainingStep


@dataclass
class Recorder:
    events: list[tuple[str, int, int, int, int]] = field(default_factory=list)

    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        self.events.append((phase, epoch, epochs, step, steps))

    def phases(self) -> list[str]:
        return list(dict.fromkeys(event[0] for event in self.events))


def _loop(batches: int, epochs: int, **kwargs) -> None:
    n = batches * 4
    y = torch.arange(n) % 2
    split = Split(x=torch.randn(n, 1, 2, 2), y=y, bias=torch.full_like(y, -1),
                  artifact=torch.zeros(n, dtype=torch.bool), conflicting=torch.zeros(n, dtype=torch.bool))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    step = TrainingStep(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    train_epochs(Loader(split, 4, torch.Generator().manual_seed(0)), step,
                 lambda b: (torch.nn.functional.cross_entropy(model(b.x), b.y), {}), epochs, **kwargs)


def test_the_loop_reports_each_epoch_s_start_and_end_and_throttles_the_steps_between(monkeypatch):
    monkeypatch.setattr("debiasbench.train.progress.INTERVAL", 3600.0)
    recorder = Recorder()
    _loop(10, 3, progress=recorder)
    assert recorder.events == [(p, e, 3, s, 10) for e in (1, 2, 3) for p, s in (("train", 0), ("train", 10))]
    monkeypatch.setattr("debiasbench.train.progress.INTERVAL", 0.0)
    every = Recorder()
    _loop(4, 1, progress=every, phase="peers")
    assert [event[3] for event in every.events] == [0, 1, 2, 3, 4]
    assert {event[0] for event in every.events} == {"peers"}


def test_the_loop_reports_to_the_current_reporter_with_its_prefix_and_to_none_outside():
    recorder = Recorder()
    with reporting(recorder, "jtt"):
        _loop(2, 1)
        with reporting(None):
            _loop(2, 1)
    _loop(2, 1)
    assert recorder.events == [("jtt · train", 1, 1, 0, 2), ("jtt · train", 1, 1, 2, 2)]


def test_a_jtt_run_reports_its_identification_model_s_epochs_then_its_own_then_evaluation(tracker):
    recorder = Recorder()
    run(tiny_config(method="jtt", epochs=2, hparams={"id_epochs": 3}, log_model=False, explain_samples=5), tracker,
        progress=recorder)
    assert recorder.phases() == ["jtt · prepare", "jtt · identification model", "jtt · train", "jtt · test",
                                 "jtt · explain"]
    for phase, epochs in (("jtt · identification model", 3), ("jtt · train", 2)):
        events = [e for e in recorder.events if e[0] == phase]
        assert {e[2] for e in events} == {epochs}
        positions = [(e[1], e[3]) for e in events]
        assert positions == sorted(positions)  # epoch and step only advance
        steps = events[0][4]
        ends = [epoch for epoch, step in positions if step == steps]
        assert ends == list(range(1, epochs + 1))  # every epoch's last step is reported


@pytest.mark.slow
def test_run_prints_one_line_per_epoch_when_stderr_is_not_a_terminal(tracking_uri):
    tiny = ["--set", "dataset_params.n_train=100", "--set", "dataset_params.n_val=40", "--set",
            "dataset_params.n_test=40", "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3",
            "--set", "epochs=2", "--set", "device=cpu", "--set", "hparams.id_epochs=2", "--set", "log_model=false"]
    result = CliRunner().invoke(app, ["run", "--method", "jtt", "--dataset", "synthetic_artifacts", *tiny])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == [
        "jtt · identification model epoch 1/2", "jtt · identification model epoch 2/2",
        "jtt · train epoch 1/2", "jtt · train epoch 2/2"]
    assert all("it/s" in line for line in lines) and "ETA" in lines[0]
    quiet = CliRunner().invoke(app, ["run", "--method", "jtt", "--dataset", "synthetic_artifacts", "--rerun",
                                     "--no-progress", *tiny])
    assert quiet.exit_code == 0, quiet.output
    assert " epoch " not in quiet.output


class RecordingView(SweepView):
    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.ended: list[str] = []

    def job_event(self, monitor, config, event):
        self.events.append(event)

    def job_ended(self, monitor, result):
        self.ended.append(result.config.run_key())


def _sweep(tmp_path, epochs: int = 2):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""
        methods: [vanilla]
        datasets: [{{synthetic_artifacts: {{n_train: 100, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}}}}]
        seeds: [0, 1]
        overrides: {{epochs: {epochs}, device: cpu, log_model: false}}
    """))
    return load_sweep(path)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_receives_each_job_s_progress_from_its_workers(tmp_path, tracking_uri, workers):
    jobs = _sweep(tmp_path)
    view, lines = RecordingView(), list[str]()
    results = run_sweep(jobs, tracking_uri, log=lines.append, launcher=make_launcher("local", workers=workers),
                        view=view)
    assert [r.status for r in results] == ["FINISHED", "FINISHED"]
    for config in jobs:
        mine = [e for e in view.events if e.run_key == config.run_key()]
        assert mine[0].phase == STARTED
        ends = [(e.epoch, e.epochs) for e in mine if e.phase == "vanilla · train" and e.step == e.steps]
        assert ends == [(1, 2), (2, 2)]
    assert sorted(view.ended) == sorted(c.run_key() for c in jobs)
    assert lines[-1].startswith("[2 done · 0 failed · 0 left · ETA 0s]")


def test_sweep_lines_name_the_job_its_phase_and_epoch_with_the_sweep_s_eta(tmp_path, tracking_uri):
    lines: list[str] = []
    run_sweep(_sweep(tmp_path, epochs=1), tracking_uri, log=lines.append, view=SweepLines(lines.append, interval=0))
    epoch_lines = [line for line in lines if " epoch " in line]
    assert len(epoch_lines) == 2
    assert epoch_lines[0].startswith("  vanilla on synthetic_artifacts (small_cnn, seed 0) · train epoch 1/1 "
                                     "[sweep ETA ")


# The ETA -------------------------------------------------------------------------------

VANILLA, JTT = ("vanilla", "d"), ("jtt", "d")


def test_a_running_job_s_time_left_is_its_epochs_left_at_the_pace_known_then_evaluation():
    history = JobHistory()
    history.add(JTT, 100.0, tail=10.0, paces={"identification model": 5.0, "train": 25.0})
    # half an epoch measured at 6 s an epoch: half that, half the 5 s of ended jobs
    early = JobState(JTT, 5.0, 0.1, "identification model", phase_left=1.5, pace=6.0, measured=0.5, own_left=2)
    assert job_remaining(early, history) == pytest.approx(1.5 * 5.5 + 2 * 25.0 + 10.0)
    later = JobState(JTT, 15.0, 0.4, "identification model", phase_left=0.5, pace=6.0, measured=1.5, own_left=2)
    assert job_remaining(later, history) == pytest.approx(0.5 * 6.0 + 2 * 25.0 + 10.0)
    # nothing ended of its kind: its own epochs at the pace it trains now, no evaluation known
    alone = JobState(JTT, 5.0, 0.2, "identification model", phase_left=1, pace=4.0, measured=1, own_left=2)
    assert job_remaining(alone, JobHistory()) == pytest.approx(12.0)
    assert job_remaining(JobState(JTT, 60.0, 1.0, since_training=4.0), history) == pytest.approx(6.0)
    assert job_remaining(JobState(JTT, 30.0), history) == pytest.approx(70.0)  # in prepare: the prior
    assert job_remaining(JobState(VANILLA, 5.0), JobHistory()) is None


def test_queued_jobs_go_to_the_slot_that_frees_first_at_their_kind_s_mean():
    history = JobHistory()
    history.add(VANILLA, 10.0)
    history.add(JTT, 40.0)
    history.add(JTT, 60.0)
    running = [JobState(JTT, 20.0, 0.5, "train", 1, 20.0, 1.0), JobState(VANILLA, 2.0, 0.5, "train", 1, 4.0, 1.0)]
    # left: jtt 20, vanilla 4; then the queued jtt (50) at 4, the queued vanilla (10) at 20
    assert estimate_eta(running, [JTT, VANILLA], history, slots=2) == pytest.approx(54.0)
    assert estimate_eta([], [VANILLA] * 3, history, slots=2) == pytest.approx(20.0)
    assert estimate_eta([], [], history, slots=2) == 0.0
    assert estimate_eta([], [("lff", "d")], JobHistory(), slots=1) is None
    # a kind nothing ended of: what a running job of its kind is heading for (30 + 30)
    running = [JobState(JTT, 30.0, 0.5, "train", 2, 15.0, 1.0)]
    assert estimate_eta(running, [JTT], JobHistory(), slots=1) == pytest.approx(90.0)


def test_without_events_the_eta_counts_the_slots_the_ended_jobs_kept_busy():
    """A launcher whose jobs report nothing (a plugin's): 4 jobs of 10 s ended 10 s in,
    so 4 ran at once; the 4 queued take another 10 s, not 40."""
    jobs = [tiny_config(seed=seed) for seed in range(8)]
    clock = [0.0]
    monitor = SweepMonitor(jobs, clock=lambda: clock[0])
    clock[0] = 10.0
    for config in jobs[:4]:
        monitor.on_result(JobResult(config, "FINISHED", seconds=10.0))
    assert monitor.eta() == pytest.approx(10.0)


@dataclass
class SimJob:
    """A job of the simulated sweep: (phase, epochs, seconds per epoch) then ``tail`` seconds."""

    config: RunConfig
    phases: list[tuple[str, int, float]]
    tail: float

    @property
    def seconds(self) -> float:
        return sum(epochs * per for _, epochs, per in self.phases) + self.tail

    def events(self, t: float) -> list[JobEvent]:
        """The events a job ``t`` seconds in reports at that moment (10 steps an epoch)."""
        key = self.config.run_key()
        for phase, epochs, per in self.phases:
            if t < epochs * per:
                epoch = int(t // per)
                return [JobEvent(key, phase, epoch + 1, epochs, int((t - epoch * per) / per * 10), 10)]
            t -= epochs * per
        return [JobEvent(key, f"{self.config.method} · test")]


def simulate(jobs: list[SimJob], slots: int) -> list[tuple[float, float, float | None, float | None]]:
    """Each second: (time, true time left, the monitor's ETA, the old ETA: elapsed per ended job x jobs left)."""
    clock = [0.0]
    monitor = SweepMonitor([job.config for job in jobs], slots, clock=lambda: clock[0])
    queue, ended, out = list(jobs), 0, []
    running: dict[SimJob, float] = {}
    finish = _schedule([job.seconds for job in jobs], slots)
    for tick in range(int(finish) + 1):
        t = float(tick)
        clock[0] = t
        for job, began in list(running.items()):
            if t - began >= job.seconds:
                del running[job]
                ended += 1
                monitor.on_result(JobResult(job.config, "FINISHED", seconds=job.seconds))
        while queue and len(running) < slots:
            job = queue.pop(0)
            running[job] = t
            monitor.on_event(JobEvent(job.config.run_key()))
        for job, began in running.items():
            for event in job.events(t - began):
                monitor.on_event(event)
        old = t / ended * (len(jobs) - ended) if ended else None
        out.append((t, finish - t, monitor.eta(), old))
    return out


def _schedule(durations: list[float], slots: int) -> float:
    frees = [0.0] * slots
    for d in durations:
        i = frees.index(min(frees))
        frees[i] += d
    return max(frees)


SimJob.__hash__ = object.__hash__  # type: ignore[method-assign]


def test_the_sweep_eta_follows_the_time_left_without_jumping_where_the_old_one_jumped():
    """Vanilla jobs of 10 s and JTT jobs of 70 s (an identification model, its own epochs,
    evaluation) alternate on 2 workers: once one job of each kind has ended, the ETA is
    within 5% + 6 s of the time left (steps are reported every 2.5 s here) and falls by
    about a second a second; the old estimate (elapsed per ended job times jobs left) was
    off by half and jumped with each job that ended."""
    jobs = []
    for seed in range(6):
        jobs.append(SimJob(tiny_config(method="vanilla", seed=seed), [("vanilla · train", 2, 4.0)], 2.0))
        jobs.append(SimJob(tiny_config(method="jtt", seed=seed),
                           [("jtt · identification model", 2, 5.0), ("jtt · train", 2, 25.0)], 10.0))
    trace = simulate(jobs, slots=2)
    warm = 75  # both kinds have ended by then
    assert all(eta is not None for _, _, eta, _ in trace[5:])
    later = [(t, true, eta, old) for t, true, eta, old in trace
             if t >= warm and true > 0 and eta is not None and old is not None]
    errors = [abs(eta - true) - 0.05 * true for _, true, eta, _ in later]
    assert max(errors) < 6.0, max(errors)
    steps = [abs((a[2] - b[2]) - 1.0) for a, b in zip(later, later[1:])]
    assert max(steps) < 8.0, max(steps)  # no jumps: it counts down
    old_errors = [abs(old - true) / true for _, true, _, old in later]
    old_steps = [abs((a[3] - b[3]) - 1.0) for a, b in zip(later, later[1:])]
    assert max(old_errors) > 0.3 and max(old_steps) > 10  # what the issue saw (41 <-> 70 minutes)
