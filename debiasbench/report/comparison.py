"""The table a sweep ends with: one table per dataset, each column a test metric named in
full in a legend below it with its direction, and one line that reads the table.

A reader who has never seen the tool meets this first (``make demo``), so it says what it
shows: that the numbers are test metrics, which way is better, why a column that is the
same for every method (a worst group of one sample) tells nothing, and what the table
says about the shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from debiasbench.contract.method import BASE_METHOD
from debiasbench.core.stats import is_finite, mean_se
from debiasbench.report.tables import format_cell, variant_labels


@dataclass(frozen=True)
class Column:
    """A metric as the comparison shows it: a header of short words (a word per line and
    the arrow under them, so that the table of a one-seed demo fits 80 columns), the
    logged name and its meaning for the legend, and which way is better (None: not a
    quality, such as seconds)."""

    metric: str
    header: str
    meaning: str
    higher_is_better: bool | None = True

    @property
    def arrow(self) -> str:
        return "" if self.higher_is_better is None else "↑" if self.higher_is_better else "↓"


#: The columns in reading order; a column no run logged is left out.
COLUMNS = (
    Column("test_acc", "acc", "accuracy on the natural test split"),
    Column("test_clean_acc", "clean", "accuracy on the test images with the shortcut cue removed"),
    Column("test_biased_acc", "biased", "accuracy on the same images with the cue on them "
                                        "(artifact everywhere, colour aligned with the label)"),
    Column("test_conflicting_acc", "conflict", "accuracy on test samples whose cue points to another class"),
    Column("test_worst_group_acc", "worst group", "lowest accuracy over the class x bias groups"),
    Column("test_unbiased_acc", "unbiased", "mean accuracy over the class x bias groups"),
    Column("artifact_relevance", "artifact",
           "share of the LRP explanation on the artifact (biased samples of the attacked class)", False),
    Column("seconds", "seconds", "train_seconds + prepare_seconds, the training with the method's auxiliary "
                                 "models, mining and CAVs (not a test metric)", None),
)


@dataclass
class _Row:
    method: str
    variant: str
    model: str
    finished: list[dict[str, float]]
    total: int

    @property
    def name(self) -> str:
        return f"{self.method} {self.variant}".strip()

    def mean(self, metric: str) -> float:
        return mean_se(_values(self.finished, metric))[0]

    def cell(self, metric: str) -> str:
        """The mean ± standard error, followed by ``(n=k)`` where only k of the row's
        finished runs have a finite value of ``metric`` (as the leaderboard writes it)."""
        values = _values(self.finished, metric)
        mean, se, _ = mean_se(values)
        fewer = f" (n={len(values)})" if values and len(values) < len(self.finished) else ""
        return format_cell(mean, se) + fewer


def _values(runs: Iterable[dict[str, float]], metric: str) -> list[float]:
    """``metric`` of each run that logged a finite value of it (NaN, infinities and MLflow's
    stored infinity count as missing: ``core.stats.is_finite``); ``seconds`` is the sum of
    training and the method's preparation."""
    if metric == "seconds":
        sums = [float(m["train_seconds"]) + float(m.get("prepare_seconds", 0.0)) for m in runs if "train_seconds" in m]
        return [value for value in sums if is_finite(value)]
    return [float(m[metric]) for m in runs if metric in m and is_finite(m[metric])]


def comparison_tables(results: Sequence[Any]) -> list[RenderableType]:
    """One table per dataset of a sweep's results (``JobResult``: config, status, metrics),
    its rows the method x variant x model, its cells the mean ± standard error over seeds,
    each followed by its reading; then one legend for all of them."""
    labels = variant_labels([r.config for r in results])
    by_dataset: dict[str, dict[tuple[str, str, str], _Row]] = {}
    for result, label in zip(results, labels):
        c = result.config
        rows = by_dataset.setdefault(c.dataset, {})
        row = rows.setdefault((c.method, label, c.model), _Row(c.method, label, c.model, [], 0))
        row.total += 1
        if result.status in ("FINISHED", "SKIPPED"):
            row.finished.append(dict(result.metrics))
    shown: list[Column] = []
    renderables: list[RenderableType] = []
    for dataset, rows in by_dataset.items():
        columns = [c for c in COLUMNS if any(_values(r.finished, c.metric) for r in rows.values())]
        shown += [c for c in columns if c not in shown]
        renderables.append(dataset_table(dataset, list(rows.values()), columns))
    partial = any(0 < len(_values(r.finished, c.metric)) < len(r.finished)
                  for rows in by_dataset.values() for r in rows.values() for c in shown)
    renderables.append(Text(legend([c for c in COLUMNS if c in shown], partial), style="dim"))
    return renderables


def print_comparison(console: Console, results: Sequence[Any]) -> None:
    """``comparison_tables`` on ``console``. At a terminal the notes wrap at its width; in a
    file or a pipe (``make demo > log``, CI logs) each note is one whole line, as a reader
    greps it, instead of being broken at the console's fixed width mid-sentence."""
    for renderable in comparison_tables(results):
        console.print(renderable, soft_wrap=not console.is_terminal)


