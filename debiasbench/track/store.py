"""MLflow logging of runs: params, metrics, tags, the resolved config, the outcome.

The store is MLflow's: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's
own default (an sqlite file ``mlflow.db`` in the working directory). A run that raises
ends as FAILED (or KILLED on Ctrl-C) with the reason in the tag ``debiasbench.failure``,
so a crashed run never looks finished and a sweep can find and rerun it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from debiasbench.contract.config import RunConfig
from debiasbench.core.errors import RunFailed, UserError, redact_credentials, shown
from debiasbench.core.environment import seconds_setting
from debiasbench.core.interrupts import interrupt_reason
from debiasbench.track import heartbeat
from debiasbench.track.inputs import EXPERIMENT_KIND_TAG, TRAINING_KIND
from debiasbench.track.log_buffer import LogBuffer

RUN_KEY_TAG = "debiasbench.run_key"
FAILURE_TAG = "debiasbench.failure"
#: Seconds a run's metrics, params and tags may wait in memory before they are written
#: (``TrackedRun``): live enough for a long run's curves, one write for a tiny run.
FLUSH_INTERVAL = 30.0
#: Seconds one call to a tracking server may take, its retries included, before it is
#: given up (``bound_server_calls``); the variable ``TIMEOUT_VARIABLE`` sets it.
TRACKING_TIMEOUT = 30.0
TIMEOUT_VARIABLE = "DEBIASBENCH_TRACKING_TIMEOUT"


class StoreUnavailable(UserError):
    """A tracking server that does not answer (in time, or at all)."""


class StoreFull(UserError):
    """A tracking store whose disk is full; ``written`` is the file a failed write left
    partly written, where the error names one."""

    def __init__(self, message: str, written: str | None = None):
        super().__init__(message)
        self.written = written


class TrackedRun:
    """Handle of one active MLflow run.

    Metrics, params and tags wait in memory (``LogBuffer``) and are written together:
    when ``flush`` is called, at the first call after ``flush_interval`` seconds since the
    last write, and when the run ends however it ends (``Tracker.start`` flushes before it
    marks the run FINISHED, FAILED or KILLED). A tiny run so writes them in one batch. A
    process killed outright (SIGKILL, power loss) keeps only what was written: the run's
    key tag and ``config.yaml`` from its start, and what was logged up to its last flush,
    at most ``flush_interval`` seconds (or one epoch, where an epoch takes longer) before
    it died. Artifacts are written at once.
    """

    def __init__(self, client: Any, run_id: str, flush_interval: float = FLUSH_INTERVAL):
        self.client = client
        self.run_id = run_id
        self.flush_interval = flush_interval
        self.pending = LogBuffer()
        self._flushed_at = time.monotonic()
        #: Seconds spent writing to the store so far (the run's ``tracking_seconds``).
        self.seconds = 0.0

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        began = time.perf_counter()
        self.client.log_artifact(self.run_id, str(path), folder)
        self.seconds += time.perf_counter() - began

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.pending.add_metrics(metrics, int(time.time() * 1000), step or 0)
        self._flush_if_due()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.pending.add_params(params)
        self._flush_if_due()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.pending.add_tags(tags)
        self._flush_if_due()

    def log_inputs(self, datasets: list[Any]) -> None:
        """Record ``mlflow.entities.DatasetInput``s as the run's inputs (the UI's Dataset
        column; ``debiasbench.track.inputs.dataset_input``), written at once."""
        began = time.perf_counter()
        try:
            self.client.log_inputs(self.run_id, datasets=datasets)
        except Exception as exc:
            # Two runs starting at once on the same data both find no dataset row and
            # both insert it; the loser's insert breaks the store's unique key. The row
            # now exists, and a second call links the run to it.
            if not is_duplicate_row(exc):
                raise
            self.client.log_inputs(self.run_id, datasets=datasets)
        self.seconds += time.perf_counter() - began

    def flush(self) -> None:
        """Write everything logged so far, in as few ``log_batch`` calls as MLflow allows."""
        self._flushed_at = time.monotonic()
        began = time.perf_counter()
        for batch in self.pending.take():
            self.client.log_batch(self.run_id, metrics=batch.metrics, params=batch.params, tags=batch.tags)
        self.seconds += time.perf_counter() - began

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= self.flush_interval:
            self.flush()


class Tracker:
    """Opens runs in one experiment of one tracking store.

    Creating a ``Tracker`` checks what can be checked without writing (an sqlite file or
    folder this process cannot write is a one-line error at once) and opens nothing: the
    store is opened, created where it does not exist, on first use. A command that refuses
    its input after this point (a missing data file) so leaves no store behind.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "debiasbench",
                 tags: Mapping[str, str] | None = None):
        """``tags`` go on every run this tracker opens (a sweep's command and file)."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        quiet_mlflow()

        self.uri = absolute_tracking_uri(tracking_uri)  # sqlite:///mlflow.db: the file here
        self.experiment = experiment
        self.tags = dict(tags or {})
        bound_server_calls()
        check_store_writable(self.uri)
        self._client: Any = None
        self._reader: Any = None
        self._experiment_id: str | None = None

    @property
    def shown_uri(self) -> str:
        """The store's URI as it may be printed: without credentials."""
        return redact_credentials(self.uri)

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of the store, opened (and the store created) on first use."""
        if self._client is None:
            self._open()
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._open()
        assert self._experiment_id is not None
        return self._experiment_id

    def _open(self) -> None:
        from mlflow.tracking import MlflowClient

        try:
            prepare_store(self.uri)
            client = StoreClient(MlflowClient(self.uri), self.uri)
            self._experiment_id = get_or_create_experiment(client, self.experiment,
                                                           artifact_location(self.uri, self.experiment))
        except UserError:
            raise
        except Exception as exc:  # unreachable server, unwritable sqlite file, bad URI
            raise UserError(f"tracking store {self.shown_uri!r} cannot be used: "
                            f"{redact_credentials(_first_line(exc))}") from None
        self._client = client

    @contextlib.contextmanager
    def start(self, config: RunConfig, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, or FAILED / KILLED with the reason, whatever happens;
        what it logged is written before it ends (see ``TrackedRun`` for a killed process).
        ``tags`` known before the run starts are created with it (no write of their own).

        The run is created with its holder and a heartbeat this process keeps fresh until
        it ends (``debiasbench.track.heartbeat``). Where another run of the job, created no
        later, has a holder that may be alive, this one is ended and deleted at once and
        ``RunHeld`` is raised: two processes that share no claim folder and start the job at
        once never both run it."""
        name = f"{config.method}-{config.dataset}-{config.model}-s{config.seed}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **self.tags, **{k: str(v) for k, v in (tags or {}).items()}, RUN_KEY_TAG: config.run_key(),
            **heartbeat.holder_tags()})
        beat = heartbeat.Heartbeat(self.client, run.info.run_id)
        try:
            self._give_way(run, config.run_key())
        except BaseException:
            beat.stop()
            raise
        tracked = TrackedRun(self.client, run.info.run_id)
        try:
            tracked.log_params(config.flat())
            self.client.log_dict(tracked.run_id, config.to_dict(), "config.yaml")
            yield tracked
            tracked.flush()
        except KeyboardInterrupt:
            self._end(tracked, "KILLED", interrupt_reason())
            raise
        except RunFailed as exc:
            self._end(tracked, "FAILED", exc.reason)
            raise
        except BaseException as exc:
            if isinstance(exc, StoreFull):
                self._remove_partial_artifact(tracked, exc.written)
            self._end(tracked, "FAILED", f"{type(exc).__name__}: {_first_line(exc)}")
            raise
        else:
            self.client.set_terminated(tracked.run_id, "FINISHED")
        finally:
            beat.stop()

    def _give_way(self, run: Any, key: str) -> None:
        """End and delete ``run``, just created, and raise ``RunHeld`` where another RUNNING
        run of its job, created no later, has a holder that may be alive: of two processes
        that create runs of one job at once, at least the later one gives way (both, where
        they were created in the same millisecond)."""
        for other in self.search(f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'"):
            if (other.info.run_id != run.info.run_id and other.info.start_time <= run.info.start_time
                    and heartbeat.holder_gone(other) is None):
                self._end(TrackedRun(self.client, run.info.run_id), "KILLED",
                          f"another process ({heartbeat.describe(other)}) started this job first: run "
                          f"{other.info.run_id}")
                self.client.delete_run(run.info.run_id)
                raise heartbeat.RunHeld(f"another process ({heartbeat.describe(other)}) is running this job "
                                        f"(run key {key}, run {other.info.run_id}): wait for it to end")

    def live_run(self, run_key: str) -> Any | None:
        """A RUNNING run of ``run_key`` whose holder may be alive (``heartbeat.holder_gone``),
        if any: while there is one, the job is busy, whichever claim folder its holder uses."""
        for run in self.search(f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'RUNNING'"):
            if heartbeat.holder_gone(run) is None:
                return run
        return None

    def _remove_partial_artifact(self, tracked: TrackedRun, written: str | None) -> None:
        """Remove the artifact a write that filled the disk left partly written (a copy cut
        short is of no use), where it lies in this run's experiment's artifact folder: on a
        disk with no byte left, the space it took is what recording the run FAILED needs
        (else the run stayed RUNNING until a later run of its job marked it KILLED)."""
        from urllib.parse import unquote, urlsplit

        if not written:
            return
        with contextlib.suppress(Exception):  # best effort: the failure is recorded if it can be
            location = urlsplit(self.client.get_experiment(self.experiment_id).artifact_location)
            if location.scheme not in ("", "file"):
                return
            root, given = Path(unquote(location.path)).resolve(), Path(written)
            if not given.is_symlink() and given.is_file() and given.resolve().is_relative_to(root):
                given.unlink()

    def _end(self, tracked: TrackedRun, status: str, reason: str) -> None:
        """Write what the run logged (what cannot be written is given up: the failure must
        still be recorded), then the reason and the status."""
        from mlflow.entities import RunTag

        try:
            tracked.flush()
        except Exception as exc:
            reason = f"{reason} (its last metrics could not be written: {_first_line(exc)})"
        self.client.log_batch(tracked.run_id, tags=[RunTag(FAILURE_TAG, redact_credentials(reason)[:5000])])
        self.client.set_terminated(tracked.run_id, status)

    def client_for_reading(self) -> Any | None:
        """A client of the store for reads that must create nothing (neither the store nor
        the tracker's experiment): the open one, else one of the existing store; None where
        the sqlite store does not exist yet."""
        if self._client is not None:
            return self._client
        path = sqlite_path(self.uri)
        if path is not None and not path.is_file():
            return None
        if self._reader is None:
            self._reader = open_client(self.uri)
        return self._reader

    def get_run(self, run_id: str, what: str = "run") -> Any:
        """Run ``run_id`` of the store, read without creating anything (``client_for_reading``);
        ``what`` names it where it is not found (``base_run``)."""
        client = self.client_for_reading()
        if client is None:
            raise UserError(f"{what} {run_id!r} not found: tracking store {self.shown_uri!r} does not exist yet")
        try:
            return client.get_run(run_id)
        except UserError:
            raise
        except Exception:
            raise UserError(f"{what} {run_id!r} not found in tracking store {self.shown_uri!r}") from None

    def download(self, run_id: str, artifact: str, folder: str | Path) -> str:
        """Local copy of one artifact of a run."""
        return self.client.download_artifacts(run_id, artifact, str(folder))

    def finished_run(self, run_key: str) -> Any | None:
        """The FINISHED run with this run key, if any (sweeps skip those jobs)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'",
            max_results=1)
        return runs[0] if runs else None

    def finished_runs(self) -> dict[str, Any]:
        """Every FINISHED run of the experiment by run key, in one paged query."""
        return finished_by_key(self.client, self.experiment_id)

    def search(self, filter_string: str = "") -> list[Any]:
        """Every run of the experiment matching ``filter_string``."""
        return search_all(self.client, self.experiment_id, filter_string)

    def end_stale_runs(self, run_key: str) -> int:
        """Mark KILLED the runs of ``run_key`` still RUNNING whose holder is provably gone
        (``heartbeat.holder_gone``: killed by SIGKILL or a power loss before it could say so);
        the job is about to run again. Runs whose holder may be alive are left alone (another
        process, from another working directory or machine, runs the job): ``runner.run``
        waits for them or reports the job busy. The number marked."""
        marked = 0
        for run in self.search(f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'RUNNING'"):
            gone = heartbeat.holder_gone(run)
            if gone is not None:
                self._end(TrackedRun(self.client, run.info.run_id), "KILLED",
                          f"interrupted: the process ended without closing the run ({gone}); its job ran again")
                marked += 1
        return marked


def is_duplicate_row(exc: BaseException) -> bool:
    """Whether ``exc`` is a store's refusal of a row that another writer inserted first
    (sqlite's and PostgreSQL's unique-key errors, as MLflow passes them on)."""
    text = str(exc)
    return "UNIQUE constraint failed" in text or "duplicate key value" in text or "IntegrityError" in text


def get_or_create_experiment(client: Any, name: str, location: str | None, attempts: int = 5) -> str:
    """The id of experiment ``name``, created if missing. Two processes creating it at
    once (two sweeps on a fresh store or server) both get the one that exists: the loser
    of the race reads the winner's instead of failing on RESOURCE_ALREADY_EXISTS.

    The experiment is of the training kind (the tag ``EXPERIMENT_KIND_TAG``, so MLflow's
    UI shows it as model training, not as a GenAI app); an existing one without a kind
    (made by an earlier version of this tool) gets it; one whose kind was chosen is kept."""
    for attempt in range(attempts):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise UserError(f"experiment {name!r} was deleted in the tracking store: restore it "
                                "(mlflow experiments restore) or choose another name (run key experiment)")
            if not (found.tags or {}).get(EXPERIMENT_KIND_TAG):
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name, artifact_location=location,
                                                tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}))
        except Exception as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc) and not is_duplicate_row(exc):
                raise
            time.sleep(0.05 * (attempt + 1))  # another process created it meanwhile: read it
    raise UserError(f"experiment {name!r} could neither be found nor created")


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI (None for other stores and in-memory)."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri[len("sqlite:///"):].split("?")[0]).expanduser()


def check_store_writable(uri: str) -> None:
    """One line, at once, for a URI whose runs would not persist or whose options would be
    ignored (``check_tracking_uri``), an sqlite store this process cannot write (a
    read-only file, a folder on a read-only filesystem, a missing folder), a file that is
    not an MLflow store of this MLflow's schema (``check_sqlite_store``) or a tracking
    server nothing answers at: MLflow would otherwise retry for minutes, print its
    tracebacks or write its tables into another application's database. Other stores are
    checked when first opened."""
    check_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        check_server_answers(uri)
        return
    path = sqlite_path(uri)
    if path is None:
        return
    shown_uri = redact_credentials(uri)
    folder = path.parent if str(path.parent) else Path(".")
    check_store_file(uri)
    if not folder.is_dir():
        raise UserError(f"tracking store {shown_uri!r}: folder {str(folder)!r} does not exist")
    # sqlite writes a journal beside the file, so the folder must be writable too.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"tracking store {shown_uri!r}: folder {str(folder)!r} is not writable "
                        "(a read-only filesystem or permissions); choose another --tracking-uri")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"tracking store {shown_uri!r}: file {str(path)!r} is not writable; "
                        "choose another --tracking-uri")
    check_sqlite_store(uri)


#: Options of an sqlite URI that MLflow's store (SQLAlchemy's pysqlite driver) applies.
SQLITE_OPTIONS = ("timeout",)


def check_store_file(uri: str) -> None:
    """Refuse, in one line, an sqlite store's path that exists and is not a regular file (a
    folder, a named pipe sqlite would wait on for good, a device), or is a symbolic link
    that leads to no file (creating the store would replace the link): said for what it
    is, before sqlite opens it."""
    import stat

    from debiasbench.core.files import kind_of

    path = sqlite_path(uri)
    if path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        if path.is_symlink():  # creating the store would replace the link with a file
            raise UserError(f"tracking store {redact_credentials(uri)!r}: {str(path)!r} is a symbolic link to "
                            f"{os.readlink(path)!r}, which leads to no file (a missing target or a loop of "
                            "links); point it at a store, or name the file itself") from None
        return  # not there (a new store), or not reachable: the folder's checks say why
    if not stat.S_ISREG(mode):
        raise UserError(f"tracking store {redact_credentials(uri)!r}: {str(path)!r} is {kind_of(mode)}, "
                        "not an sqlite file")


def check_tracking_uri(uri: str) -> None:
    """Refuse, in one line, a tracking URI whose runs would not outlive the command (an
    in-memory sqlite database) or whose options would be ignored: an sqlite URI's query
    arguments other than ``SQLITE_OPTIONS`` (SQLAlchemy drops them with a warning, so
    ``?mode=ro`` writes all the same) and a server address's query or fragment (MLflow
    appends its API paths after them)."""
    from urllib.parse import parse_qsl, urlsplit

    shown_uri = redact_credentials(uri)
    if uri.startswith("sqlite:"):
        database, _, query = uri.removeprefix("sqlite:").partition("?")
        options = [key for key, _ in parse_qsl(query, keep_blank_values=True)]
        if database in ("", "//", "///") or database.endswith(":memory:") or "memory" in (
                value for key, value in parse_qsl(query) if key == "mode"):
            raise UserError(f"tracking store {shown_uri!r} is an in-memory database: its runs would be lost "
                            "when the command ends; name a file (sqlite:///mlflow.db) or a server")
        ignored = [key for key in dict.fromkeys(options) if key not in SQLITE_OPTIONS]
        if ignored or (query and not options):
            raise UserError(f"tracking store {shown_uri!r}: option {shown((ignored or [query])[0])} of the URI is "
                            f"not applied to an sqlite store (only {', '.join(SQLITE_OPTIONS)} is); remove it")
        if "#" in uri:
            raise UserError(f"tracking store {shown_uri!r}: an sqlite URI takes no fragment (#...: it would "
                            "become part of the file's name); remove it")
        timeouts = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == "timeout"]
        if len(timeouts) > 1:
            raise UserError(f"tracking store {shown_uri!r}: option 'timeout' is given {len(timeouts)} times; "
                            "give it once")
        if timeouts and not _positive_seconds(timeouts[0]):
            raise UserError(f"tracking store {shown_uri!r}: option 'timeout' expects seconds (a number > 0), "
                            f"got {shown(timeouts[0])}")
    elif uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        if parts.query or parts.fragment:
            raise UserError(f"tracking store {shown_uri!r}: a server address takes no query or fragment "
                            "(MLflow would not apply it); give scheme, host, port and path only")


def _positive_seconds(text: str) -> bool:
    """Whether ``text`` is a finite number of seconds above zero."""
    import math

    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def check_sqlite_store(uri: str) -> None:
    """Refuse, in one line and without writing to it, an existing sqlite file that MLflow
    must not open as this store: a file that is not an sqlite database, a database of
    another application (MLflow would add its tables and runs to it), an MLflow store of
    an older schema (MLflow would migrate it, or fail with a traceback: it is upgraded
    only when asked, ``mlflow db upgrade``) or of a newer MLflow. An empty file, or a
    database without tables, views, indexes or triggers, is a new store. The file is
    opened read-only, and a database in WAL mode that no process has open (no ``-wal``
    file beside it) as immutable: a read-only connection would leave the ``-wal`` and
    ``-shm`` files sqlite makes for it beside another application's database."""
    import sqlite3
    from urllib.parse import quote

    path = sqlite_path(uri)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    shown_uri = redact_credentials(uri)
    options = "mode=ro&immutable=1" if _wal_mode(path) and not Path(f"{path}-wal").exists() else "mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path.resolve()))}?{options}", uri=True,
                                                timeout=30)) as db:
            objects = [(kind, name) for kind, name in db.execute("SELECT type, name FROM sqlite_master")
                       if not name.startswith("sqlite_")]
            tables = {name for kind, name in objects if kind == "table"}
            versions = ([row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
                        if "alembic_version" in tables else [])
    except sqlite3.DatabaseError as exc:
        raise UserError(f"tracking store {shown_uri!r}: {str(path)!r} is not an sqlite database ({exc}); "
                        "name a new file or an MLflow store") from None
    if not objects:
        return
    if not MLFLOW_TABLES <= tables:
        if tables:
            listed = "tables " + ", ".join(sorted(tables)[:5]) + (f", ... ({len(tables)} tables)"
                                                                  if len(tables) > 5 else "")
        else:  # views, triggers or indexes only
            listed = ", ".join(f"{kind} {name}" for kind, name in sorted(objects)[:5]) + (
                f", ... ({len(objects)} objects)" if len(objects) > 5 else "")
        raise UserError(f"tracking store {shown_uri!r}: {str(path)!r} is a database of another application "
                        f"({listed}), not an MLflow store; it is left unchanged: name a new file "
                        "or an MLflow store")
    head, known = mlflow_schema()
    version = versions[0] if len(versions) == 1 else None
    if version == head:
        return
    import mlflow

    if version in known:
        raise UserError(f"tracking store {shown_uri!r} has an older MLflow schema (revision {version}; the "
                        f"installed MLflow {mlflow.__version__} uses {head}) and is not upgraded unasked: back it up, "
                        f"then run `mlflow db upgrade {shown_uri}`")
    raise UserError(f"tracking store {shown_uri!r} has MLflow schema {shown(version)}, which the installed MLflow "
                    f"{mlflow.__version__} does not know (a newer MLflow made it?): use that MLflow's version")


def _wal_mode(path: Path) -> bool:
    """Whether the sqlite database at ``path`` is in WAL mode (its header's write and read
    versions, bytes 18 and 19, are 2)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    return header.startswith(b"SQLite format 3\0") and header[18:20] == b"\x02\x02"


#: Tables every MLflow tracking store has (its schema version is in ``alembic_version``).
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})


@functools.lru_cache(maxsize=1)
def mlflow_schema() -> tuple[str, frozenset[str]]:
    """The head revision of the installed MLflow's store schema and every revision it knows.

    Read from the ``revision = "..."`` / ``down_revision = "..."`` lines of MLflow's
    migration files (a few milliseconds) rather than through alembic, which imports every
    migration (0.6 s a process); alembic decides only where those lines do not give a
    single head."""
    import importlib.util
    import re

    found = importlib.util.find_spec("mlflow.store.db_migrations")  # located, not imported
    versions = Path(found.origin).parent / "versions" if found is not None and found.origin else Path("-")
    revisions: set[str] = set()
    parents: set[str] = set()
    pattern = re.compile(r"""^(down_revision|revision)\s*=\s*["']([0-9a-zA-Z_]+)["']""", re.MULTILINE)
    for script in versions.glob("*.py"):
        for kind, value in pattern.findall(script.read_text(encoding="utf-8", errors="replace")):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) == 1:
        return next(iter(heads)), frozenset(revisions)
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    scripts = ScriptDirectory.from_config(_get_alembic_config(""))
    return _get_latest_schema_revision(), frozenset(r.revision for r in scripts.walk_revisions())


def check_server_answers(uri: str, timeout: float = 5.0) -> None:
    """A ``UserError`` naming ``uri`` when no server accepts a connection at its host and
    port within ``timeout`` seconds (MLflow's own client retries for about two minutes)."""
    import socket
    from urllib.parse import urlsplit

    shown_uri = redact_credentials(uri)
    parts = urlsplit(uri)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"tracking store {shown_uri!r}: not a valid address") from None
    if not parts.hostname:
        raise UserError(f"tracking store {shown_uri!r}: not a valid address")
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"tracking store {shown_uri!r}: no server answers at {parts.hostname}:{port} "
                        f"({exc.strerror or type(exc).__name__})") from None


