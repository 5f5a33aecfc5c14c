"""Where a sweep's jobs run: this process, N worker processes, or a Ray cluster.

Every launcher runs the same ``execute_job`` and yields ``JobResult``s as jobs end, so
resuming, failure handling and progress are written once (``sweep.run_sweep``). A job
that raises is FAILED and the others go on; a local worker process that ends under its
job (a signal to it alone, the OOM killer) touches no other job: its own starts again,
once. Local workers die with the sweep (SIGKILL included),
so a sweep started again never races a leftover worker for the same job.

Launchers are looked up by name in ``LAUNCHERS`` (``debiasbench.core.registry``), filled like
every registry from an entry-point group, ``debiasbench.launchers``: a package adds one
(a batch scheduler, say) by declaring a factory ``(LauncherOptions) -> Launcher`` there,
and ``debiasbench sweep --launcher <name>`` finds it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Protocol

from debiasbench.contract.config import RunConfig
from debiasbench.core.errors import RunFailed, UserError
from debiasbench.core.registry import LAUNCHERS
from debiasbench.sweep.events import JobEvent, job_progress, job_sink, set_process_sink


@dataclass
class JobResult:
    config: RunConfig
    #: FINISHED, FAILED, SKIPPED (finished earlier or meanwhile), BUSY (another process
    #: holds its claim; ``run_sweep`` comes back to it) or RESTARTED (its worker process
    #: ended under it, ``reason`` says how; the launcher runs it again and yields its result)
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class JobContext:
    """What a worker needs besides the config: the store (absolute URI), run tags, the
    torch threads it may use and the sweep's working directory (relative paths)."""

    tracking_uri: str
    tags: Mapping[str, str]
    threads: int | None = None
    cwd: str | None = None
    #: Wait for a job another process has claimed instead of answering BUSY.
    wait_for_claims: bool = False


#: Trackers of this process by store, experiment and run tags (a process may serve several sweeps).
_TRACKERS: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}


def execute_job(config: RunConfig, context: JobContext) -> JobResult:
    """Run one job unless it finished meanwhile; never raises for a failed run. A job
    another process has claimed (``debiasbench.run.claims``) is BUSY, or with the context's
    ``wait_for_claims`` waited for, then run or, finished meanwhile, SKIPPED."""
    from debiasbench.run.claims import JobBusy
    from debiasbench.run.runner import run
    from debiasbench.track.store import Tracker

    if context.cwd and os.path.isdir(context.cwd) and os.getcwd() != context.cwd:
        os.chdir(context.cwd)
    if context.threads:
        import torch

        torch.set_num_threads(context.threads)
    store_file = context.tracking_uri.removeprefix("sqlite:///")
    if context.tracking_uri.startswith("sqlite:///") and not os.path.isfile(store_file):
        # The sweep created it before any worker started: this worker is on another machine,
        # and a fresh store here would hide its runs from everyone else.
        return JobResult(config, "FAILED", reason=f"tracking store {store_file} is not on this worker's "
                         "machine: on a cluster use a tracking server (--tracking-uri http://...)")
    key = (context.tracking_uri, config.experiment, tuple(sorted(context.tags.items())))
    tracker = _TRACKERS.get(key) or _TRACKERS.setdefault(
        key, Tracker(context.tracking_uri, config.experiment, tags=context.tags))
    done = tracker.finished_run(config.run_key())
    if done is not None:
        return JobResult(config, "SKIPPED", dict(done.data.metrics))
    began = time.perf_counter()
    try:
        with job_progress(config.run_key()):  # the job's progress goes to the sweep, where it listens
            result = run(config, tracker, wait=context.wait_for_claims, skip_finished=True)
        if not result.ran:
            return JobResult(config, "SKIPPED", result.metrics)
    except JobBusy:
        return JobResult(config, "BUSY")
    except (RunFailed, UserError) as exc:
        reason = getattr(exc, "reason", str(exc))
    except Exception as exc:  # recorded as FAILED by the tracker; the sweep goes on
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return JobResult(config, "FINISHED", result.metrics, seconds=time.perf_counter() - began)
    return JobResult(config, "FAILED", reason=reason, seconds=time.perf_counter() - began)


