"""Sweeps: methods x datasets x models x seeds (x grids), run one after another, resumable.

A sweep file lists names, shared ``overrides`` (any run key), an optional shared ``grid``
(dotted run keys mapped to lists of values: every combination is a job, e.g.
``dataset_params.bias_ratio: [0.99, 0.995]``) and optional per-method ``hparams``
(``{method: {hparam: value or list}}``; a list is a grid axis of that method only, a
scalar fixes the value for that method). Every job is resolved and validated before the
first one runs, so a typo fails in a second, not after an hour.
A job whose run key already has a FINISHED run in the store is skipped; a failing job is
recorded as FAILED and the sweep goes on.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from debiasbench.config import RunConfig, assign, load_config_file, merge, resolve_config
from debiasbench.errors import ConfigError, RunFailed, UserError, unknown_name_message

SWEEP_KEYS = ("methods", "datasets", "models", "seeds", "overrides", "grid", "hparams")


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


def _grid(axes: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Every combination of ``axes`` (a list is an axis, a scalar one fixed value) as
    nested run-config layers; ``where`` names the section in errors."""
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values or lists, got {axes!r}")
    keys = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    for key, options in zip(keys, values):
        if not options:
            raise ConfigError(f"{where}.{key}: an empty list leaves no job")
    return [_nest(dict(zip(keys, combination))) for combination in itertools.product(*values)]


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        assign(out, key, value)
    return out


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
    methods = _as_list(data, "methods", None)
    per_method = data.get("hparams") or {}
    if not isinstance(per_method, dict):
        raise ConfigError(f"hparams: expected a mapping of method names to hparams, got {per_method!r}")
    stray = [name for name in per_method if name not in methods]
    if stray:
        raise ConfigError(unknown_name_message("hparams method (not in methods)", stray[0], methods))
    shared = _grid(data.get("grid") or {}, "grid")
    method_grids = {m: _grid(per_method.get(m) or {}, f"hparams.{m}") for m in methods}
    grid = itertools.product(methods, _as_list(data, "datasets", None),
                             _as_list(data, "models", ["small_cnn"]), _as_list(data, "seeds", [0]))
    jobs: dict[str, RunConfig] = {}
    for method, dataset, model, seed in grid:
        missing = missing_requirements(method, dataset)
        if missing:
            if skipped is not None and seed == data.get("seeds", [0])[0] and missing not in skipped:
                skipped.append(missing)
            continue
        for layer in shared:
            for hparams in method_grids[method]:
                config = resolve_config(merge(overrides, layer, {"hparams": hparams}, {
                    "method": method, "dataset": dataset, "model": model, "seed": seed}))
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
