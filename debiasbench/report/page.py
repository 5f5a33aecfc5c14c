"""A leaderboard as one self-contained static HTML page.

The page makes no external requests (no CDN, fonts, scripts or images): CSS and JS are inline
and plots are PNG data URIs, so the file can be published as a static artefact or opened
offline. Plots are raster images rather than SVG so that no run-derived text (method, dataset
or hyper-parameter names) ever reaches an SVG or JS context; in HTML every such string goes
through ``html.escape(..., quote=True)``, and the sorting script only reads the DOM.

Per dataset the page gives a verdict (under the bias-annotated rule where it applies), a
Pareto plot of clean accuracy against the bias metric, bar plots, and one sortable table
per selection rule with every headline metric's rank (``leaderboard.add_verdict``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from debiasbench.report.leaderboard import (LOWER_IS_BETTER, NOT_INSTALLED_TEXT, NOTES_HEADING, RANKS_TEXT,
                                            SUMMARY_COLUMNS, add_verdict, better, group_label, has_metric,
                                            metric_n_note, not_installed, pareto_axes, public_frame, public_text,
                                            ranked_metrics, sentence, store_label, verdict_rule, verdicts)
from debiasbench.core.stats import MISSING, PLUS_MINUS, TIE_ALPHA, mean_se_parts

_Options = tuple[tuple[str, tuple[str, ...]], ...]
# Per plot: (title, metrics) options, the first with any logged metric wins; y label; y range.
_PLOTS: tuple[tuple[_Options, str, tuple[float, float] | None], ...] = (
    ((("Clean vs. bias-aligned test accuracy", ("test_clean_acc", "test_biased_acc")),
      ("Test accuracy", ("test_acc",))), "accuracy", (0.0, 1.05)),
    ((("Bias-conflicting and worst-group test accuracy",
       ("test_conflicting_acc", "test_worst_group_acc", "test_unbiased_acc")),), "accuracy", (0.0, 1.05)),
    ((("Artifact relevance (lower is better)", ("artifact_relevance",)),), "artifact relevance", None),
)

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:90rem;
 padding:0 1rem;color:#1d2329}
h1{font-size:1.6rem;margin-bottom:.5rem}h2{margin-top:2.5rem;border-bottom:2px solid #1d2329}
h3{font-size:1.05rem;margin:1.6rem 0 .3rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}
dd ul{margin:0;padding-left:1.1rem}
code{background:#f1f3f5;padding:.1rem .3rem;border-radius:3px;word-break:break-all}
.warning{background:#fff3cd;border:1px solid #e0b400;padding:.6rem .9rem;border-radius:4px;font-weight:600}
.oracle-tag{background:#e0b400;color:#1d2329;border-radius:3px;padding:0 .3rem;font-size:.85em}
.verdict{background:#eef6ee;border-left:4px solid #2f8f46;padding:.4rem .9rem;margin:.8rem 0}
.note{color:#4a545e;margin:.2rem 0 .5rem}
.table-wrap{overflow-x:auto}td.more{max-width:22rem}td.more summary{cursor:pointer;color:#2d5f8a}
td.more dl{grid-template-columns:max-content minmax(0,1fr);font-size:.85em;margin:.3rem 0 0}
td.more dd{overflow-wrap:anywhere}th.nosort{cursor:default}
.not-installed{background:#f6e3e3;color:#7a1f1f;border-radius:3px;padding:0 .3rem;font-size:.8em;white-space:nowrap}
tr.uninstalled{color:#5c6670}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:.35rem .5rem;border-bottom:1px solid #dde1e5;text-align:left;vertical-align:top}
td{max-width:14rem;overflow-wrap:break-word}td.num{text-align:right;white-space:nowrap}
code.cmd{display:block;white-space:pre-wrap}
.se{display:block;font-size:.8em;color:#5c6670}tbody tr:nth-child(even){background:#f8f9fa}
.rank{display:inline-block;min-width:1.6em;margin-right:.3em;padding:0 .2em;border-radius:3px;font-size:.8em;
 text-align:center;background:#e3e7eb;color:#1d2329}td.best .rank{background:#2f8f46;color:#fff}
th{cursor:pointer;user-select:none;background:#eef1f4;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.plots{display:flex;flex-wrap:wrap;gap:1rem}img.plot{max-width:100%;height:auto;border:1px solid #eee}
"""

