"""Sweeps: methods x datasets x models x seeds (x grids), run one after another, resumable.

A sweep file lists names (a dataset may carry its own parameters:
``{colored_digits: {image_size: 8}}``), shared ``overrides`` (any run key), an optional shared ``grid``
(dotted run keys mapped to lists of values: every combination is a job, e.g.
``dataset_params.bias_ratio: [0.99, 0.995]``) and optional per-method ``hparams``
(``{method: {hparam: value or list}}``; a list is a grid axis of that method only, a
scalar fixes the value for that method). Every job is resolved and validated before the
first one runs, so a typo fails in a second, not after an hour.

Random search instead of grids (DomainBed's protocol): ``n_trials: N`` gives every
method N hparam settings, trial 0 its defaults and trials 1..N-1 draws from the search
spaces its hparams declare, plus learning rate and weight decay; draws are seeded by
``trial_seed``, the method name and the trial number, so the same file always gives the
same jobs and adding a method leaves the others' draws alone. Under ``n_trials`` a
scalar in ``hparams.<method>`` (or a run key in ``overrides`` / ``grid``) fixes that
value and a list is drawn from as a choice. Every seed of a trial shares its hparams,
so model selection can average a setting over seeds.

A job whose run key already has a FINISHED run in the store is skipped; a failing job is
recorded as FAILED and the sweep goes on (see ``launchers``). Several sweeps may run on
one store at once: each job is claimed before it runs (``debiasbench.run.claims``), a sweep
leaves jobs another one holds for last and then waits for them, so every job runs once
and every sweep still prints the whole table.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from debiasbench.contract.config import (NESTED_KEYS, RunConfig, assign, check_nested, flatten, load_config_file, merge,
                                         resolve_config)
from debiasbench.core.errors import ConfigError, Unsuited, shown, unknown_name_message
from debiasbench.sweep.launchers import JobContext, JobResult, Launcher, sequential
from debiasbench.run.display import duration
from debiasbench.sweep.events import sending
from debiasbench.sweep.monitor import SweepMonitor, SweepView, job_label

SWEEP_KEYS = ("methods", "datasets", "models", "seeds", "overrides", "grid", "hparams", "n_trials",
              "trial_seed", "launcher")


def _as_list(data: dict[str, Any], key: str, default: list[Any] | None) -> list[Any]:
    """``data[key]`` as a non-empty list (a single value is a list of one): an empty list
    would leave a sweep of no job, which reads as success."""
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"{key}: required, a list of names")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{key}: an empty list leaves no job")
    return items


def _names(data: dict[str, Any], key: str, default: list[Any] | None) -> list[str]:
    """``data[key]`` as a non-empty list of names (``methods``, ``models``)."""
    items = _as_list(data, key, default)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{key}: expected a list of names, got {shown(item)}")
    return items


def _seeds(data: dict[str, Any]) -> list[int]:
    items = _as_list(data, "seeds", [0])
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ConfigError(f"seeds: expected a list of integers >= 0, got {shown(item)}")
    return items


#: Most jobs one sweep file may expand to (counted before pairs that cannot run are left out):
#: far above any real benchmark (``quick.yaml`` has 102 jobs), and validated in some 20 s.
MAX_JOBS = 100_000


def _combinations(axes: Any, where: str) -> int:
    """How many combinations ``_grid`` would make of ``axes``, counted without making them
    (1 where ``axes`` is not a mapping: ``_grid`` refuses it)."""
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values or lists, got {shown(axes)}")
    return math.prod(len(v) if isinstance(v, list) else 1 for v in axes.values())


def check_job_count(count: int) -> None:
    """Refuse a sweep of more than ``MAX_JOBS`` jobs in one line giving the count, before any
    job is made (a grid or ``n_trials`` of 10^8 would otherwise take minutes to list and days
    to run)."""
    if count > MAX_JOBS:
        raise ConfigError(f"the sweep expands to {count:,} jobs (methods x datasets x models x seeds x grid x "
                          f"hparams settings or n_trials); one sweep runs at most {MAX_JOBS:,}: narrow its lists "
                          "or split it into several files")


def _grid(axes: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Every combination of ``axes`` (a list is an axis, a scalar one fixed value) as
    nested run-config layers; ``where`` names the section in errors."""
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values or lists, got {shown(axes)}")
    keys = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    for key, options in zip(keys, values):
        if not options:
            raise ConfigError(f"{where}.{key}: an empty list leaves no job")
        if key in NESTED_KEYS and not where.startswith("hparams."):
            for option in options:  # a whole ``dataset_params`` per job: a mapping each
                check_nested({key: option}, f"{where}.")
    return [{"hparams": dict(zip(keys, combination))} if where.startswith("hparams.")
            else _nest(dict(zip(keys, combination)))
            for combination in itertools.product(*values)]