def dataset_table(dataset: str, rows: list[_Row], columns: Sequence[Column]) -> RenderableType:
    """The table of one dataset and, under it, why a flat column tells nothing and the
    reading. A method's variant is written under its name; on a narrow terminal the
    headers fold, and their full names are in the legend."""
    models = sorted({r.model for r in rows})
    seeds = max((r.total for r in rows), default=0)
    over = "one seed" if seeds == 1 else f"mean ± standard error over {seeds} seeds"
    table = Table(title=f"{dataset} ({', '.join(models)}): test metrics, {over}", box=box.SIMPLE_HEAD,
                  title_justify="left", title_style="bold", pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("method", min_width=max(len(r.method) for r in rows), overflow="fold")
    if len(models) > 1:
        table.add_column("model", no_wrap=True)
    counted = seeds > 1 or any(len(r.finished) < r.total for r in rows)
    if counted:
        table.add_column("n", justify="right", no_wrap=True)
    for column in columns:
        table.add_column("\n".join([*column.header.split(), column.arrow]), justify="right")
    for row in rows:
        n = f"{len(row.finished)}" if len(row.finished) == row.total else f"{len(row.finished)}/{row.total}"
        table.add_row(f"{row.method}\n{row.variant}" if row.variant else row.method,
                      *([row.model] if len(models) > 1 else []), *([n] if counted else []),
                      *(row.cell(c.metric) for c in columns))
    notes = [note for c in columns if (note := _flat_note(c, rows))]
    return Group(table, *(Text(line) for line in notes), Text(reading(rows), style="italic"), Text(""))


def legend(columns: Sequence[Column], partial: bool = False) -> str:
    """What each column is (its logged name and meaning) and which way is better."""
    lines = ["Columns: ↑ higher is better, ↓ lower is better; n = finished runs (seeds), where not all are"
             + ("; (n=k) after a value: only k of them logged a finite value." if partial else ".")]
    lines += [f"  {' '.join(filter(None, (c.header, c.arrow)))} = {c.metric}: {c.meaning}." for c in columns]
    return "\n".join(lines)


def _flat_note(column: Column, rows: Sequence[_Row]) -> str | None:
    """Why a quality column holds one value for every method, where it does (two or more
    methods): for the worst group, how small the smallest group is."""
    means = [m for r in rows if not math.isnan(m := r.mean(column.metric))]
    if column.higher_is_better is None or len(means) < 2 or max(means) - min(means) > 1e-9:
        return None
    text = (f"{column.header} is {means[0]:.3f} for every method, so it does not separate them")
    if column.metric == "test_worst_group_acc":
        smallest = min((v for r in rows for v in _values(r.finished, "test_smallest_group")), default=math.nan)
        empty = max((v for r in rows for v in _values(r.finished, "test_empty_groups")), default=0.0)
        if not math.isnan(smallest):
            text += (f": the test split's smallest class x bias group holds {int(smallest)} sample(s)"
                     + (f" and {int(empty)} groups are empty" if empty else "")
                     + "; unbiased accuracy averages the groups instead")
    return text + "."


def reading(rows: Sequence[_Row]) -> str:
    """One line on what the table says: how much the base method leans on the shortcut,
    and which method does best on the bias metric (conflicting accuracy, else artifact
    relevance) against it."""
    parts = []
    base = next((r for r in rows if r.method == BASE_METHOD and not r.variant), None)
    if base is not None:
        clean, biased = base.mean("test_clean_acc"), base.mean("test_biased_acc")
        if not (math.isnan(clean) or math.isnan(biased)):
            leans = "uses the shortcut" if biased - clean > 0.05 else "barely uses the shortcut"
            parts.append(f"{BASE_METHOD} {leans} (biased {biased:.3f} vs clean {clean:.3f})")
    for column in (c for c in COLUMNS if c.metric in ("test_conflicting_acc", "artifact_relevance")):
        scored = [(m, r) for r in rows if not math.isnan(m := r.mean(column.metric))]
        if len(scored) < 2 or _flat_note(column, rows):
            continue
        best_value, best = (max if column.higher_is_better else min)(scored, key=lambda pair: pair[0])
        word = "highest" if column.higher_is_better else "lowest"
        what = "bias-conflicting accuracy" if column.metric == "test_conflicting_acc" else "artifact relevance"
        against = f" ({BASE_METHOD} {base.mean(column.metric):.3f})" if base is not None and best is not base \
            and not math.isnan(base.mean(column.metric)) else ""
        parts.append(f"{word} {what}: {best.name} {best_value:.3f}{against}")
    single = all(r.total <= 1 for r in rows)
    if parts and single:
        parts.append("one seed: differences of a few points may be noise")
    return "Reading: " + "; ".join(parts) + "." if parts else "Reading: no finished run logged the test metrics."
