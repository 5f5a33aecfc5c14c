"""``--launcher slurm``: each job of a sweep is a Slurm job, submitted with submitit.

The jobs of one launcher call go to Slurm as one job array (``--max-running`` caps how many
of its tasks run at once); each task runs the same ``execute_job`` as the local
launcher, so claims, skipping finished runs, resuming from checkpoints and failure
handling are the local ones, and its ``JobResult`` comes back through the result file
submitit writes beside its logs.

The sweep, on the login node, polls ``squeue`` (every ``poll_seconds``) and takes a job
as ended when Slurm says so; a job ended without a result, or ended by the scheduler
(time limit, ``scancel``, preemption, node failure, out of memory), is FAILED with
Slurm's state and reason, and its run resumes from its last checkpoint when the sweep
runs again: in a job, SIGTERM (what Slurm sends first) ends the run KILLED after its last
checkpoint, and submitit's own requeue on USR2 is switched off. A job Slurm requeues
itself (``--requeue``, preemption in REQUEUE mode) stays alive to the sweep and resumes from
its checkpoint when it starts again.

Which Slurm job runs which run key is kept in ``.debiasbench/slurm/<sweep>/jobs.json``
(``<sweep>``: a hash of the store and sweep file), written atomically. A sweep stopped on
the login node (Ctrl-C, SIGKILL, a lost SSH session) leaves its Slurm jobs running;
started again, it asks Slurm which of the recorded jobs are still queued or running and
waits for those instead of submitting them again. Slurm, not the file, is the truth: a
recorded job Slurm no longer lists as alive is submitted again unless the store has
finished its run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from debiasbench.contract.config import RunConfig
from debiasbench.core.atomic import atomic_file
from debiasbench.core.errors import ConfigError, UserError, sentence
from debiasbench.core.registry import LAUNCHERS
from debiasbench.sweep.events import JobEvent, job_sink
from debiasbench.sweep.launchers import JobContext, JobResult, LauncherOptions

#: Seconds between two looks at the queue while jobs are queued or running.
POLL_SECONDS = 10.0

#: Seconds a job Slurm says has ended is given for its result file to appear (a shared
#: filesystem may show it late) before it counts as ended without one.
RESULT_GRACE_SECONDS = 30.0

#: Seconds a sweep waiting for its jobs bears with a failing ``squeue`` (slurmctld restarting
#: or busy) before it stops; its jobs go on, and the sweep started again waits for them.
QUEUE_PATIENCE_SECONDS = 600.0

#: Slurm states of a job that is queued, running, or on its way back to the queue.
ALIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                   "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"})

#: How a job that Slurm ended reads, by its state.
ENDINGS = {"TIMEOUT": "reached its time limit", "CANCELLED": "was cancelled (scancel or an administrator)",
           "PREEMPTED": "was preempted", "NODE_FAIL": "lost its node", "OUT_OF_MEMORY": "ran out of memory",
           "BOOT_FAIL": "could not boot its node", "DEADLINE": "reached its deadline", "FAILED": "failed"}

#: What a job that Slurm ended says of its run, and what its ``execute_job`` returned when
#: SIGTERM interrupted the run.
RESUMES = "its run resumes from its last checkpoint when the sweep runs again"
INTERRUPTED = f"interrupted by SIGTERM; {RESUMES}"

#: Where a sweep's Slurm bookkeeping and (by default) its jobs' logs go, under its working directory.
STATE_FOLDER = Path(".debiasbench") / "slurm"

_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})$")
_MEMORY = re.compile(r"^\d+(?:\.\d+)?[KMGT]?B?$", re.IGNORECASE)


def parse_time(text: str | int) -> int:
    """Minutes of a Slurm time limit: ``90`` (minutes), ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM`` or ``D-HH:MM:SS``; seconds are rounded up to a minute, as Slurm does."""
    value = str(text).strip()
    match = _TIME.match(value)
    if match is None:
        raise ConfigError(f"--time: expected minutes, HH:MM:SS or D-HH:MM:SS, got {value!r}")
    parts = [int(p) for p in match["clock"].split(":")]
    days = int(match["days"] or 0)
    if match["days"] is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts
    total = days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
    if total < 1:
        raise ConfigError(f"--time: a time limit of at least a minute, got {value!r}")
    return total


def check_memory(text: str | int) -> str:
    """Slurm's ``--mem``: a size with an optional unit (``16G``, ``500M``; plain numbers are MB)."""
    value = str(text).strip().upper()
    if not _MEMORY.match(value):
        raise ConfigError(f"--mem: expected a size such as 16G or 500M, got {text!r}")
    return value[:-1] if len(value) > 1 and value.endswith("B") and value[-2] in "KMGT" else value