#: The run keys every combination of a sweep's lists sets, and the list that gives each.
JOB_AXES = {"method": "methods", "dataset": "datasets", "model": "models", "seed": "seeds"}


def _no_job_axis(section: dict[str, Any], where: str) -> None:
    """Refuse a job axis (``seed``) in ``overrides`` or ``grid``: every job's own method,
    dataset, model and seed would replace it, so the value would be ignored silently."""
    for key in section:
        if key in JOB_AXES:
            raise ConfigError(f"{where}.{key}: {key} is a job axis, set by the sweep's {JOB_AXES[key]} list for "
                              f"every job; list its values in {JOB_AXES[key]} instead")


def _dataset_entry(item: Any) -> tuple[str, dict[str, Any]]:
    """A ``datasets`` entry: a name, or ``{name: {param: value}}`` for parameters of that
    dataset only (e.g. a smaller image size for one of them)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, params = next(iter(item.items()))
        if isinstance(name, str) and isinstance(params, dict):
            return name, params
    raise ConfigError(f"datasets: expected a name or {{name: {{param: value}}}}, got {shown(item)}")


def _count(data: dict[str, Any], key: str, default: int | None, low: int = 1) -> int | None:
    value = data.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
        raise ConfigError(f"{key}: expected an integer >= {low}, got {shown(value)}")
    return value


def random_trials(method: str, given: dict[str, Any], fixed_keys: set[str], n_trials: int,
                  trial_seed: int) -> list[dict[str, Any]]:
    """``n_trials`` run-config layers for ``method``: trial 0 its defaults (the first
    value of a restricting list), the others
    drawn from the declared search spaces (floats kept to 3 significant digits so labels
    stay readable). ``given`` fixes (scalar) or restricts (list) the method's hparams;
    run keys in ``fixed_keys`` are not drawn."""
    from debiasbench.contract.config import RUN_KEYS
    from debiasbench.core.hparams import Choice
    from debiasbench.core.registry import METHODS

    if not isinstance(given, dict):
        raise ConfigError(f"hparams.{method}: expected a mapping of keys to values or lists, got {shown(given)}")
    declared = METHODS.get(method).hparams
    spaces = {f"hparams.{name}": spec.space for name, spec in declared.items() if spec.space is not None}
    spaces.update({key: spec.space for key, spec in RUN_KEYS.items()
                   if spec.space is not None and key not in fixed_keys})
    fixed = {f"hparams.{k}": v for k, v in given.items() if not isinstance(v, list)}
    for name, options in given.items():
        if isinstance(options, list):
            if not options:
                raise ConfigError(f"hparams.{method}.{name}: an empty list leaves no job")
            spaces[f"hparams.{name}"] = Choice(options)
    for key in fixed:
        spaces.pop(key, None)
    first_choices = {f"hparams.{k}": v[0] for k, v in given.items() if isinstance(v, list)}
    trials = [_nest({**fixed, **first_choices})]
    for trial in range(1, n_trials):
        rng = random.Random(f"{trial_seed}:{method}:{trial}")
        drawn = {key: _readable(spaces[key].sample(rng)) for key in sorted(spaces)}
        trials.append(_nest({**fixed, **drawn}))
    return trials


def _readable(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) and math.isfinite(value) else value


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():  # a mapping copied: later dotted keys must not write into the file's
        assign(out, key, dict(value) if isinstance(value, dict) else value)
    return out


def load_sweep(path: str | Path, skipped: list[str] | None = None) -> list[RunConfig]:
    """The validated, de-duplicated jobs of a sweep file, in file order.

    A method x dataset pair where the dataset lacks what the method requires (RRR on a
    dataset without masks), or that the method's own assumptions exclude
    (``Method.unsuited``, unless ``allow_unsuited`` is set), is not a job; its reason is
    appended to ``skipped``.
    """
    data = load_config_file(path)
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(unknown_name_message("sweep key", unknown[0], list(SWEEP_KEYS)))
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides: expected a mapping of run keys, got {shown(overrides)}")
    check_nested(overrides, "overrides.")
    _no_job_axis(overrides, "overrides")
    methods = _names(data, "methods", None)
    per_method = data.get("hparams") or {}
    if not isinstance(per_method, dict):
        raise ConfigError(f"hparams: expected a mapping of method names to hparams, got {shown(per_method)}")
    stray = [name for name in per_method if name not in methods]
    if stray:
        raise ConfigError(unknown_name_message("hparams method (not in methods)", stray[0], methods))
    if isinstance(data.get("grid"), dict):
        _no_job_axis(data["grid"], "grid")
    n_trials = _count(data, "n_trials", None)
    datasets = dict(_dataset_entry(item) for item in _as_list(data, "datasets", None))
    models = _names(data, "models", ["small_cnn"])
    seeds = _seeds(data)
    check_job_count(len(datasets) * len(models) * len(seeds) * _combinations(data.get("grid") or {}, "grid")
                    * sum(n_trials or _combinations(per_method.get(m) or {}, f"hparams.{m}") for m in methods))
    shared = _grid(data.get("grid") or {}, "grid")
    if n_trials is None:
        if "trial_seed" in data:
            raise ConfigError("trial_seed: only used with n_trials (random search)")
        method_grids = {m: _grid(per_method.get(m) or {}, f"hparams.{m}") for m in methods}
    else:
        fixed_keys = set(flatten(overrides)) | set(data.get("grid") or {})
        trial_seed = _count(data, "trial_seed", 0, low=0) or 0
        method_grids = {m: random_trials(m, per_method.get(m) or {}, fixed_keys, n_trials, trial_seed)
                        for m in methods}
    grid = itertools.product(methods, datasets, models, seeds)
    jobs: dict[str, RunConfig] = {}
    for method, dataset, model, seed in grid:
        missing = missing_requirements(method, dataset)
        if missing:
            if skipped is not None and seed == seeds[0] and missing not in skipped:
                skipped.append(missing)
            continue
        for layer in shared:
            for candidate in method_grids[method]:
                try:
                    config = resolve_config(merge(overrides, {"dataset_params": datasets[dataset]}, layer,
                                                  candidate, {"method": method, "dataset": dataset,
                                                              "model": model, "seed": seed}))
                except Unsuited as exc:  # the method's own assumptions exclude the pair: not a job
                    if skipped is not None and str(exc) not in skipped:
                        skipped.append(str(exc))
                    continue
                jobs.setdefault(config.run_key(), config)
    return list(jobs.values())


#: Keys of a sweep file's ``launcher:`` section and the types each takes: the launcher's
#: name and its settings (``sweep`` options given on the command line win over them).
LAUNCHER_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "workers": (int,), "cpus_per_run": (int, float), "gpus_per_run": (int, float),
    "memory": (str, int), "partition": (str,), "time": (str, int), "account": (str,), "max_running": (int,),
    "sbatch": (list, str), "log_folder": (str,), "poll_seconds": (int, float)}


def load_launcher_section(path: str | Path) -> dict[str, Any]:
    """A sweep file's ``launcher:`` section, checked (``{}`` where there is none), e.g.
    ``{name: slurm, partition: gpu, time: "2:00:00", gpus_per_run: 1}``."""
    section = load_config_file(path).get("launcher") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"launcher: expected a mapping of launcher settings, got {shown(section)}")
    for key, value in section.items():
        if key not in LAUNCHER_KEYS:
            raise ConfigError(unknown_name_message("launcher key", str(key), list(LAUNCHER_KEYS)))
        types = LAUNCHER_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join({"str": "a string", "int": "an integer", "float": "a number",
                                    "list": "a list"}[t.__name__] for t in types)
            raise ConfigError(f"launcher.{key}: expected {expected}, got {shown(value)}")
        if key == "sbatch" and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"launcher.sbatch: expected a list of sbatch options, got {shown(value)}")
    return dict(section)


def missing_requirements(method: str, dataset: str) -> str:
    """Why ``method`` cannot run on ``dataset`` ("" when it can)."""
    from debiasbench.contract.config import check_requirements
    from debiasbench.core.registry import DATASETS, METHODS

    try:
        check_requirements(METHODS.get(method), DATASETS.get(dataset))
    except ConfigError as exc:
        return str(exc)
    return ""


def run_sweep(jobs: list[RunConfig], tracking_uri: str | None,
              log: Callable[[str], None] = print, launcher: Launcher = sequential,
              tags: Mapping[str, str] | None = None, view: SweepView | None = None,
              threads: int | None = None) -> list[JobResult]:
    """Run the jobs not finished yet with ``launcher``; one failure never stops the rest.

    The store and its experiments are created here, before any worker starts (two
    processes creating one sqlite store at once can fail). Results come back in job
    order; ``log`` gets one progress line per job as it ends, with the sweep's ETA
    (``monitor.SweepMonitor``, from the progress the jobs report); ``view`` (bars or
    lines, ``debiasbench.sweep.monitor``) shows the running jobs' progress.
    """
    from debiasbench.track.store import Tracker, absolute_tracking_uri

    uri = absolute_tracking_uri(tracking_uri)
    finished: dict[tuple[str, str], Any] = {}
    for experiment in dict.fromkeys(config.experiment for config in jobs):
        finished.update({(experiment, key): run for key, run in Tracker(uri, experiment).finished_runs().items()})
    results: dict[str, JobResult] = {}
    todo = []
    for config in jobs:
        done = finished.get((config.experiment, config.run_key()))
        if done is not None:
            results[config.run_key()] = JobResult(config, "SKIPPED", dict(done.data.metrics))
        else:
            todo.append(config)
    if results:
        log(f"{len(results)} of {len(jobs)} jobs finished earlier: skipped")
    bases, todo = base_models_first(todo, finished)
    if bases:
        plural = "s" if len(bases) != 1 else ""
        log(f"training {len(bases)} vanilla base model{plural} first (corrections start from them)")
    monitor = SweepMonitor([*bases, *todo], getattr(launcher, "slots", 1), view)
    progress = Progress(len(bases) + len(todo), log, monitor)
    context = JobContext(uri, dict(tags or {}), threads=threads, cwd=os.getcwd())
    with sending(monitor.on_event):
        for stage in (bases, todo):
            busy: list[RunConfig] = []
            for result in launcher(stage, context):
                if result.status == "RESTARTED":  # its worker ended under it: one line, and it runs again
                    monitor.on_result(result)
                    log(f"{job_label(result.config)}: {result.reason}")
                    continue
                if result.status == "BUSY":
                    monitor.on_result(result)
                    busy.append(result.config)
                    continue
                results[result.config.run_key()] = result
                progress.update(result)
            if busy:  # claimed by another sweep: come back once this sweep's own work is done
                plural = "s are" if len(busy) != 1 else " is"
                log(f"{len(busy)} job{plural} being run by another process: waiting for them")
                for result in launcher(busy, dataclasses.replace(context, wait_for_claims=True)):
                    results[result.config.run_key()] = result
                    progress.update(result)
    return [results[config.run_key()] for config in jobs]


def base_models_first(todo: list[RunConfig],
                      finished: dict[tuple[str, str], Any]) -> tuple[list[RunConfig], list[RunConfig]]:
    """Split ``todo`` into the missing vanilla models that corrections start from and the
    rest. Run in that order, two parallel corrections never train the same base model
    twice, and a vanilla job of the sweep is never run beside its own copy."""
    from debiasbench.run.base_model import base_config
    from debiasbench.core.registry import METHODS

    bases: dict[str, RunConfig] = {}
    for config in todo:
        if config.base_run is None and METHODS.get(config.method).starts_from_vanilla:
            base = base_config(config)
            if (base.experiment, base.run_key()) not in finished:
                bases.setdefault(base.run_key(), base)
    rest = [config for config in todo if config.run_key() not in bases]
    return list(bases.values()), rest


class Progress:
    """One line per ended job: what ended, then done / failed / left and the sweep's ETA
    (``SweepMonitor.eta``: the running jobs' progress, then the queued jobs at what jobs
    of their kind took)."""

    def __init__(self, total: int, log: Callable[[str], None], monitor: SweepMonitor | None = None):
        self.total, self.log = total, log
        self.monitor = monitor
        self.done = self.failed = 0
        self.began = time.perf_counter()

    def update(self, result: JobResult) -> None:
        if self.monitor is not None:
            self.monitor.on_result(result)
        c = result.config
        if result.status == "FAILED":
            self.failed += 1
            outcome = f"FAILED: {result.reason}"
        elif result.status == "SKIPPED":
            self.done += 1
            outcome = "finished meanwhile, skipped"
        else:
            self.done += 1
            outcome = f"finished in {result.seconds:.0f}s"
        ended = self.done + self.failed
        left = self.total - ended
        if self.monitor is not None:
            eta = self.monitor.eta()
        else:
            eta = (time.perf_counter() - self.began) / ended * left
        self.log(f"[{self.done} done · {self.failed} failed · {left} left · ETA {duration(eta)}] "
                 f"{job_label(c)}: {outcome}")
