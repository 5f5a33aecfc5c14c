"""Tables for people: one run's metrics, a sweep's results, the plugin listings."""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Iterable

from rich.table import Table

from debiasbench.config import RunConfig

#: Columns of comparison tables, in reading order.
HEADLINE_METRICS = ("test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc",
                    "test_worst_group_acc", "test_unbiased_acc", "artifact_relevance", "val_acc",
                    "train_seconds", "prepare_seconds")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def metrics_table(config: RunConfig, metrics: dict[str, float]) -> Table:
    table = Table(title=f"{config.method} on {config.dataset} ({config.model}, seed {config.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ordered = [k for k in HEADLINE_METRICS if k in metrics] + sorted(set(metrics) - set(HEADLINE_METRICS))
    for key in ordered:
        table.add_row(key, _fmt(metrics[key]))
    return table


SHORT_NAMES = {"test_conflicting_acc": "conflicting", "test_worst_group_acc": "worst_group",
               "test_unbiased_acc": "unbiased", "artifact_relevance": "artifact_rel",
               "train_seconds": "train_s", "prepare_seconds": "prep_s", "mining_precision": "mining_prec"}
#: Method-specific metrics shown when a sweep's runs logged them.
EXTRA_METRICS = ("mining_precision",)
_IDENTITY = ("method", "dataset", "model", "seed")


def variant_labels(configs: list[Any]) -> list[str]:
    """What tells apart runs of the same method, dataset and model besides the seed: the
    keys that vary between them (``bias_ratio=0.995``, ``bias_source=mined``) and the
    hparams that differ from their defaults. "" where nothing does."""
    from debiasbench.registry import METHODS

    flats = [c.flat() for c in configs]
    members: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for config, flat in zip(configs, flats):
        members.setdefault((config.method, config.dataset, config.model), []).append(flat)
    ignored = {*_IDENTITY, *RunConfig.NON_SEMANTIC}
    varying = {key: {k for k in {k for f in group for k in f} - ignored
                     if len({repr(f.get(k)) for f in group}) > 1}
               for key, group in members.items()}
    labels = []
    for config, flat in zip(configs, flats):
        declared = METHODS.get(config.method).hparams
        varies = varying[config.method, config.dataset, config.model]
        parts = []
        for key in sorted(flat):
            name = key.split(".", 1)[-1]
            default_differs = key.startswith("hparams.") and name in declared and flat[key] != declared[name].default
            if key in varies or default_differs:
                parts.append(f"{name}={flat[key]}")
        labels.append(" ".join(parts))
    return labels


def _columns(results: list[Any]) -> list[str]:
    """The headline and extra metrics that at least one run has (no all-dash columns)."""
    return [m for m in (*HEADLINE_METRICS, *EXTRA_METRICS) if any(m in r.metrics for r in results)]


def _add_columns(table: Table, identity: tuple[str, ...], metrics: list[str]) -> None:
    """Identity columns (names and variants kept whole), then right-aligned metric columns."""
    for column in identity:
        table.add_column(column, no_wrap=column in ("method", "variant", "seed", "n", "status"))
    for metric in metrics:
        table.add_column(SHORT_NAMES.get(metric, metric.removeprefix("test_")), justify="right")


def results_table(results: Iterable[Any]) -> Table:
    """One row per job (``JobResult``): identity, variant, status and the headline metrics."""
    results = list(results)
    labels = variant_labels([r.config for r in results])
    metrics = _columns(results)
    table = Table(title="debiasbench results")
    _add_columns(table, ("method", "variant", "dataset", "model", "seed", "status"), metrics)
    for result, label in zip(results, labels):
        c = result.config
        table.add_row(c.method, label.replace(" ", "\n"), c.dataset, c.model, str(c.seed), result.status,
                      *(_fmt(result.metrics.get(m)) for m in metrics))
    return table


def _mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return _fmt(values[0])
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{_fmt(statistics.mean(values))}±{_fmt(se)}"


def summary_table(results: Iterable[Any]) -> Table:
    """Mean ± standard error over seeds of every method x variant x dataset x model;
    ``n`` counts the finished runs (failed ones are left out of the means)."""
    results = list(results)
    labels = variant_labels([r.config for r in results])
    groups: dict[tuple[str, ...], list[Any]] = {}
    for result, label in zip(results, labels):
        c = result.config
        groups.setdefault((c.method, label, c.dataset, c.model), []).append(result)
    metrics = _columns(results)
    table = Table(title="mean ± standard error over seeds")
    _add_columns(table, ("method", "variant", "dataset", "model", "n"), metrics)
    for key, members in groups.items():
        done = [r for r in members if r.status != "FAILED"]
        n = f"{len(done)}" if len(done) == len(members) else f"{len(done)}/{len(members)}"
        method, label, dataset, model = key
        means = (_mean_se([r.metrics[m] for r in done if m in r.metrics]) for m in metrics)
        table.add_row(method, label.replace(" ", "\n"), dataset, model, n, *means)
    return table


def leaderboard_table(summary: Any, metrics: tuple[str, ...], selection: str) -> Table:
    """The selected results (``selection.select``): mean ± standard error over seeds."""
    shown = [m for m in metrics if m in summary and summary[m].notna().any()]
    table = Table(title=f"selected by {selection}; mean ± standard error over seeds")
    _add_columns(table, ("method", "dataset", "model", "setting", "hparams", "n"), shown)
    for _, row in summary.iterrows():
        cells = []
        for m in shown:
            mean, se = row[m], row[f"{m}_se"]
            cells.append("-" if math.isnan(mean) else _fmt(mean) if math.isnan(se) else f"{_fmt(mean)}±{_fmt(se)}")
        table.add_row(row["method"], row["dataset"], row["model"], row["setting"].replace(" ", "\n"),
                      row["hparams"].replace(" ", "\n"), str(row["n"]), *cells)
    return table


def jobs_table(jobs: list[RunConfig]) -> Table:
    table = Table(title=f"{len(jobs)} jobs")
    for column in ("#", "method", "variant", "dataset", "model", "seed", "run key"):
        table.add_column(column)
    for number, (c, label) in enumerate(zip(jobs, variant_labels(jobs)), start=1):
        table.add_row(str(number), c.method, label.replace(" ", "\n"), c.dataset, c.model, str(c.seed), c.run_key())
    return table


def plugin_listing(kind: str, registry: Any, declared: Callable[[Any], dict],
                   needs: Callable[[Any], Iterable[str]]) -> str:
    """Plain text (greppable, never wrapped mid-name): each plugin, what it needs or
    provides, and every parameter as ``name = default  allowed values  help``."""
    label = "requires" if kind == "method" else "provides"
    blocks = []
    for name, cls in registry.items():
        lines = [f"{name}: {cls.description}", f"  {label}: {', '.join(sorted(needs(cls))) or '-'}"]
        for param, spec in declared(cls).items():
            help_text = f"  ({spec.help})" if spec.help else ""
            lines.append(f"  {param} = {spec.default!r}  {spec.describe()}{help_text}")
        blocks.append("\n".join(lines))
    for name, reason in registry.broken().items():
        blocks.append(f"{name}: failed to load: {reason}")
    return "\n\n".join(blocks)