def sbatch_options(args: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Extra ``sbatch`` options (``--qos=high``, ``--constraint a100``, ``--exclusive``) as
    ``#SBATCH`` lines' names and values; anything else is one line naming it."""
    options: dict[str, Any] = {}
    for arg in args:
        text = str(arg).strip()
        match = re.match(r"^--([A-Za-z][A-Za-z0-9-]*)(?:[= ](.+))?$", text)
        if match is None:
            raise ConfigError(f"--sbatch: expected a long sbatch option such as --qos=high, got {text!r}")
        name, value = match[1], match[2]
        if name in ("array", "output", "error", "wrap", "open-mode"):
            raise ConfigError(f"--sbatch: --{name} is set by the launcher (logs: --log-folder)")
        options[name.replace("-", "_")] = True if value is None else value.strip()
    return options


@dataclass(frozen=True)
class SlurmSettings:
    """What each job asks Slurm for, and where the sweep keeps its files."""

    cpus_per_run: int = 1
    gpus_per_run: int = 0
    memory: str | None = None
    partition: str | None = None
    time_minutes: int | None = None  # None: the partition's default limit
    account: str | None = None
    max_running: int | None = None  # the job array's %N: tasks of one call running at once
    sbatch: tuple[str, ...] = ()
    log_folder: str | None = None  # default: .debiasbench/slurm/<sweep>/logs
    poll_seconds: float = POLL_SECONDS

    def parameters(self, name: str) -> dict[str, Any]:
        """submitit's ``SlurmExecutor.update_parameters`` for these settings."""
        extra: dict[str, Any] = sbatch_options(self.sbatch)
        if self.memory is not None:
            extra["mem"] = self.memory
        parameters: dict[str, Any] = {"job_name": name, "time": self.time_minutes, "cpus_per_task": self.cpus_per_run,
                                      "ntasks_per_node": 1, "additional_parameters": extra}
        if self.gpus_per_run:
            parameters["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            parameters["partition"] = self.partition
        if self.account:
            parameters["account"] = self.account
        if self.max_running is not None:
            parameters["array_parallelism"] = self.max_running
        return parameters


@dataclass
class _Tracked:
    """A submitted job the sweep waits for."""

    config: RunConfig
    job_id: str
    folder: str  # submitit's folder, with %j
    ended_at: float | None = None  # when Slurm first said it ended (the result's grace)
    progress_seen: float = 0.0
    last_event: JobEvent | None = None

    def paths(self) -> Any:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=self.job_id, task_id=0)


class JobBook:
    """``jobs.json``: run key -> the Slurm job submitted for it and submitit's folder,
    rewritten atomically under a lock (two starts of one sweep may race)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        jobs = data.get("jobs") if isinstance(data, dict) else None
        return {k: v for k, v in (jobs or {}).items()
                if isinstance(v, dict) and isinstance(v.get("job_id"), str) and isinstance(v.get("folder"), str)}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            jobs = self.read()
            yield jobs
            with atomic_file(self.path) as stream:
                stream.write(json.dumps({"version": 1, "jobs": jobs}, indent=1, sort_keys=True).encode())

    def record(self, entries: Mapping[str, dict[str, Any]]) -> None:
        with self._locked() as jobs:
            jobs.update(entries)

    def forget(self, run_key: str, job_id: str) -> None:
        with self._locked() as jobs:
            if jobs.get(run_key, {}).get("job_id") == job_id:
                del jobs[run_key]


def sweep_folder(context: JobContext) -> Path:
    """``.debiasbench/slurm/<sweep>`` in the sweep's working directory, ``<sweep>`` a hash of
    its store and sweep file (resolved: ``x.yaml`` and ``./x.yaml`` are one sweep): the same
    command started again finds its jobs there."""
    cwd = context.cwd or os.getcwd()
    sweep_file = context.tags.get("debiasbench.sweep_file", "")
    identity = f"{context.tracking_uri}\n{Path(cwd, sweep_file).resolve() if sweep_file else ''}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(cwd) / STATE_FOLDER / digest


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def slurm_command(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """A Slurm client command's completed process (never raises for its exit code); a missing
    command or one that hangs past ``timeout`` is a one-line ``UserError``."""
    if shutil.which(args[0]) is None:
        raise UserError(f"launcher 'slurm' needs Slurm's client commands ({args[0]} is not on PATH): "
                        "run the sweep on a machine of the cluster, such as its login node")
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{args[0]} did not answer within {timeout:.0f} s: is slurmctld up?") from None


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Slurm's state and reason of each job it still knows (array tasks by ``<array>_<task>``);
    jobs it has forgotten are absent. A failing ``squeue`` is a ``UserError``."""
    if not job_ids:
        return {}
    bases = sorted({job_id.split("_")[0] for job_id in job_ids})
    done = slurm_command(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(bases)])
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # every one of them forgotten
            return {}
        raise UserError(f"squeue failed: {_first_error_line(done.stderr or done.stdout)}")
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def forgotten_state(job_id: str) -> tuple[str, str]:
    """State and reason of a job ``squeue`` no longer lists: from ``scontrol``, else from
    ``sacct`` where the cluster keeps accounting, else ``("", "")``."""
    done = slurm_command(["scontrol", "-o", "show", "job", job_id])
    if done.returncode == 0:
        found = re.search(r"\bJobState=(\S+)", done.stdout)
        why = re.search(r"\bReason=(\S+)", done.stdout)
        if found:
            return found[1], why[1] if why else ""
    if shutil.which("sacct"):
        done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State,Reason", "-j", job_id], capture_output=True,
                              text=True, timeout=60)
        rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
        if rows:
            state = rows[-1][0].split()[0] if rows[-1][0] else ""
            return state, rows[-1][1] if len(rows[-1]) > 1 else ""
    return "", ""