def tracking_timeout() -> float:
    """Seconds one call to a tracking server may take: ``DEBIASBENCH_TRACKING_TIMEOUT``, else
    ``TRACKING_TIMEOUT``."""
    return seconds_setting(TIMEOUT_VARIABLE, TRACKING_TIMEOUT, 1, 86400)


#: The values ``bound_server_calls`` set, so that a later call may change its own (and
#: never a value the user set).
_BOUNDS_SET: dict[str, str] = {}


def bound_server_calls() -> float:
    """Bound every call MLflow's REST client makes to a tracking server to about
    ``tracking_timeout()`` seconds (30 by default), retries included; the bound.

    MLflow waits 120 s per request and retries 7 times with growing pauses, so a server
    that accepts connections and never answers held a command silent for many minutes.
    Three attempts share the bound: MLflow's variables ``MLFLOW_HTTP_REQUEST_TIMEOUT``
    (a third of it, less the pause), ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (2),
    ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (a pause of 2 s before the last attempt where
    the bound is 12 s or more) and ``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`` (0) are set for
    this process and the processes it starts, each unless the user set it."""
    limit = tracking_timeout()
    backoff = 1 if limit >= 12 else 0
    wanted = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int((limit - 2 * backoff) // 3))),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(backoff),
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
    for name, value in wanted.items():
        if os.environ.get(name) in (None, _BOUNDS_SET.get(name)):
            os.environ[name] = _BOUNDS_SET[name] = value
    return limit


def server_label(uri: str) -> str:
    """A server's address as messages name it: scheme, host and port, no credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def store_problem(exc: BaseException, uri: str, seconds: float) -> UserError | None:
    """The one-line error for a failure that is the store's, not the call's: a full disk
    (``StoreFull``, naming where) or a tracking server that did not answer in time or at
    all (``StoreUnavailable``, naming the server and the bound); None for anything else."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(e) for e in chain)
    if (any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain)
            or "database or disk is full" in text or "No space left on device" in text):
        path = sqlite_path(uri)
        # shutil's copies name the source first and the file written second
        written = next((e.filename2 or e.filename for e in chain if isinstance(e, OSError) and e.filename), None)
        where = (f"the disk of tracking store {str(path)!r}" if path is not None
                 else f"the disk of tracking store {redact_credentials(uri)!r}")
        detail = f" (writing {str(written)!r})" if written else ""
        free = f"free space in {str(path.parent)!r}" if path is not None else "free space there"
        return StoreFull(f"{where} is full{detail}: {free} or choose another --tracking-uri",
                         str(written) if written else None)
    if uri.startswith(("http://", "https://")):
        lowered = text.lower()
        refusal = next((e for e in chain if getattr(e, "error_code", None) in ("UNAUTHENTICATED", "PERMISSION_DENIED")),
                       None)
        if refusal is not None:
            return StoreUnavailable(f"tracking server {server_label(uri)} refused the request "
                                    f"({redact_credentials(_first_line(refusal))[:300]}); "
                                    "check the user name and password (in the URI, or MLFLOW_TRACKING_USERNAME "
                                    "and MLFLOW_TRACKING_PASSWORD) and what they may do")
        server_errors = re.search(r"too many (5\d\d) error responses", text)
        if server_errors:
            return StoreUnavailable(f"tracking server {server_label(uri)} answered with HTTP {server_errors[1]} "
                                    f"errors to every attempt for {seconds:.0f} s; see the server's log")
        if "timed out" in lowered or "timeout" in lowered:
            return StoreUnavailable(f"tracking server {server_label(uri)} did not answer within {seconds:.0f} s; "
                                    f"{TIMEOUT_VARIABLE} (now {tracking_timeout():g}) sets how many seconds a "
                                    "call may wait")
        if "max retries exceeded" in lowered or "connection refused" in lowered or "connection aborted" in lowered:
            return StoreUnavailable(f"tracking server {server_label(uri)} stopped answering "
                                    f"(no connection after {seconds:.0f} s)")
    return None


