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

RUN_KEY_TAG = "debiasbench.run_key"
FAILURE_TAG = "debiasbench.failure"



class TrackedRun:
    """Handle of one active MLflow run."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


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
    def start(self, config: RunConfig) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, or FAILED / KILLED with the reason, whatever happens."""
        from mlflow.entities import Param

        name = f"{config.method}-{config.dataset}-{config.model}-s{config.seed}"
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**self.tags, RUN_KEY_TAG: config.run_key()})
        tracked = TrackedRun(self.client, run.info.run_id)
        try:
            params = [Param(k, str(v)) for k, v in config.flat().items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(tracked.run_id, params=params[start:start + 100])
            self.client.log_dict(tracked.run_id, config.to_dict(), "config.yaml")
            yield tracked
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
        tracked.set_tags({FAILURE_TAG: reason[:5000]})
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
