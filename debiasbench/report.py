"""Tables for people: one run's metrics, a sweep's results, the plugin listings."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from rich.table import Table

from debiasbench.config import RunConfig

#: Columns of comparison tables, in reading order.
HEADLINE_METRICS = ("test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc",
                    "test_worst_group_acc", "test_unbiased_acc", "artifact_relevance", "val_acc",
                    "train_seconds")


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


def results_table(results: Iterable[Any]) -> Table:
    """One row per job (``JobResult``): identity, status and the headline metrics."""
    table = Table(title="debiasbench results")
    for column in ("method", "dataset", "model", "seed", "status"):
        table.add_column(column)
    short = {"test_conflicting_acc": "conflicting", "test_worst_group_acc": "worst_group",
             "test_unbiased_acc": "unbiased", "artifact_relevance": "artifact_rel",
             "train_seconds": "seconds"}
    for metric in HEADLINE_METRICS:
        table.add_column(short.get(metric, metric.removeprefix("test_")), justify="right")
    for result in results:
        c = result.config
        table.add_row(c.method, c.dataset, c.model, str(c.seed), result.status,
                      *(_fmt(result.metrics.get(m)) for m in HEADLINE_METRICS))
    return table


def jobs_table(jobs: list[RunConfig]) -> Table:
    table = Table(title=f"{len(jobs)} jobs")
    for column in ("#", "method", "dataset", "model", "seed", "run key"):
        table.add_column(column)
    for number, c in enumerate(jobs, start=1):
        table.add_row(str(number), c.method, c.dataset, c.model, str(c.seed), c.run_key())
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
