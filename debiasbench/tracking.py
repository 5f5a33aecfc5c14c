"""MLflow logging of runs: params, metrics, tags, the resolved config, the outcome.

The store is MLflow's: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's
own default (an sqlite file ``mlflow.db`` in the working directory). A run that raises
ends as FAILED (or KILLED on Ctrl-C) with the reason in the tag ``debiasbench.failure``,
so a crashed run never looks finished and a sweep can find and rerun it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from debiasbench.config import RunConfig
from debiasbench.errors import RunFailed, UserError
from debiasbench.log_buffer import LogBuffer

RUN_KEY_TAG = "debiasbench.run_key"
FAILURE_TAG = "debiasbench.failure"
#: Seconds a run's metrics, params and tags may wait in memory before they are written
#: (``TrackedRun``): live enough for a long run's curves, one write for a tiny run.
FLUSH_INTERVAL = 30.0


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

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.pending.add_metrics(metrics, int(time.time() * 1000), step or 0)
        self._flush_if_due()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.pending.add_params(params)
        self._flush_if_due()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.pending.add_tags(tags)
        self._flush_if_due()

    def flush(self) -> None:
        """Write everything logged so far, in as few ``log_batch`` calls as MLflow allows."""
        self._flushed_at = time.monotonic()
        for batch in self.pending.take():
            self.client.log_batch(self.run_id, metrics=batch.metrics, params=batch.params, tags=batch.tags)

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= self.flush_interval:
            self.flush()


class Tracker:
    """Opens runs in one experiment of one tracking store."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "debiasbench",
                 tags: Mapping[str, str] | None = None):
        """``tags`` go on every run this tracker opens (a sweep's command and file)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for noisy in ("alembic", "mlflow"):  # store creation logs at INFO; runs print their own
            logging.getLogger(noisy).setLevel(logging.WARNING)

        self.uri = tracking_uri or mlflow.get_tracking_uri()
        self.tags = dict(tags or {})
        try:
            self.client = MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found else self.client.create_experiment(
                experiment, artifact_location=artifact_location(self.uri, experiment)))
        except Exception as exc:  # unreachable server, unwritable sqlite file, bad URI
            raise UserError(f"tracking store {self.uri!r} cannot be used: {_first_line(exc)}") from None

    @contextmanager
    def start(self, config: RunConfig, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, or FAILED / KILLED with the reason, whatever happens;
        what it logged is written before it ends (see ``TrackedRun`` for a killed process).
        ``tags`` known before the run starts are created with it (no write of their own)."""
        name = f"{config.method}-{config.dataset}-{config.model}-s{config.seed}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **self.tags, **{k: str(v) for k, v in (tags or {}).items()}, RUN_KEY_TAG: config.run_key()})
        tracked = TrackedRun(self.client, run.info.run_id)
        try:
            tracked.log_params(config.flat())
            self.client.log_dict(tracked.run_id, config.to_dict(), "config.yaml")
            yield tracked
            tracked.flush()
        except KeyboardInterrupt:
            self._end(tracked, "KILLED", "interrupted by the user")
            raise
        except RunFailed as exc:
            self._end(tracked, "FAILED", exc.reason)
            raise
        except BaseException as exc:
            self._end(tracked, "FAILED", f"{type(exc).__name__}: {_first_line(exc)}")
            raise
        else:
            self.client.set_terminated(tracked.run_id, "FINISHED")

    def _end(self, tracked: TrackedRun, status: str, reason: str) -> None:
        """Write what the run logged (what cannot be written is given up: the failure must
        still be recorded), then the reason and the status."""
        from mlflow.entities import RunTag

        try:
            tracked.flush()
        except Exception as exc:
            reason = f"{reason} (its last metrics could not be written: {_first_line(exc)})"
        self.client.log_batch(tracked.run_id, tags=[RunTag(FAILURE_TAG, reason[:5000])])
        self.client.set_terminated(tracked.run_id, status)

    def get_run(self, run_id: str) -> Any:
        try:
            return self.client.get_run(run_id)
        except Exception:
            raise UserError(f"run {run_id!r} not found in tracking store {self.uri!r}") from None

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
        runs = self.search(filter_string="attributes.status = 'FINISHED'")
        return {run.data.tags[RUN_KEY_TAG]: run for run in runs if RUN_KEY_TAG in run.data.tags}

    def search(self, filter_string: str = "") -> list[Any]:
        """Every run of the experiment matching ``filter_string``."""
        return search_all(self.client, self.experiment_id, filter_string)

    def end_stale_runs(self, run_key: str) -> int:
        """Mark KILLED the runs of ``run_key`` still RUNNING: their process was killed
        (SIGKILL, power loss) before it could say so; the job is about to run again.
        Two sweeps running the same job at the same moment would misread each other,
        so one store takes one sweep of a file at a time."""
        stale = self.search(f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'RUNNING'")
        for run in stale:
            self._end(TrackedRun(self.client, run.info.run_id), "KILLED",
                      "interrupted: the process ended without closing the run; its job ran again")
        return len(stale)


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
    database = Path(tracking_uri[len("sqlite:///"):]).expanduser().resolve()
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment) or "experiment"
    return (database.parent / "mlruns" / slug).as_uri()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