def scheduler_reason(job_id: str, state: str, reason: str) -> str:
    """``Slurm job 12_3 reached its time limit: state TIMEOUT, reason TimeLimit``."""
    if not state:
        return f"Slurm job {job_id} ended (Slurm no longer knows how)"
    said = f"state {state}" if reason in ("", "None") else f"state {state}, reason {reason}"
    return f"Slurm job {job_id} {ENDINGS.get(state, 'ended')}: {said}"


class _ProgressFile:
    """A job's progress for the sweep on the login node, in a small JSON file beside its
    logs: its latest event and its latest epoch's end, rewritten at most once a second
    (a new phase or an epoch's end at once)."""

    def __init__(self, path: Path):
        self.path = path
        self.written = 0.0
        self.phase: str | None = None
        self.epoch_end: dict[str, Any] | None = None

    def __call__(self, event: JobEvent) -> None:
        now = time.monotonic()
        ends_epoch = event.epochs > 0 and event.step == event.steps
        if ends_epoch:
            self.epoch_end = asdict(event)
        if event.phase == self.phase and not ends_epoch and now - self.written < 1.0:
            return
        self.phase, self.written = event.phase, now
        with atomic_file(self.path) as stream:
            stream.write(json.dumps({"last": asdict(event), "epoch_end": self.epoch_end}).encode())


