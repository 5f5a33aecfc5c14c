"""What a run has logged but not yet written, cut into MLflow ``log_batch`` calls.

Every ``log_batch`` on an sqlite store commits once per kind of entry it carries (an
fsync each, about 10 ms), so a tiny run that wrote its params, tags and each epoch's
metrics as they came spent more time in commits than in its last epoch. Collected
here, they go out in as few calls as MLflow's limits allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: MLflow's limits on one ``log_batch`` (``mlflow.utils.validation``).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000


class ParamChanged(ValueError):
    """A param logged again with another value: MLflow keeps params immutable."""


@dataclass
class Batch:
    """The arguments of one ``log_batch`` call (MLflow entities)."""

    metrics: list[Any] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    tags: list[Any] = field(default_factory=list)


class LogBuffer:
    """Metrics, params and tags of one run waiting to be written.

    Params are checked here, as MLflow would check them on the spot: logging one again
    with the same value is a no-op, with another value raises ``ParamChanged`` at the
    call that did it (not later, when the buffer is written). A tag logged again replaces
    the waiting value, as it would replace the stored one.
    """

    def __init__(self) -> None:
        self.metrics: list[Any] = []
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self._params_logged: dict[str, str] = {}  # written or waiting: the run's params so far

    def __bool__(self) -> bool:
        return bool(self.metrics or self.params or self.tags)

    def add_metrics(self, metrics: Mapping[str, float], timestamp_ms: int, step: int) -> None:
        from mlflow.entities import Metric

        self.metrics.extend(Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items())

    def add_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            text = str(value)
            known = self._params_logged.get(key)
            if known is None:
                self._params_logged[key] = self.params[key] = text
            elif known != text:
                raise ParamChanged(f"param {key!r} was logged as {known!r}; it cannot change to {text!r}")

    def add_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def take(self) -> list[Batch]:
        """Everything waiting, as batches within MLflow's limits; the buffer is empty after."""
        from mlflow.entities import Metric, Param, RunTag

        metrics: list[Metric] = self.metrics
        params = [Param(k, v) for k, v in self.params.items()]
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        self.metrics, self.params, self.tags = [], {}, {}
        batches = []
        while metrics or params or tags:
            batch = Batch(params=params[:MAX_PARAMS_TAGS_PER_BATCH], tags=tags[:MAX_PARAMS_TAGS_PER_BATCH])
            room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(batch.params) - len(batch.tags))
            batch.metrics = metrics[:room]
            params, tags, metrics = (params[len(batch.params):], tags[len(batch.tags):],
                                     metrics[len(batch.metrics):])
            batches.append(batch)
        return batches