class Launcher(Protocol):
    def __call__(self, jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
        """Run ``jobs``; yield each result as its job ends (any order)."""


def sequential(jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
    """In this process, one job after another, with the cores it may use (``--threads``
    otherwise)."""
    from debiasbench.core.resources import default_threads

    context = replace(context, threads=context.threads or default_threads())
    for config in jobs:
        yield execute_job(config, context)


#: Seconds an interrupted sweep gives its worker processes to record their runs as
#: KILLED (each has checkpointed its last finished epoch) before it kills them.
STOP_GRACE_SECONDS = 10.0

#: Times a job starts again after its worker process ended under it (a signal to that
#: worker alone, the OOM killer); the next such end records it FAILED.
WORKER_RESTARTS = 1


def _die_with_parent() -> None:
    """In a worker: on Linux, the kernel kills this worker when the sweep dies.
    Ctrl-C reaches the worker only inside a job (``_job_in_worker``): an idle worker
    ignores it, so a terminal's Ctrl-C prints no worker traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _job_in_worker(execute: Callable[[RunConfig, JobContext], JobResult], config: RunConfig,
                   context: JobContext) -> JobResult:
    """``execute`` in a worker process with Ctrl-C (SIGINT) and SIGTERM turned into
    KeyboardInterrupt, as in the sweep's own process: the run stops at once and is recorded
    KILLED; signals after the first are ignored while it is recorded (a signal to the
    sweep's process group, then the sweep's own). After SIGTERM (a scheduler stopping the
    sweep's process group, ``kill`` of this worker) the worker then ends by SIGTERM, as it
    was asked to; an idle worker does so at once (the default action)."""
    import signal

    from debiasbench.core import interrupts

    interrupts.take_interrupts_once()  # a second signal must not cut the run's recording short
    try:
        return execute(config, context)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if interrupts.terminated():
            os.kill(os.getpid(), signal.SIGTERM)


class _Sender:
    """A worker's end of its pipe to the sweep: results and its jobs' progress events, each
    sent whole under a lock. A sweep that has gone is no error here: the worker ends when
    it next reads the pipe."""

    def __init__(self, conn: Any):
        self.conn, self.lock = conn, threading.Lock()

    def __call__(self, message: tuple[str, Any]) -> None:
        with self.lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                pass

    def event(self, event: JobEvent) -> None:
        self(("event", event))


def _worker_main(conn: Any, tracking_uri: str | None, imports: bool, events: bool) -> None:
    """A sweep's worker process: runs the jobs its pipe sends, ``(execute, config,
    context)``, one at a time, and sends back each result, until the pipe ends or sends
    None. With ``events`` its jobs' progress goes through the pipe too; with ``imports`` it
    first imports what a job of ``execute_job`` imports (``job_process.prepare_job_process``),
    with the garbage collector paused and frozen afterwards: the worker is the sweep's for
    its whole life, and its objects at this point are modules. Its jobs run with the
    collector enabled."""
    _die_with_parent()
    send = _Sender(conn)
    if events:
        set_process_sink(send.event)
    if imports:
        from debiasbench.sweep.job_process import prepare_job_process

        prepare_job_process(tracking_uri, ours=True)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        execute, config, context = task
        try:
            result = _job_in_worker(execute, config, context)
        except KeyboardInterrupt:  # SIGINT to this worker: its run is recorded KILLED
            send(("interrupted", "SIGINT"))
            continue
        except BaseException as exc:  # the job's own failure, whatever it is: the worker goes on
            result = JobResult(config, "FAILED", reason=f"{type(exc).__name__}: {exc}")
        send(("result", result))


@dataclass
class _Worker:
    """A worker process of ``ProcessPool``, the sweep's end of its pipe (None once it
    ended) and the job it runs."""

    process: Any
    conn: Any
    job: RunConfig | None = None

    def ended_how(self) -> str:
        import signal

        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"was stopped by {signal.Signals(-code).name}"
            except ValueError:
                return f"was stopped by signal {-code}"
        return f"died (exit code {code})"

    def stopped(self) -> bool:
        """Whether it ended by SIGTERM, which its job takes as Ctrl-C (``_job_in_worker``)."""
        import signal

        return self.process.exitcode == -signal.SIGTERM

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _stop_workers(workers: list[_Worker], grace: float = STOP_GRACE_SECONDS) -> None:
    """Interrupt the workers (SIGINT, or SIGTERM where the sweep was stopped by one: their
    runs end KILLED with that reason, resumable from the last checkpoint), give them at most
    ``grace`` seconds to record their runs and end, and kill the workers left, so that an
    interrupted sweep exits within seconds instead of waiting for its running jobs to end."""
    import signal

    from debiasbench.core.interrupts import terminated

    stop = signal.SIGTERM if terminated() else signal.SIGINT
    for worker in workers:
        if worker.process.is_alive() and worker.process.pid is not None:
            try:
                os.kill(worker.process.pid, stop)
            except ProcessLookupError:
                pass
        worker.close()  # a worker reads the pipe's end once its run is recorded, and ends
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1.0)


class ProcessPool:
    """``workers`` spawned processes, each given the cores this process may use divided by
    ``workers`` as torch threads (``--threads`` otherwise), each sent one job at a time
    through a pipe of its own (results and, where the sweep listens (``monitor.job_sink``),
    its jobs' progress come back through it).

    A worker that ends under its job (SIGTERM or SIGINT sent to it alone, SIGKILL, the OOM
    killer) touches no other worker's job: its job is yielded ``RESTARTED`` with the reason
    (which worker, which signal) and runs again, resuming from its last checkpoint, in a
    new worker; a second such end records it FAILED (``WORKER_RESTARTS``)."""

    def __init__(self, workers: int, execute: Callable[[RunConfig, JobContext], JobResult] = execute_job,
                 imports: bool | None = None):
        self.workers = workers
        self.execute = execute  # a module-level function (workers import it by name)
        #: Whether each worker imports a job's modules when it starts (``_worker_main``);
        #: by default where ``execute`` is ``execute_job``.
        self.imports = execute is execute_job if imports is None else imports

    @property
    def slots(self) -> int:
        """Jobs run at once (the sweep's ETA schedules queued jobs on them)."""
        return self.workers

    def __call__(self, jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
        from debiasbench.core.resources import available_cores

        threads = context.threads or max(1, available_cores() // self.workers)
        yield from self._run(jobs, replace(context, threads=threads))

    def _start(self, context: JobContext, events: bool) -> _Worker:
        spawn = multiprocessing.get_context("spawn")
        ours, theirs = spawn.Pipe()
        process = spawn.Process(target=_worker_main, args=(theirs, context.tracking_uri, self.imports, events),
                                name="debiasbench-sweep-worker")
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def _run(self, jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
        from multiprocessing.connection import wait

        sink = job_sink()
        queue = deque(jobs)
        ends: dict[str, int] = {}  # run key: times a worker ended under the job
        workers: list[_Worker] = []
        try:
            while queue or any(worker.job is not None for worker in workers):
                idle = [worker for worker in workers if worker.job is None and worker.conn is not None]
                for _ in range(min(len(queue) - len(idle), self.workers - len(workers))):
                    worker = self._start(context, sink is not None)
                    workers.append(worker)
                    idle.append(worker)
                for worker in idle:
                    if queue:
                        worker.job = queue.popleft()
                        try:
                            worker.conn.send((self.execute, worker.job, context))
                        except OSError:  # it has ended: the job was never sent
                            queue.appendleft(worker.job)
                            worker.job = None
                            worker.close()
                wait([worker.conn for worker in workers if worker.conn is not None]
                     + [worker.process.sentinel for worker in workers])
                for worker in list(workers):
                    yield from self._receive(worker, queue, ends, sink)
                    if worker.conn is None or not worker.process.is_alive():
                        if worker.process.is_alive():
                            continue  # its pipe ended first: it is ending
                        worker.process.join()
                        worker.close()
                        workers.remove(worker)
                        if worker.job is not None:
                            recorded = "; a run it had begun is recorded KILLED" if worker.stopped() else ""
                            yield self._ended_under(worker.job, f"its worker process (pid {worker.process.pid}) "
                                                    f"{worker.ended_how()}{recorded}", queue, ends)
        except BaseException:  # Ctrl-C, or the sweep's consumer stopped: stop the workers too
            _stop_workers(workers)
            raise
        else:
            for worker in workers:
                try:
                    worker.conn.send(None)
                except (OSError, AttributeError):
                    pass
            for worker in workers:
                worker.close()
                worker.process.join(STOP_GRACE_SECONDS)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(1.0)

    def _receive(self, worker: _Worker, queue: deque[RunConfig], ends: dict[str, int],
                 sink: Callable[[JobEvent], None] | None) -> Iterator[JobResult]:
        """What ``worker`` has sent: events go to ``sink``, results are yielded, and a job its
        worker reports interrupted (SIGINT to it alone) is ``_ended_under``; the pipe is
        closed at its end (the worker has ended, or is ending)."""
        while worker.conn is not None:
            try:
                if not worker.conn.poll():
                    return
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                worker.close()
                return
            if kind == "event":
                if sink is not None:
                    try:
                        sink(payload)
                    except Exception:  # a display error must not stop the sweep
                        pass
                continue
            job, worker.job = worker.job, None
            if kind == "result":
                yield payload
            elif job is not None:
                yield self._ended_under(job, f"its worker process (pid {worker.process.pid}) got {payload}; "
                                        "a run it had begun is recorded KILLED", queue, ends)

    @staticmethod
    def _ended_under(job: RunConfig, what: str, queue: deque[RunConfig], ends: dict[str, int]) -> JobResult:
        """The result of a job whose worker ended under it (``what``): RESTARTED, queued first
        to run again, or FAILED after ``WORKER_RESTARTS`` restarts."""
        key = job.run_key()
        ends[key] = ends.get(key, 0) + 1
        if ends[key] > WORKER_RESTARTS:
            return JobResult(job, "FAILED", reason=f"its worker process died under it a second time (killed, or out "
                             f"of memory), so it is not run again: {what}")
        queue.appendleft(job)
        return JobResult(job, "RESTARTED", reason=f"{what}; the job starts again, from its last checkpoint, "
                         "and the other jobs go on")


class RayTasks:
    """One Ray task per job with ``num_cpus`` / ``num_gpus`` (fractions share a device).

    Connects to the cluster at ``RAY_ADDRESS`` when it is set, else starts Ray on this
    machine (and stops it afterwards). Workers need debiasbench (and any plugin)
    installed and a tracking store they can reach: a server URI on a cluster (a job on a
    node without the sweep's sqlite file fails saying so, instead of logging to a new
    file there). Each task logs its own run, as it would to a server; on one machine
    several processes share an sqlite store (checked with 6 processes writing at once)."""

    def __init__(self, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run

    def __call__(self, jobs: list[RunConfig], context: JobContext) -> Iterator[JobResult]:
        address = os.environ.get("RAY_ADDRESS") or None
        check_ray_address(address)  # before Ray is imported: it reads RAY_AUTH_MODE then
        try:
            import ray
        except ImportError:
            raise UserError("launcher 'ray' needs Ray: pip install 'ray>=2.9'") from None
        started_here = not ray.is_initialized()
        if started_here:
            connect_ray(ray, address)
        try:
            threads = context.threads or max(1, int(self.cpus_per_run))
            context = replace(context, threads=threads)
            check_server_reachable_from_tasks(ray, context.tracking_uri)
            task = ray.remote(_ray_job).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                                max_retries=1)
            sink = job_sink()
            events = None
            if sink is not None:  # the jobs' progress: a queue actor the tasks put to, drained here
                from ray.util.queue import Queue

                events = Queue(actor_options={"num_cpus": 0})
            pending = {task.remote(config, context, events): config for config in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if events is None else 0.25)
                if events is not None and sink is not None:
                    _drain_ray_queue(events, sink)
                if not ready:
                    continue
                config = pending.pop(ready[0])
                try:
                    yield ray.get(ready[0])
                except ray.exceptions.RayError as exc:  # the worker died twice
                    yield JobResult(config, "FAILED", reason=f"Ray task failed: {str(exc).splitlines()[0]}")
        finally:
            if started_here:
                ray.shutdown()


def _ray_job(config: RunConfig, context: JobContext, events: Any = None) -> JobResult:
    """``execute_job`` in a Ray task; its progress goes to the Ray queue ``events``."""
    if events is None:
        return execute_job(config, context)
    set_process_sink(events.put_nowait)
    try:
        return execute_job(config, context)
    finally:
        set_process_sink(None)  # the worker process may run another sweep's task next


def _drain_ray_queue(events: Any, sink: Callable[[JobEvent], None]) -> None:
    try:
        batch = events.get_nowait_batch(events.qsize())
    except Exception:  # the queue's actor is gone: the jobs still end, without progress
        return
    for event in batch:
        try:
            sink(event)
        except Exception:
            pass


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``scheme://host:port[/...]``; None otherwise
    (``auto``, ``local``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def ray_token_available() -> bool:
    """Whether this machine holds a Ray auth token (``RAY_AUTH_TOKEN``, the file named by
    ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``, where ``ray start`` writes it)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def check_ray_address(address: str | None) -> None:
    """Before joining the cluster at ``address`` (``RAY_ADDRESS``), and before Ray is
    imported: an address nothing answers at is one line naming it, at once (Ray itself
    retries for a minute, then raises a traceback). A head started by ``ray start``
    requires its auth token (Ray 2.5x writes it to ``~/.ray/auth_token``), which a driver
    only sends with ``RAY_AUTH_MODE=token``, read when Ray is imported: where the token is
    on this machine and the mode is unset, it is set, so joining a cluster started here,
    on loopback included, works."""
    if address is None:
        return
    target = _host_port(address)
    if target is not None and not _reachable(*target):
        raise UserError(f"RAY_ADDRESS {address!r}: no Ray cluster answers at {target[0]}:{target[1]}; "
                        "start one (ray start --head) or unset RAY_ADDRESS to start Ray here")
    if "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def connect_ray(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (checked by ``check_ray_address``), or start Ray
    here without one; a cluster that refuses is one line."""
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise UserError(f"RAY_ADDRESS {address!r}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None


def _probe(host: str, port: int) -> bool:
    return _reachable(host, port)


def check_server_reachable_from_tasks(ray: Any, tracking_uri: str) -> None:
    """A tracking server must be reachable from the tasks, not only from this process (a
    sweep given ``http://127.0.0.1:5000`` on a cluster would log nowhere): one probe task
    connects to it first, and a failure is one line naming the address."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if not parts.hostname:
        return
    target = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    port = target[1]
    probe = ray.remote(_probe).options(num_cpus=0)
    if not ray.get(probe.remote(target[0], port)):
        raise UserError(f"tracking server {tracking_uri!r} is not reachable from the Ray cluster's workers; "
                        "give --tracking-uri an address every node can reach")


@dataclass(frozen=True)
class LauncherOptions:
    """The command line's launcher settings, checked; each launcher reads those it uses."""

    workers: int = 1  # local: parallel worker processes
    cpus_per_run: float = 1.0  # ray: CPUs per task (fractions allowed); slurm: CPUs per job
    gpus_per_run: float = 0.0  # ray: GPUs per task (0.25: four tasks share one); slurm: GPUs per job
    memory: str | None = None  # slurm: --mem of each job (16G)
    partition: str | None = None  # slurm
    time: str | None = None  # slurm: each job's time limit (minutes, HH:MM:SS, D-HH:MM:SS)
    account: str | None = None  # slurm
    max_running: int | None = None  # slurm: jobs of the sweep's job array running at once
    sbatch: tuple[str, ...] = ()  # slurm: more sbatch options (--qos=high)
    log_folder: str | None = None  # slurm: where submitit writes the jobs' logs
    poll_seconds: float | None = None  # slurm: seconds between two looks at squeue


@LAUNCHERS.register(name="local")
def local_launcher(options: LauncherOptions) -> Launcher:
    """This process, or ``--workers`` spawned worker processes on this machine."""
    return sequential if options.workers == 1 else ProcessPool(options.workers)


@LAUNCHERS.register(name="ray")
def ray_launcher(options: LauncherOptions) -> Launcher:
    """One Ray task per job, on RAY_ADDRESS's cluster or a Ray started here."""
    return RayTasks(options.cpus_per_run, options.gpus_per_run)


#: Launcher settings besides workers, CPUs and GPUs (``make_launcher``'s keywords, a sweep
#: file's ``launcher:`` keys).
LAUNCHER_SETTINGS = ("memory", "partition", "time", "account", "max_running", "sbatch", "log_folder",
                     "poll_seconds")


def make_launcher(name: str, workers: int = 1, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0, **settings: Any) -> Launcher:
    """The launcher registered as ``name`` in ``LAUNCHERS`` (the built-ins ``local``,
    ``ray`` and ``slurm`` (``debiasbench.sweep.slurm``), or a plugin's from the ``debiasbench.launchers`` entry-point
    group) with ``settings`` (``LAUNCHER_SETTINGS``; None leaves one unset); unknown names
    and bad numbers are one-line user errors."""
    from debiasbench.core.errors import ConfigError, unknown_name_message

    if name not in LAUNCHERS:
        broken = LAUNCHERS.broken().get(name)
        if broken is not None:
            raise ConfigError(f"launcher {name!r} failed to load: {broken}")
        raise ConfigError(unknown_name_message("launcher", name, LAUNCHERS.names()))
    if workers < 1:
        raise ConfigError(f"--workers: expected an integer >= 1, got {workers}")
    if not cpus_per_run > 0:
        raise ConfigError(f"--cpus-per-run: expected a number > 0, got {cpus_per_run}")
    if not gpus_per_run >= 0:
        raise ConfigError(f"--gpus-per-run: expected a number >= 0, got {gpus_per_run}")
    unknown = sorted(set(settings) - set(LAUNCHER_SETTINGS))
    if unknown:
        raise ConfigError(unknown_name_message("launcher setting", unknown[0], list(LAUNCHER_SETTINGS)))
    given = {key: value for key, value in settings.items() if value is not None}
    if "sbatch" in given:
        given["sbatch"] = tuple(given["sbatch"]) if isinstance(given["sbatch"], (list, tuple)) else (given["sbatch"],)
    return LAUNCHERS.get(name)(LauncherOptions(workers, cpus_per_run, gpus_per_run, **given))
