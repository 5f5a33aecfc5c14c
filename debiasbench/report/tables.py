"""Tables for people: one run's metrics, the leaderboard's rules side by side, a sweep's
jobs, the plugin listings (a sweep's results: ``report.comparison``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from rich.table import Table

from debiasbench.contract.config import RunConfig
from debiasbench.core.stats import MISSING, format_mean_se, n_note

#: Columns of comparison tables, in reading order.
HEADLINE_METRICS = ("test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc",
                    "test_worst_group_acc", "test_unbiased_acc", "artifact_relevance", "val_acc",
                    "train_seconds", "prepare_seconds")


def _digits(value: float) -> int:
    """Decimals for a terminal cell: one for large values such as seconds, where more is
    noise and costs the table its width, three for accuracies and other fractions."""
    return 1 if abs(value) >= 10 else 3


def format_cell(value: float | None, se: float | None = None) -> str:
    """A value, or a mean with its standard error, written as everywhere else
    (``debiasbench.core.stats``): the standard error has the mean's decimals."""
    if value is None or math.isnan(value):
        return MISSING
    return format_mean_se(value, se, digits=_digits(value))


def metrics_table(config: RunConfig, metrics: dict[str, float]) -> Table:
    table = Table(title=f"{config.method} on {config.dataset} ({config.model}, seed {config.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ordered = [k for k in HEADLINE_METRICS if k in metrics] + sorted(set(metrics) - set(HEADLINE_METRICS))
    for key in ordered:
        table.add_row(key, format_cell(metrics[key]))
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
    from debiasbench.core.registry import METHODS

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


def _add_columns(table: Table, identity: tuple[str, ...], metrics: list[str]) -> None:
    """Identity columns (names and variants kept whole), then right-aligned metric columns."""
    for column in identity:
        table.add_column(column, no_wrap=column in ("method", "variant", "seed", "n", "status"))
    for metric in metrics:
        table.add_column(SHORT_NAMES.get(metric, metric.removeprefix("test_")), justify="right")


def _short(metric: str) -> str:
    return SHORT_NAMES.get(metric, metric.removeprefix("test_"))


#: After a method's name where no installed plugin registers it (``leaderboard.mark_installed``).
NOT_INSTALLED_MARK = "(not installed)"


def _not_installed(rows: Any) -> bool:
    """Whether ``rows`` (of one method) are marked not installed by ``mark_installed``
    (``installed`` False, or "False" as read back from summary.csv)."""
    return "installed" in rows and any(v is False or str(v) == "False" for v in rows["installed"])


def leaderboard_table(summary: Any) -> Table:
    """The selection rules side by side (``leaderboard.add_verdict``'s summary): one row per
    method x dataset x model x setting, one column per rule holding the mean and rank of
    clean accuracy and the bias metrics (worst-group accuracy only where no conflicting
    accuracy is logged); the caption says what each rule selected on for each dataset. A
    method no installed plugin registers is marked ``(not installed)`` under its name."""
    ranked = [c.removeprefix("rank_") for c in summary.columns if c.startswith("rank_")]
    if "test_conflicting_acc" in ranked:  # compact: worst-group accuracy is in the files
        ranked = [m for m in ranked if m != "test_worst_group_acc"]
    rules = list(dict.fromkeys(summary["rule"]))
    oracle = summary.groupby("rule", sort=False)["oracle"].first().astype(bool).to_dict()
    table = Table(title="selected results per rule: mean over seeds and #rank (ties where Welch's t-test over "
                        "seeds, level 0.05, cannot tell a result from its tier's best; * Pareto front); "
                        "hparams in summary.csv")
    _add_columns(table, ("method", "dataset", "model", "setting"), [])
    for rule in rules:
        table.add_column(f"ORACLE {rule}" if oracle[rule] and rule != "oracle" else
                         "ORACLE" if oracle[rule] else rule, justify="right")
    for (dataset, model, setting, method), rows in summary.groupby(["dataset", "model", "setting", "method"],
                                                                    sort=False, dropna=False):
        cells = []
        for rule in rules:
            chosen = rows[rows["rule"] == rule]
            if chosen.empty:
                cells.append(MISSING)
                continue
            row = chosen.iloc[0]
            lines = [f"{_short(m)} {format_cell(row[m])}{n_note(row.get(f'{m}_n'), row.get('n'))} "
                     f"#{int(row[f'rank_{m}'])}" for m in ranked
                     if m in row and isinstance(row[m], float) and not math.isnan(row[m])
                     and not math.isnan(row[f"rank_{m}"])]
            if bool(row.get("pareto", False)):
                lines[:1] = [f"{lines[0]} *"] if lines else ["*"]
            cells.append("\n".join(lines) or MISSING)
        table.add_row(f"{method}\n{NOT_INSTALLED_MARK}" if _not_installed(rows) else str(method), str(dataset),
                      str(model), str(setting).replace(" ", "\n"), *cells)
    on = summary.drop_duplicates(["rule", "dataset"])
    table.caption = "\n".join(f"{r.rule} on {r.dataset} selected on {r.selection_metric}" for r in on.itertuples())
    return table


def jobs_table(jobs: list[RunConfig], finished: set[str] | None = None) -> Table:
    """The jobs of a sweep; with ``finished`` (run keys the store has finished) a column
    says which of them a sweep would skip."""
    done = finished or set()
    left = sum(1 for c in jobs if c.run_key() not in done)
    title = f"{len(jobs)} jobs" if finished is None else f"{len(jobs)} jobs, {len(jobs) - left} finished, {left} to run"
    table = Table(title=title)
    for column in ("#", "method", "variant", "dataset", "model", "seed", "run key",
                   *(("status",) if finished is not None else ())):
        table.add_column(column)
    for number, (c, label) in enumerate(zip(jobs, variant_labels(jobs)), start=1):
        status = (("finished" if c.run_key() in done else "to run"),) if finished is not None else ()
        table.add_row(str(number), c.method, label.replace(" ", "\n"), c.dataset, c.model, str(c.seed), c.run_key(),
                      *status)
    return table


def plugin_listing(kind: str, registry: Any, declared: Callable[[Any], dict],
                   needs: Callable[[Any], Iterable[str]]) -> str:
    """Plain text (greppable, never wrapped mid-name): each plugin, what it needs or
    provides, and every parameter as ``name = default  allowed values  help``."""
    label = "requires" if kind == "method" else "provides"
    blocks = []
    for name, cls in registry.items():
        lines = [f"{name}: {_without_name(name, cls.description)}",
                 f"  {label}: {', '.join(sorted(needs(cls))) or '-'}"]
        for param, spec in declared(cls).items():
            help_text = f"  ({spec.help})" if spec.help else ""
            lines.append(f"  {param} = {spec.default!r}  {spec.describe()}{help_text}")
        blocks.append("\n".join(lines))
    for name, reason in registry.broken().items():
        blocks.append(f"{name}: failed to load: {reason}")
    return "\n\n".join(blocks)


def _without_name(name: str, description: str) -> str:
    """A description that starts with the plugin's own name (``mixup: Mixup: ...``) without
    that repeat, so the listing names each plugin once."""
    head, sep, rest = description.partition(":")
    if sep and head.strip().lower().replace(" ", "_").replace("-", "_") == name.lower():
        return rest.strip()
    return description