#: Seconds a call to a tracking server may run past ``tracking_timeout()`` before
#: ``StoreClient`` gives it up itself: MLflow's request timeout bounds each wait for a byte,
#: not the call, so a server that trickles a byte every few seconds held a call forever.
CALL_DEADLINE_MARGIN = 5.0
#: ``MlflowClient`` methods left to MLflow's per-read timeout alone: they move files
#: (checkpoints of gigabytes) whose transfer may rightly take longer than the bound.
TRANSFER_CALLS = frozenset({"log_artifact", "log_artifacts", "download_artifacts"})


def call_within(seconds: float, function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, or ``TimeoutError`` once it has run ``seconds``.

    The call runs in a daemon thread (its context copied), which a call given up is left
    to: a command then exits without waiting for it. Ctrl-C reaches the waiting thread at
    once."""
    import contextvars
    import threading

    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(function, *args, **kwargs)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="debiasbench-tracking-call", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"the call timed out after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class StoreClient:
    """An ``MlflowClient`` whose failures that are the store's (``store_problem``: a full
    disk, a server that does not answer) are one-line ``UserError``s instead of MLflow's
    exceptions and tracebacks; anything else passes through unchanged. After a server did
    not answer, calls fail at once for ``tracking_timeout()`` seconds: a failing run's
    last writes do not each wait the whole bound again.

    A call to a tracking server (but an artifact transfer, ``TRANSFER_CALLS``) is given up
    after ``tracking_timeout()`` + ``CALL_DEADLINE_MARGIN`` seconds whatever the server
    sends meanwhile (``call_within``)."""

    def __init__(self, client: Any, uri: str):
        self._client = client
        self.uri = uri
        self._down: UserError | None = None
        self._down_until = 0.0
        self._server = uri.startswith(("http://", "https://"))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if name.startswith("_") or not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._down is not None and time.monotonic() < self._down_until:
                raise type(self._down)(str(self._down))
            began = time.monotonic()
            try:
                if self._server and name not in TRANSFER_CALLS:
                    return call_within(tracking_timeout() + CALL_DEADLINE_MARGIN, value, *args, **kwargs)
                return value(*args, **kwargs)
            except UserError:
                raise
            except Exception as exc:
                problem = store_problem(exc, self.uri, time.monotonic() - began)
                if problem is None:
                    raise
                if isinstance(problem, StoreUnavailable):
                    self._down, self._down_until = problem, time.monotonic() + tracking_timeout()
                raise problem from exc

        return call


def open_client(uri: str) -> StoreClient:
    """An MLflow client of the store at ``uri`` (``StoreClient``), its server calls bounded
    (``bound_server_calls``)."""
    from mlflow.tracking import MlflowClient

    bound_server_calls()
    quiet_mlflow()
    return StoreClient(MlflowClient(uri), uri)


def quiet_mlflow() -> None:
    """MLflow's and alembic's own logging kept to warnings: store creation logs at INFO, and
    MLflow logs the traceback of every database error it then raises (a full disk printed
    hundreds of lines), which ``StoreClient`` turns into one line."""
    for noisy in ("alembic", "mlflow"):  # runs print their own progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def prepare_store(uri: str) -> None:
    """Create an sqlite store that does not exist yet, whole or not at all, one process at
    a time: MLflow builds its schema in many steps (migrations), so two processes starting
    on one fresh file race (``table _alembic_tmp_experiments already exists``), and a
    creation cut short (a full disk, a kill) leaves a file MLflow cannot open again.

    Under an exclusive lock on ``<file>.lock``, the schema is built in a temporary file
    beside the store and renamed onto it when complete; a process that waited on the lock
    finds the store made. The lock file is removed by its holder, while still holding it,
    however the creation ends (as ``debiasbench.run.claims`` removes a claim's): a process
    that waited on the removed file sees that the path no longer names it and locks a new
    one, so nothing is left beside the store. Other stores (servers, file stores) are left
    to MLflow."""
    path = sqlite_path(uri)
    if path is None or (path.exists() and not _creation_temporaries(path)):
        return
    import fcntl

    lock_path = Path(f"{path}.lock")
    while True:
        lock = open(lock_path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            opened, named = os.fstat(lock.fileno()), os.stat(lock_path)
        except FileNotFoundError:  # its holder removed the file meanwhile: lock a new one
            lock.close()
            continue
        except BaseException:
            lock.close()
            raise
        if (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino):
            break
        lock.close()  # locked a file its holder removed on release: lock the one now there
    with lock:
        try:
            # Creators hold the lock while they build: a temporary found under it is one
            # a creator killed outright (SIGKILL, power loss) left behind.
            for stale in _creation_temporaries(path):
                with contextlib.suppress(OSError):
                    stale.unlink()
            if path.exists():
                return
            # A new name per attempt: MLflow keeps per-URI state in the process.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.creating")
            try:
                _build_sqlite_schema(f"sqlite:///{temporary.resolve()}", path.parent)
                with open(temporary, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except OSError as exc:
                raise UserError(f"tracking store {redact_credentials(uri)!r} could not be created "
                                f"({exc.strerror or exc})") from None
            except Exception as exc:
                text = _first_line(exc)
                if "full" in text.lower():
                    text += f": free space in {str(path.parent)!r}"
                raise UserError(f"tracking store {redact_credentials(uri)!r} could not be created ({text})") from None
            finally:
                temporary.unlink(missing_ok=True)
        finally:
            with contextlib.suppress(OSError):
                lock_path.unlink()  # still held: a waiter that locked it now locks a new file
            fcntl.flock(lock, fcntl.LOCK_UN)


def _creation_temporaries(path: Path) -> list[Path]:
    """The temporary files ``prepare_store`` builds the store at ``path`` in."""
    try:
        return [entry for entry in path.parent.glob(f".{glob.escape(path.name)}.*.creating") if entry.is_file()]
    except OSError:
        return []


def _build_sqlite_schema(uri: str, folder: Path) -> None:
    """MLflow's tables in the new sqlite file at ``uri``; its connections are closed after,
    so a failed attempt holds no deleted file open (whose space a full disk would keep).

    The file is the temporary one of ``prepare_store``, which syncs it to disk once before
    renaming it onto the store, so its connections skip sqlite's sync of every commit
    (``PRAGMA synchronous=OFF``, ``unsynced_connections``): a crash meanwhile leaves at most
    a temporary file that nothing opens. MLflow's migrations commit many times; syncing
    each made creating a store take 5.5-6.9 s instead of 1.2-1.7 s (0.85-1.0 s instead of
    0.57-0.73 s of CPU; 5 rounds on the 2-core development machine at a load average of
    5.1-5.6, 2026-12-06)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = sqlite_path(uri)
    assert path is not None, uri
    try:
        with unsynced_connections(str(path)):
            SqlAlchemyStore(uri, (folder / "mlruns").as_uri())
    finally:
        engines = getattr(SqlAlchemyStore, "_engine_map", {})
        engine = engines.pop(uri, None)
        if engine is not None:
            engine.dispose()


@contextlib.contextmanager
def unsynced_connections(path: str) -> Iterator[None]:
    """In the block, every sqlite connection this process opens to the file at ``path`` (a
    file no one else uses, synced before it is used as a store) skips sqlite's syncs; other
    connections, and connections to it opened after the block, are as sqlite makes them
    (``synchronous`` is a setting of a connection, not of the file)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = os.path.realpath(path)

    def unsynced(connection: Any, _record: Any) -> None:
        if isinstance(connection, sqlite3.Connection) and any(
                name == "main" and file and os.path.realpath(file) == target
                for _, name, file in connection.execute("PRAGMA database_list")):
            connection.execute("PRAGMA synchronous=OFF")

    event.listen(Engine, "connect", unsynced)
    try:
        yield
    finally:
        event.remove(Engine, "connect", unsynced)


def existing_store_client(uri: str) -> Any | None:
    """A client of the store at ``uri`` (absolute) for reading, opened without writing:
    None where its sqlite file does not exist yet; a server that does not answer, another
    application's database or an MLflow store of an older schema is refused (the file left
    unchanged). What readers (``sweep --dry-run``, ``leaderboard``, ``ui``) open a store with."""
    check_store_file(uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        return None
    if uri.startswith(("http://", "https://")):
        check_server_answers(uri)
    check_sqlite_store(uri)
    return open_client(uri)


def finished_keys(tracking_uri: str | None, experiments: set[str]) -> set[str]:
    """Run keys with a FINISHED run in ``experiments`` of the store, read without writing
    anything: a store or experiment that does not exist yet has none (``sweep --dry-run``)."""
    client = existing_store_client(absolute_tracking_uri(tracking_uri))
    if client is None:
        return set()
    keys: set[str] = set()
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            keys.update(finished_by_key(client, experiment.experiment_id))
    return keys


def finished_by_key(client: Any, experiment_id: str) -> dict[str, Any]:
    """Every FINISHED run of an experiment by its run key, in one paged query."""
    runs = search_all(client, experiment_id, "attributes.status = 'FINISHED'")
    return {run.data.tags[RUN_KEY_TAG]: run for run in runs if RUN_KEY_TAG in run.data.tags}


def search_all(client: Any, experiment_id: str, filter_string: str = "") -> list[Any]:
    """Every matching run of one experiment: MLflow returns at most a page per call, and
    stopping at the first page would silently drop runs."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def absolute_tracking_uri(uri: str | None) -> str:
    """``uri`` (or MLflow's default) with a relative sqlite or file path made absolute,
    so worker processes in other directories write to the same store."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    check_tracking_uri(uri)
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme) and not uri.startswith(scheme + "/"):
            return scheme + str(Path(uri[len(scheme):]).resolve())
    if "://" not in uri:  # a plain path is a file store
        return str(Path(uri).resolve())
    return uri


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment of an sqlite store keeps its artifacts: ``mlruns/`` beside
    the database file. MLflow's own default is ``./mlruns`` of whatever directory the
    experiment happened to be created from, which scatters one store's artifacts over
    every working directory it was used in. None (MLflow decides) for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///"):].split("?")[0]).expanduser().resolve()
    return (database.parent / "mlruns" / experiment_folder(experiment)).as_uri()


def experiment_folder(experiment: str) -> str:
    """The folder of ``mlruns/`` that holds an experiment's artifacts, one per name and
    always inside ``mlruns/``: a name of ASCII letters, digits, ``-``, ``_`` and ``.``
    that starts with a letter or digit is its own folder; any other name (``..``,
    ``a/b``, ``a b``, ``.hidden``, non-ASCII letters) is made of those characters
    (others as ``_``) followed by ``~`` and 16 hex digits of the name's SHA-256, so
    ``a/b``, ``a b`` and ``a_b`` get three folders (no name of the first kind has a ``~``)."""
    if experiment[:1].isascii() and experiment[:1].isalnum() and all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in experiment):
        return experiment
    readable = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in experiment)
    digest = hashlib.sha256(experiment.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable.lstrip('.') or 'experiment'}~{digest}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