_JS = """
(() => {
  document.querySelectorAll("table.sortable").forEach((table) => {
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, col) => {
      if (th.classList.contains("nosort")) return;
      const sort = () => {
        const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        const key = (tr) => tr.cells[col].dataset.value.trim();
        const rows = Array.from(body.rows).sort((a, b) => {
          const x = key(a), y = key(b);
          if (x === "" || y === "") return (x === "") - (y === "");  // empty/NaN always last
          const nx = Number(x), ny = Number(y);
          if (!Number.isNaN(nx) && !Number.isNaN(ny)) return dir * (nx - ny);
          return dir * x.localeCompare(y);
        });
        body.append(...rows);
      };
      th.tabIndex = 0;
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
})();
"""
# Defence in depth: only the script above may run and nothing may be fetched, even if a string
# ever slipped through unescaped.
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-"
        + base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode() + "'")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(row: pd.Series, column: str) -> float:
    value = row.get(column, math.nan)
    return math.nan if value is None or pd.isna(value) else float(value)


def _text(row: pd.Series, column: str) -> str:
    value = row.get(column, "")
    return "" if value is None or pd.isna(value) else str(value)


def _metric_cell(mean: float, se: float, rank: float = math.nan, metric: str = "", note: str = "") -> str:
    """The mean and its standard error as ``format_mean_se`` writes them, the error in its
    own (smaller) line; the cell's textContent reads "0.620 ± 0.012" all the same. ``note``
    (" (n=3)": fewer seeds with a finite value than the row's n) follows the error."""
    if math.isnan(mean):
        return f'<td class="num" data-value="">{MISSING}</td>'
    mean_text, se_text = mean_se_parts(mean, se)
    number = mean_text + ("" if se_text is None else f'<span class="se">{PLUS_MINUS}{se_text}</span>')
    if note:
        number += (f'<span class="se cell-n" title="seeds with a finite value of {_e(metric)}">'
                   f"{_e(note)}</span>")
    if math.isnan(rank):
        return f'<td class="num" data-value="{_e(repr(mean))}">{number}</td>'
    best = ' class="num best"' if rank == 1 else ' class="num"'
    title = (f"rank {int(rank)} on {metric} ({better(metric)}; ties: Welch's t-test over seeds "
             f"does not reject equal means at level {TIE_ALPHA:g})")
    return (f'<td{best} data-value="{_e(repr(mean))}" data-rank="{int(rank)}">'
            f'<span class="rank" title="{_e(title)}">#{int(rank)}</span> {number}</td>')


def _th(column: str, title: str | None = None) -> str:
    # <wbr> lets long metric names wrap at underscores; the header's text stays the name.
    return f'<th scope="col" title="{_e(title or "sort by " + column)}">{_e(column).replace("_", "_<wbr>")}</th>'


#: Identity columns folded into each row's details (the method stays the first column).
DETAIL_COLUMNS = tuple(c for c in SUMMARY_COLUMNS if c not in ("method", "n"))


def _details(row: pd.Series, extra: Sequence[str]) -> str:
    """The row's other columns (model, setting, hparams and the metrics that are not
    ranked) folded into a ``<details>``: the table keeps its width."""
    items = [(c, _e(_text(row, c)) or "–") for c in DETAIL_COLUMNS]
    for metric in extra:
        mean, se = _num(row, metric), _num(row, metric + "_se")
        if math.isnan(mean):
            items.append((metric, MISSING))
        else:
            mean_text, se_text = mean_se_parts(mean, se)
            items.append((metric, mean_text + ("" if se_text is None else f"{PLUS_MINUS}{se_text}")
                          + _e(metric_n_note(row, metric))))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<td class="more" data-value=""><details><summary>details</summary><dl>{body}</dl></details></td>'