def _in_submitit_job_process() -> bool:
    """Whether this process is submitit's for one job (``python -m submitit.core._submit``,
    as Slurm starts it), which ends when the job has returned; not a caller's process
    calling ``_slurm_job`` itself."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "submitit.core._submit"


def _slurm_job(config: RunConfig, context: JobContext, progress: str | None = None) -> JobResult:
    """``execute_job`` in a Slurm job. SIGTERM (Slurm's time limit, ``scancel``,
    preemption) ends the run KILLED after its last checkpoint, to be resumed when the sweep
    runs again; submitit's requeue on USR2 is switched off (the sweep resumes instead).
    What the job imports is imported first with the garbage collector paused
    (``job_process.prepare_job_process``), and frozen in submitit's job process, which runs this
    one job and exits (``_in_submitit_job_process``)."""
    import signal

    from debiasbench.core.interrupts import take_sigterm_as_interrupt
    from debiasbench.sweep.job_process import prepare_job_process
    from debiasbench.sweep.events import set_process_sink
    from debiasbench.sweep.launchers import execute_job

    take_sigterm_as_interrupt()
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    prepare_job_process(context.tracking_uri, ours=_in_submitit_job_process())
    if progress:
        set_process_sink(_ProgressFile(Path(progress)))
    try:
        return execute_job(config, context)
    except KeyboardInterrupt:
        return JobResult(config, "FAILED", reason=INTERRUPTED)
    finally:
        set_process_sink(None)


class SlurmJobs:
    """A Slurm job per sweep job (one job array per launcher call), submitted with submitit;
    see the module's docstring."""

    def __init__(self, settings: SlurmSettings):
        self.settings = settings

    @property
    def slots(self) -> int:
        """Jobs run at once, for the sweep's ETA: ``--max-running``, else unknown (1)."""
        return self.settings.max_running or 1

    def __call__(self, jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
        if not jobs:
            return
        try:
            import submitit
        except ImportError:
            raise UserError("launcher 'slurm' needs submitit: pip install 'debiasbench[slurm]'") from None
        if shutil.which("sbatch") is None:
            raise UserError("launcher 'slurm' needs Slurm's client commands (sbatch is not on PATH): run the sweep "
                            "on a machine of the cluster, such as its login node")
        context = replace(context, threads=context.threads or self.settings.cpus_per_run)
        folder = sweep_folder(context)
        book = JobBook(folder / "jobs.json")
        recorded = book.read()
        alive = queue_states([entry["job_id"] for entry in recorded.values()])
        pending: dict[str, _Tracked] = {}
        submit: list[RunConfig] = []
        for config in jobs:
            entry = recorded.get(config.run_key())
            if entry is not None and alive.get(entry["job_id"], ("", ""))[0] in ALIVE:
                pending[entry["job_id"]] = _Tracked(config, entry["job_id"], entry["folder"])
            else:
                submit.append(config)
        if pending:
            _say(f"{len(pending)} job{'s' if len(pending) != 1 else ''} of an earlier start of this sweep "
                 f"{'are' if len(pending) != 1 else 'is'} still queued or running in Slurm ({_ids(pending)}): "
                 "waiting for them instead of submitting them again")
        sink = job_sink()
        if submit:
            submitted = self._submit(submitit, submit, context, folder, book, sink is not None)
            pending.update(submitted)
            first = next(iter(submitted.values()))
            _say(f"submitted {len(submitted)} job{'s' if len(submitted) != 1 else ''} to Slurm "
                 f"({_ids(submitted)}); logs in {Path(first.folder).parent}")
        try:
            yield from self._wait(pending, book, sink)
        except BaseException:  # Ctrl-C, SIGTERM, an error: the jobs go on in Slurm
            if pending:
                _say(f"{len(pending)} Slurm job{'s' if len(pending) != 1 else ''} left queued or running "
                     f"({_ids(pending)}): the sweep started again waits for them (scancel stops them)")
            raise

    def _submit(self, submitit: Any, jobs: list[RunConfig], context: JobContext, folder: Path, book: JobBook,
                progress: bool) -> dict[str, _Tracked]:
        logs = Path(context.cwd or os.getcwd()) / (self.settings.log_folder or folder / "logs")
        template = str(logs / "%j")
        try:
            executor = submitit.SlurmExecutor(folder=template)
            executor.update_parameters(**self.settings.parameters(f"debiasbench-{folder.name}"))
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"launcher 'slurm': {_first_error_line(str(exc))}") from None
        progress_folder = folder / "progress"
        progress_folder.mkdir(parents=True, exist_ok=True)
        try:
            with executor.batch():
                handles = [executor.submit(_slurm_job, config, context,
                                           str(progress_folder / f"{config.run_key()}.json") if progress else None)
                           for config in jobs]
        except Exception as exc:  # sbatch refused the jobs: a bad partition, account, option
            raise UserError(f"sbatch refused the sweep's jobs: {_first_error_line(str(exc))}") from None
        now = time.time()
        tracked = {handle.job_id: _Tracked(config, handle.job_id, template) for handle, config in zip(handles, jobs)}
        book.record({item.config.run_key(): {"job_id": item.job_id, "folder": template, "submitted": now}
                     for item in tracked.values()})
        return tracked

    def _wait(self, pending: dict[str, _Tracked], book: JobBook,
              sink: Callable[[JobEvent], None] | None) -> Iterator[JobResult]:
        progress_folder = book.path.parent / "progress"
        failing_since: float | None = None
        while pending:
            try:
                states = queue_states(list(pending))
            except UserError:  # slurmctld restarting or busy: ask again, for a while
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > QUEUE_PATIENCE_SECONDS:
                    raise
                time.sleep(self.settings.poll_seconds)
                continue
            failing_since = None
            for job_id, item in list(pending.items()):
                if sink is not None:
                    _forward_progress(progress_folder / f"{item.config.run_key()}.json", item, sink)
                state, reason = states.get(job_id, ("", ""))
                if state in ALIVE:
                    item.ended_at = None  # requeued: it runs again
                    continue
                if not state:
                    state, reason = forgotten_state(job_id)
                    if state in ALIVE:
                        continue
                result = self._outcome(item, state, reason)
                if result is None:
                    continue
                del pending[job_id]
                book.forget(item.config.run_key(), job_id)
                yield result
            if pending:
                time.sleep(self.settings.poll_seconds)

    def _outcome(self, item: _Tracked, state: str, reason: str) -> JobResult | None:
        """The result of a job Slurm says has ended; None while its result file may still be
        on its way."""
        from submitit.core.utils import pickle_load

        paths = item.paths()
        payload: Any = None
        if paths.result_pickle.exists():
            try:
                payload = pickle_load(paths.result_pickle)
            except Exception:  # truncated: the job died writing it
                payload = None
        if payload is None and state in ("COMPLETED", ""):
            now = time.monotonic()
            item.ended_at = item.ended_at or now
            if now - item.ended_at < RESULT_GRACE_SECONDS:
                return None
        by_scheduler = state not in ("COMPLETED", "")
        if isinstance(payload, tuple) and len(payload) == 2 and payload[0] == "success" \
                and isinstance(payload[1], JobResult):
            result = payload[1]
            if result.status != "FAILED" or not by_scheduler:
                return result
            said = scheduler_reason(item.job_id, state, reason)
            return replace(result, reason=f"{said}; {RESUMES}" if result.reason == INTERRUPTED
                           else f"{said}; {result.reason}")
        said = scheduler_reason(item.job_id, state, reason) if by_scheduler or not state \
            else f"Slurm job {item.job_id} ended without a result"
        if isinstance(payload, tuple) and len(payload) == 2 and payload[0] == "error":
            said += f": {str(payload[1]).strip().splitlines()[-1] if str(payload[1]).strip() else 'an error'}"
        return JobResult(item.config, "FAILED", reason=f"{said}; {RESUMES} (log: {paths.stderr})")


