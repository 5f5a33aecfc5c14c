"""Sweeps: methods x datasets x models x seeds, run one after another, resumable.

A sweep file lists names and shared ``overrides`` (any run key). Every job is resolved
and validated before the first one runs, so a typo fails in a second, not after an hour.
A job whose run key already has a FINISHED run in the store is skipped; a failing job is
recorded as FAILED and the sweep goes on.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from debiasbench.config import RunConfig, load_config_file, merge, resolve_config
from debiasbench.errors import ConfigError, RunFailed, UserError, unknown_name_message

SWEEP_KEYS = ("methods", "datasets", "models", "seeds", "overrides")


@dataclass
class JobResult:
    config: RunConfig
    status: str  # FINISHED, FAILED or SKIPPED (finished by an earlier sweep)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def _as_list(data: dict[str, Any], key: str, default: list[Any] | None) -> list[Any]:
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"{key}: required, a list of names")
    return value if isinstance(value, list) else [value]


def load_sweep(path: str | Path, skipped: list[str] | None = None) -> list[RunConfig]:
    """The validated, de-duplicated jobs of a sweep file, in file order.

    A method x dataset pair where the dataset lacks what the method requires (RRR on a
    dataset without masks) is not a job; its reason is appended to ``skipped``.
    """
    data = load_config_file(path)
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(unknown_name_message("sweep key", unknown[0], list(SWEEP_KEYS)))
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides: expected a mapping of run keys, got {overrides!r}")
    grid = itertools.product(_as_list(data, "methods", None), _as_list(data, "datasets", None),
                             _as_list(data, "models", ["small_cnn"]), _as_list(data, "seeds", [0]))
    jobs: dict[str, RunConfig] = {}
    for method, dataset, model, seed in grid:
        missing = missing_requirements(method, dataset)
        if missing:
            if skipped is not None and seed == data.get("seeds", [0])[0] and missing not in skipped:
                skipped.append(missing)
            continue
        config = resolve_config(merge(overrides, {"method": method, "dataset": dataset,
                                                  "model": model, "seed": seed}))
        jobs.setdefault(config.run_key(), config)
    return list(jobs.values())


def missing_requirements(method: str, dataset: str) -> str:
    """Why ``method`` cannot run on ``dataset`` ("" when it can)."""
    from debiasbench.config import check_requirements
    from debiasbench.registry import DATASETS, METHODS

    try:
        check_requirements(METHODS.get(method), DATASETS.get(dataset))
    except ConfigError as exc:
        return str(exc)
    return ""


def run_sweep(jobs: list[RunConfig], tracking_uri: str | None,
              log: Callable[[str], None] = print) -> list[JobResult]:
    """Run the jobs not finished yet, sequentially; one failure never stops the rest."""
    from debiasbench.runner import run
    from debiasbench.tracking import Tracker

    trackers: dict[str, Tracker] = {}
    results = []
    for number, config in enumerate(jobs, start=1):
        tracker = trackers.get(config.experiment) or trackers.setdefault(
            config.experiment, Tracker(tracking_uri, config.experiment))
        label = f"[{number}/{len(jobs)}] {config.method} on {config.dataset} ({config.model}, seed {config.seed})"
        done = tracker.finished_run(config.run_key())
        if done is not None:
            results.append(JobResult(config, "SKIPPED", dict(done.data.metrics)))
            log(f"{label}: finished earlier, skipped")
            continue
        began = time.perf_counter()
        try:
            result = run(config, tracker)
        except (RunFailed, UserError) as exc:
            reason = getattr(exc, "reason", str(exc))
        except Exception as exc:  # recorded as FAILED by the tracker; the sweep goes on
            reason = f"{type(exc).__name__}: {exc}"
        else:
            results.append(JobResult(config, "FINISHED", result.metrics))
            log(f"{label}: finished in {time.perf_counter() - began:.0f}s")
            continue
        results.append(JobResult(config, "FAILED", reason=reason))
        log(f"{label}: FAILED: {reason}")
    return results