def _table(rows: pd.DataFrame, ranked: Sequence[str], extra: Sequence[str], table_id: str) -> str:
    """The method, the rule's score, the ranked (verdict) metrics, n and Pareto as columns;
    the rest of each row in its details cell, so the table fits a laptop's width."""
    score_name = _text(rows.iloc[0], "selection_metric") if len(rows) else ""
    head = "".join([_th("method"), _th("score", f"selection score: {score_name}"), *(_th(m) for m in ranked),
                    _th("n", "seeds of the selected setting"),
                    _th("Pareto", "on the Pareto front of clean accuracy vs. the bias metric"),
                    '<th scope="col" class="nosort" title="model, setting, hyper-parameters and the metrics '
                    'that are not ranked">details</th>'])
    body = []
    missing = not_installed(rows)
    for _, row in rows.iterrows():
        method = _text(row, "method")
        marker = ("" if method not in missing else
                  ' <span class="not-installed" title="this method is not installed here">not installed</span>')
        cells = [f'<td data-value="{_e(method)}">{_e(method)}{marker}</td>',
                 _metric_cell(_num(row, "selection_score"), math.nan)]
        cells += [_metric_cell(_num(row, m), _num(row, m + "_se"), _num(row, f"rank_{m}"), m,
                               metric_n_note(row, m)) for m in ranked]
        n = _num(row, "n")
        n_text = "" if math.isnan(n) else str(int(n))
        cells.append(f'<td class="num" data-value="{n_text}">{n_text or "–"}</td>')
        front = bool(row.get("pareto", False)) and not pd.isna(row.get("pareto", False))
        cells.append(f'<td data-value="{"yes" if front else ""}">{"yes" if front else ""}</td>')
        cells.append(_details(row, extra))
        row_class = ' class="uninstalled"' if method in missing else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    note = (f'<p class="note not-installed-note">Not installed: {_e(", ".join(missing))}. '
            f"{_e(NOT_INSTALLED_TEXT)}</p>" if missing else "")
    return (f'<div class="table-wrap"><table class="results sortable" id="{_e(table_id)}"><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>{note}")


def _bar_labels(frame: pd.DataFrame) -> list[str]:
    """``method``, plus the setting and/or model where several rows share that method; wrapped."""
    labels = []
    for _, row in frame.iterrows():
        group = frame[frame["method"] == row["method"]]
        extra = [_text(row, c) for c in ("setting", "model") if len(group) > 1 and group[c].nunique() > 1]
        if len(group) > 1 and not extra:
            extra = [_text(row, c) for c in ("setting", "model") if _text(row, c)]
        parts = [_text(row, "method"), *extra]
        labels.append("\n".join(textwrap.fill(p, 16, break_on_hyphens=False) for p in parts))
    return labels


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bar_plot(frame: pd.DataFrame, metrics: Sequence[str], title: str, ylabel: str,
              ylim: tuple[float, float] | None) -> str:
    """Grouped bars (one group per row, one bar per metric) with SE error bars, as a PNG data URI."""
    labels = _bar_labels(frame)
    longest = max(len(line) for label in labels for line in label.splitlines())
    group_inches = max(0.35 * (len(metrics) + 1), 0.085 * longest + 0.25)
    fig = Figure(figsize=(min(14.0, max(4.0, 1.2 + group_inches * len(labels))), 4.0),
                 layout="constrained")  # no pyplot: no global figure registry, nothing to leak
    ax = fig.subplots()
    x, width = np.arange(len(labels)), 0.75 / len(metrics)
    for i, metric in enumerate(metrics):
        se = frame[metric + "_se"] if metric + "_se" in frame.columns else pd.Series(math.nan, frame.index)
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, frame[metric].astype(float).to_numpy(), width,
               yerr=se.astype(float).to_numpy(), capsize=3, label=metric)
    ax.set_xticks(x, labels, fontsize="small", parse_math=False)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_title(title, fontsize="medium", parse_math=False)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=len(metrics), fontsize="small", frameon=False)
    return _png(fig)


def _se(frame: pd.DataFrame, metric: str) -> np.ndarray:
    column = f"{metric}_se"
    values = frame[column].astype(float) if column in frame.columns else pd.Series(math.nan, frame.index)
    return np.nan_to_num(values.to_numpy(), nan=0.0)