def _say(line: str) -> None:
    """A line of the launcher's on stderr, as the sweep's own lines go (shown above its bars):
    a sentence."""
    import sys

    print(sentence(f"slurm: {line}"), file=sys.stderr, flush=True)


def _ids(jobs: Mapping[str, Any], most: int = 6) -> str:
    """``jobs 12_0, 12_1, ... (8 in all)``: Slurm ids to look up with squeue."""
    ids = list(jobs)
    shown = ", ".join(ids[:most]) + (f", ... ({len(ids)} in all)" if len(ids) > most else "")
    return f"job{'s' if len(ids) != 1 else ''} {shown}"


def _forward_progress(path: Path, item: _Tracked, sink: Callable[[JobEvent], None]) -> None:
    """Hand the sweep what the job's progress file says that is new: its latest epoch's end
    (the sweep's lines show those), then its latest event."""
    try:
        changed = path.stat().st_mtime
        if changed == item.progress_seen:
            return
        data = json.loads(path.read_text())
        events = [JobEvent(**data[key]) for key in ("epoch_end", "last") if isinstance(data.get(key), dict)]
    except (OSError, ValueError, TypeError):
        return
    item.progress_seen = changed
    for event in events:
        if event == item.last_event:
            continue
        item.last_event = event
        try:
            sink(event)
        except Exception:  # a display error must not stop the sweep
            pass


