"""A leaderboard as one self-contained static HTML page.

The page makes no external requests (no CDN, fonts, scripts or images): CSS and JS are inline
and plots are PNG data URIs, so the file can be published as a static artefact or opened
offline. Plots are raster images rather than SVG so that no run-derived text (method, dataset
or hyper-parameter names) ever reaches an SVG or JS context; in HTML every such string goes
through ``html.escape(..., quote=True)``, and the sorting script only reads the DOM.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

_TEXT_COLUMNS = ("method", "dataset", "model", "setting", "hparams")
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
h1{font-size:1.6rem;margin-bottom:.5rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}
code{background:#f1f3f5;padding:.1rem .3rem;border-radius:3px;word-break:break-all}
.warning{background:#fff3cd;border:1px solid #e0b400;padding:.6rem .9rem;border-radius:4px;font-weight:600}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:.35rem .5rem;border-bottom:1px solid #dde1e5;text-align:left;vertical-align:top}
td{max-width:14rem;overflow-wrap:break-word}td.num{text-align:right;white-space:nowrap}
code.cmd{display:block;white-space:pre-wrap}
.se{display:block;font-size:.8em;color:#5c6670}tbody tr:nth-child(even){background:#f8f9fa}
th{cursor:pointer;user-select:none;background:#eef1f4;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.plots{display:flex;flex-wrap:wrap;gap:1rem}img.plot{max-width:100%;height:auto;border:1px solid #eee}
"""

_JS = """
(() => {
  const table = document.getElementById("leaderboard");
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, col) => {
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


def _present(frame: pd.DataFrame, metric: str) -> bool:
    return metric in frame.columns and bool(frame[metric].notna().any())


def _metric_cell(mean: float, se: float) -> str:
    if math.isnan(mean):
        return '<td class="num" data-value="">–</td>'
    se_text = "" if math.isnan(se) else f'<span class="se"> ± {se:.3f}</span>'  # textContent "m ± se"
    return f'<td class="num" data-value="{_e(repr(mean))}">{mean:.3f}{se_text}</td>'


def _table(summary: pd.DataFrame, metrics: Sequence[str]) -> str:
    # <wbr> lets long metric names wrap at underscores; the header's text stays the metric name.
    head = "".join(f'<th scope="col" title="sort by {_e(c)}">{_e(c).replace("_", "_<wbr>")}</th>'
                   for c in (*_TEXT_COLUMNS, "n", *metrics))
    rows = []
    for _, row in summary.iterrows():
        cells = [f'<td data-value="{_e(_text(row, c))}">{_e(_text(row, c))}</td>' for c in _TEXT_COLUMNS]
        n = _num(row, "n")
        n_text = "" if math.isnan(n) else str(int(n))
        cells.append(f'<td class="num" data-value="{n_text}">{n_text or "–"}</td>')
        cells += [_metric_cell(_num(row, m), _num(row, m + "_se")) for m in metrics]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table id="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _dataset_section(dataset: str, frame: pd.DataFrame, metrics: Sequence[str]) -> str:
    images = []
    for options, ylabel, ylim in _PLOTS:
        chosen = [(t, [m for m in ms if m in metrics and _present(frame, m)]) for t, ms in options]
        title, shown = next(((t, ms) for t, ms in chosen if ms), ("", []))
        if shown:
            alt = f"{title} per method on {dataset}: {', '.join(shown)}"
            src = _bar_plot(frame, shown, title, ylabel, ylim)
            images.append(f'<img class="plot" src="{src}" alt="{_e(alt)}">')
    return (f'<section class="dataset" data-dataset="{_e(dataset)}"><h2>{_e(dataset)}</h2>'
            f'<div class="plots">{"".join(images) or "<p>No plottable metrics.</p>"}</div></section>')


def _header(summary: pd.DataFrame, info: dict[str, str]) -> str:
    datasets = ", ".join(dict.fromkeys(summary["dataset"].astype(str)))
    selection = info.get("selection", "")
    warning = ('<p class="warning" role="alert">Warning: hyper-parameters were chosen on test data '
               "(oracle selection); these numbers overestimate real performance.</p>"
               if selection.startswith("ORACLE") else "")
    items = [("Dataset(s)", _e(datasets)), ("Selection", _e(selection)), ("Seeds", _e(info.get("seeds", ""))),
             ("Command", f"<code class=\"cmd\">{_e(info.get('command', ''))}</code>"), ("Date", _e(info.get("date", ""))),
             ("Tracking URI", f"<code>{_e(info.get('tracking_uri', ''))}</code>")]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<header><h1>{_e(info.get('title', 'Leaderboard'))}</h1>{warning}<dl>{rows}</dl></header>"


def render_page(summary: pd.DataFrame, info: dict[str, str], metrics: Sequence[str]) -> str:
    """The leaderboard for ``summary`` (one row per selected result) as one HTML document."""
    shown = [m for m in metrics if _present(summary, m)]
    sections = "".join(_dataset_section(str(d), frame, shown)
                       for d, frame in summary.groupby("dataset", sort=False))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(info.get('title', 'Leaderboard'))}</title><style>{_CSS}</style></head><body>"
            f"{_header(summary, info)}<h2>Results</h2>{_table(summary, shown)}{sections}"
            f"<script>{_JS}</script></body></html>\n")