def _pareto_plot(frame: pd.DataFrame, x: str, y: str, title: str) -> str:
    """One point per method (mean ± SE on both axes), front points filled and joined, as a PNG data URI.
    A lower-is-better y axis is drawn inverted, so up and right are better on every plot."""
    rows = frame[frame[x].notna() & frame[y].notna()]
    front = rows["pareto"].astype(bool).to_numpy() if "pareto" in rows else np.zeros(len(rows), bool)
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    xs, ys = rows[x].astype(float).to_numpy(), rows[y].astype(float).to_numpy()
    styles: tuple[tuple[np.ndarray, dict[str, Any]], ...] = (
        (~front, dict(fmt="o", mfc="white", color="#7a8590", label="dominated")),
        (front, dict(fmt="o", color="#2f8f46", label="Pareto front")))
    for mask, style in styles:
        if mask.any():
            ax.errorbar(xs[mask], ys[mask], xerr=_se(rows, x)[mask], yerr=_se(rows, y)[mask], capsize=3,
                        markersize=7, linestyle="none", **style)
    if front.any():
        order = np.argsort(xs[front])
        ax.plot(xs[front][order], ys[front][order], color="#2f8f46", alpha=0.5)
    for px, py, name in zip(xs, ys, rows["method"].astype(str)):
        ax.annotate(textwrap.shorten(name, 28, placeholder="…"), (px, py), xytext=(5, 4),
                    textcoords="offset points", fontsize="small", parse_math=False)
    ax.set_xlabel(f"{x} ({better(x)})")
    ax.set_ylabel(f"{y} ({better(y)}{'; axis inverted' if y in LOWER_IS_BETTER else ''})")
    if y in LOWER_IS_BETTER:
        ax.invert_yaxis()
    ax.set_title(title, fontsize="medium", parse_math=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _png(fig)


def _verdict(frame: pd.DataFrame) -> str:
    items = []
    for v in verdicts(frame):
        where = f" ({_e(v['group'])})" if v["group"] else ""
        lines = []
        if v["axes"]:
            x, y = v["axes"]
            front = ", ".join(f"<b>{_e(m)}</b>" for m in v["front"]) or "–"
            lines.append(f"<li>Pareto front of {_e(x)} vs. {_e(y)} ({better(y)}): {front}</li>")
        best = "; ".join(f"{_e(m)}{' (lower is better)' if m in LOWER_IS_BETTER else ''}: "
                         + (", ".join(f"<b>{_e(n)}</b>" for n in names) or "–") for m, names in v["best"])
        if best:
            lines.append(f"<li>Rank 1 on {best}</li>")
        lines += [f'<li class="not-separating">{_e(sentence(text))}.</li>' for text in v["not_separating"]]
        items.append(f"<p>Verdict{where} under rule <code>{_e(v['rule'])}</code>, {_e(v['selected_by'])}:</p>"
                     f"<ul>{''.join(lines)}</ul>")
    return f'<div class="verdict">{"".join(items)}</div>' if items else ""


def _plots(dataset: str, frame: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """Under the verdict rule: a Pareto plot per model x setting, then the bar plots."""
    rule = verdict_rule(frame)
    rows = frame[frame["rule"] == rule]
    label = _text(rows.iloc[0], "selected_by") if len(rows) else ""
    images = []
    axes = pareto_axes(frame)
    if axes:
        for _, group in rows.groupby(["model", "setting"], sort=False, dropna=False):
            where = group_label(group.iloc[0])
            title = textwrap.fill(f"{dataset}{f' ({where})' if where else ''}: Pareto plot, rule {rule}", 70)
            front = ", ".join(group.loc[group["pareto"].astype(bool), "method"].astype(str))
            alt = f"Pareto plot on {dataset} {where}, rule {rule} ({label}): {axes[0]} vs. {axes[1]}; front: {front}"
            images.append(f'<img class="plot pareto" src="{_pareto_plot(group, *axes, title)}" alt="{_e(alt)}">')
    for options, ylabel, ylim in _PLOTS:
        chosen = [(t, [m for m in ms if m in metrics and has_metric(rows, m)]) for t, ms in options]
        title, shown = next(((t, ms) for t, ms in chosen if ms), ("", []))
        if shown:
            alt = f"{title} per method on {dataset}, rule {rule}: {', '.join(shown)}"
            src = _bar_plot(rows, shown, f"{title} (rule {rule})", ylabel, ylim)
            images.append(f'<img class="plot bars" src="{src}" alt="{_e(alt)}">')
    return images


def _dataset_section(dataset: str, frame: pd.DataFrame, metrics: Sequence[str], number: int) -> str:
    shown = [m for m in metrics if has_metric(frame, m)]
    ranked = [m for m in ranked_metrics(frame) if m in shown]
    extra = [m for m in shown if m not in ranked]
    images = _plots(dataset, frame, shown)
    tables = []
    for k, (rule, rows) in enumerate(frame.groupby("rule", sort=False)):
        first = rows.iloc[0]
        oracle = bool(first.get("oracle", False))
        tag = '<span class="oracle-tag">ORACLE</span> ' if oracle else ""
        note = " ".join([f"{_text(first, 'selected_by')}.",
                         *([f"{sentence(_text(first, 'selection_note'))}."] if _text(first, "selection_note") else []),
                         *(["Hyper-parameters chosen on test data: an upper bound, not a result."] if oracle else [])])
        tables.append(f'<section class="rule{" oracle" if oracle else ""}" data-rule="{_e(rule)}">'
                      f'<h3>{tag}Rule <code>{_e(rule)}</code>, selected on '
                      f'<code class="metric">{_e(_text(first, "selection_metric"))}</code></h3>'
                      f'<p class="note">{_e(note)}</p>{_table(rows, ranked, extra, f"results-{number}-{k}")}</section>')
    return (f'<section class="dataset" data-dataset="{_e(dataset)}"><h2>{_e(dataset)}</h2>{_verdict(frame)}'
            f'<div class="plots">{"".join(images) or "<p>No plottable metrics.</p>"}</div>{"".join(tables)}</section>')


def _header(summary: pd.DataFrame, info: dict[str, str]) -> str:
    datasets = ", ".join(dict.fromkeys(summary["dataset"].astype(str))) if len(summary) else ""
    oracle = bool(summary["oracle"].astype(bool).any()) if "oracle" in summary else False
    warning = ('<p class="warning" role="alert">Tables marked ORACLE: hyper-parameters were chosen on test '
               "data (oracle selection); those numbers overestimate real performance and are an upper bound, "
               "not a result.</p>" if oracle else "")
    rules = info.get("rules") or info.get("selection", "")
    rule_list = "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in rules.splitlines()) + "</ul>"
    store = info.get("tracking_store") or store_label(info.get("tracking_uri", ""))
    items = [("Dataset(s)", _e(datasets)), ("Selection rules", rule_list), ("Seeds", _e(info.get("seeds", ""))),
             ("Command", f"<code class=\"cmd\">{_e(public_text(info.get('command', '')))}</code>"),
             ("Date", _e(info.get("date", ""))),
             ("Tracking store", f"<code>{_e(store)}</code>"), ("Reading", _e(RANKS_TEXT))]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<header><h1>{_e(info.get('title', 'Leaderboard'))}</h1>{warning}<dl>{rows}</dl></header>"


def _with_rules(summary: pd.DataFrame, info: dict[str, str]) -> pd.DataFrame:
    """A summary from ``selection.select`` of one rule (no ``rule`` column) as one rule's rows,
    and ranks and Pareto membership where they are missing."""
    if "rule" not in summary.columns:
        selection = info.get("selection", "")
        summary = summary.assign(rule="selected", oracle=selection.startswith("ORACLE"),
                                 selected_by=summary.get("selected_by", selection))
    if "pareto" not in summary.columns:
        summary = add_verdict(summary)
    return summary


def _non_finite(info: dict[str, str]) -> str:
    """The line naming the runs whose non-finite metrics count as missing (``non_finite_runs``)."""
    text = info.get("non_finite", "")
    return f'<p class="note non-finite">{_e(public_text(text))}</p>' if text else ""


def _notes(info: dict[str, str]) -> str:
    """The maintainers' reading of the tables (``--notes``): escaped paragraphs, no markup."""
    paragraphs = [" ".join(p.split()) for p in info.get("notes", "").split("\n\n") if p.strip()]
    if not paragraphs:
        return ""
    body = "".join(f"<p>{_e(p)}</p>" for p in paragraphs)
    return f'<section class="notes"><h2>{_e(NOTES_HEADING)}</h2>{body}</section>'


def render_page(summary: pd.DataFrame, info: dict[str, str], metrics: Sequence[str]) -> str:
    """The leaderboard for ``summary`` (one row per rule and selected result) as one HTML document."""
    # Paths are hidden by the caller (write_leaderboard); again here, so no caller can leak one.
    summary = public_frame(_with_rules(summary, info), ("setting", "hparams")) if len(summary) else summary
    shown = [m for m in metrics if has_metric(summary, m)]
    sections = "".join(_dataset_section(str(d), frame, shown, k)
                       for k, (d, frame) in enumerate(summary.groupby("dataset", sort=False))) if len(summary) else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(info.get('title', 'Leaderboard'))}</title><style>{_CSS}</style></head><body>"
            f"{_header(summary, info)}{sections or '<p>No rule selected any result.</p>'}{_non_finite(info)}"
            f"{_notes(info)}"
            f"<script>{_JS}</script></body></html>\n")