def slurm_settings(cpus_per_run: float, gpus_per_run: float, **options: Any) -> SlurmSettings:
    """``SlurmSettings`` from the launcher options, checked: whole CPUs and GPUs per run, a
    time limit and memory Slurm reads, a positive ``max_running``."""
    if cpus_per_run != int(cpus_per_run):
        raise ConfigError(f"--cpus-per-run: Slurm allocates whole CPUs, got {cpus_per_run}")
    if gpus_per_run != int(gpus_per_run):
        raise ConfigError(f"--gpus-per-run: Slurm allocates whole GPUs, got {gpus_per_run}")
    max_running = options.get("max_running")
    if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
        raise ConfigError(f"--max-running: expected an integer >= 1, got {max_running}")
    poll = options.get("poll_seconds")
    if poll is not None and not (isinstance(poll, (int, float)) and poll > 0):
        raise ConfigError(f"poll_seconds: expected a number > 0, got {poll}")
    sbatch = tuple(options.get("sbatch") or ())
    sbatch_options(sbatch)
    time_limit = options.get("time")
    memory = options.get("memory")
    return SlurmSettings(cpus_per_run=int(cpus_per_run), gpus_per_run=int(gpus_per_run),
                         memory=None if memory is None else check_memory(memory),
                         partition=options.get("partition") or None,
                         time_minutes=None if time_limit is None else parse_time(time_limit),
                         account=options.get("account") or None, max_running=max_running, sbatch=sbatch,
                         log_folder=options.get("log_folder") or None,
                         poll_seconds=float(poll) if poll is not None else POLL_SECONDS)


@LAUNCHERS.register(name="slurm")
def slurm_launcher(options: LauncherOptions) -> SlurmJobs:
    """A Slurm job per sweep job (a job array per sweep stage), submitted with submitit."""
    return SlurmJobs(slurm_settings(options.cpus_per_run, options.gpus_per_run, memory=options.memory,
                                    partition=options.partition, time=options.time, account=options.account,
                                    max_running=options.max_running, sbatch=options.sbatch,
                                    log_folder=options.log_folder, poll_seconds=options.poll_seconds))


__all__ = ["ALIVE", "JobBook", "SlurmJobs", "SlurmSettings", "parse_time", "check_memory", "sbatch_options",
           "scheduler_reason", "slurm_launcher", "slurm_settings"]
