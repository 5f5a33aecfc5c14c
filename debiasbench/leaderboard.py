"""``debiasbench leaderboard``: a tracking store's runs as files others can read.

Writes ``results.csv`` (every run, any status, with the failure reason in
``tags.debiasbench.failure``), ``summary.csv`` (the selected results,
``selection``), ``README.md`` (those as Markdown tables) and ``index.html`` (one static
page, ``leaderboard_page``). The files are written next to each other under temporary
names and renamed into place, so an interrupted command never leaves half a leaderboard.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from debiasbench.errors import UserError
from debiasbench.report import EXTRA_METRICS, HEADLINE_METRICS
from debiasbench.tracking import RUN_KEY_TAG, search_all

COMMAND_TAG = "debiasbench.command"
#: Columns of summary tables besides the metrics.
SUMMARY_COLUMNS = ("method", "dataset", "model", "setting", "hparams", "n")


def open_store(tracking_uri: str | None) -> Any:
    """An MLflow client of an existing store (reading never creates an empty one)."""
    from mlflow.tracking import MlflowClient

    from debiasbench.tracking import absolute_tracking_uri

    uri = absolute_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"tracking store {uri!r} does not exist: run a sweep first or pass --tracking-uri")
    return MlflowClient(uri), uri


def runs_frame(tracking_uri: str | None, experiments: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Every debiasbench run of the store (or of ``experiments``) as one row: ``run_id``,
    ``experiment``, ``status``, ``start_time``, ``params.*``, ``metrics.*``, ``tags.*``."""
    client, uri = open_store(tracking_uri)
    try:
        found = client.search_experiments()
    except Exception as exc:
        raise UserError(f"tracking store {uri!r} cannot be read: {str(exc).splitlines()[0]}") from None
    names = {e.experiment_id: e.name for e in found}
    if experiments:
        missing = sorted(set(experiments) - set(names.values()))
        if missing:
            raise UserError(f"experiment {missing[0]!r} not in {uri!r}; it has: {', '.join(sorted(names.values()))}")
        names = {i: n for i, n in names.items() if n in experiments}
    rows = []
    for experiment_id, name in names.items():
        for run in search_all(client, experiment_id):
            if RUN_KEY_TAG not in run.data.tags:
                continue  # not a debiasbench run
            rows.append({"run_id": run.info.run_id, "experiment": name, "status": run.info.status,
                         "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
                         **{f"params.{k}": v for k, v in run.data.params.items()},
                         **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                         **{f"tags.{k}": v for k, v in run.data.tags.items() if k.startswith("debiasbench.")}})
    return pd.DataFrame(rows), uri


def finished_once(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs, the latest one per run key (``debiasbench run`` may repeat a job)."""
    done = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    return done.drop_duplicates(f"tags.{RUN_KEY_TAG}", keep="last")


def summary_metrics(runs: pd.DataFrame) -> tuple[str, ...]:
    return tuple(m for m in (*HEADLINE_METRICS, *EXTRA_METRICS) if f"metrics.{m}" in runs)


def build_info(runs: pd.DataFrame, selection: str, uri: str, command: str) -> dict[str, str]:
    """What the page and README say about how the numbers were made."""
    sweeps = sorted(set(runs.get(f"tags.{COMMAND_TAG}", pd.Series(dtype=str)).dropna()))
    seeds = sorted({int(s) for s in runs["params.seed"].dropna()})
    return {
        "title": "debiasbench leaderboard",
        "command": "\n".join([*sweeps, command]),
        "selection": selection,
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})",
        "date": dt.date.today().isoformat(),
        "tracking_uri": uri,
    }


def _md(text: Any) -> str:
    """A table cell: pipes and HTML (which Markdown renderers would run) escaped."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def _cell(mean: float, se: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.3f}" if se is None or math.isnan(se) else f"{mean:.3f} ± {se:.3f}"


def markdown(summary: pd.DataFrame, info: dict[str, str], metrics: tuple[str, ...]) -> str:
    lines = [f"# {_md(info['title'])}", "",
             f"- date: {info['date']}",
             f"- selection: {_md(info['selection'])}",
             f"- seeds: {info['seeds']} (mean ± standard error over seeds; n = seeds of the selected setting)",
             f"- tracking store: `{info['tracking_uri']}`", "",
             "Produced by:", "", "```", info["command"], "```", ""]
    for dataset, rows in summary.groupby("dataset", sort=False):
        shown = [m for m in metrics if rows[m].notna().any()]
        lines += [f"## {_md(dataset)}", "",
                  "| " + " | ".join([*SUMMARY_COLUMNS, *shown]) + " |",
                  "|" + "---|" * (len(SUMMARY_COLUMNS) + len(shown))]
        for _, row in rows.iterrows():
            cells = [_md(row[c]) for c in SUMMARY_COLUMNS] + [_cell(row[m], row[f"{m}_se"]) for m in shown]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_leaderboard(runs: pd.DataFrame, summary: pd.DataFrame, info: dict[str, str],
                      metrics: tuple[str, ...], out: Path) -> list[Path]:
    """The four files under ``out``, each renamed into place only once all are written."""
    from debiasbench.leaderboard_page import render_page

    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "results.csv": runs.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "README.md": markdown(summary, info, metrics),
        "index.html": render_page(summary, info, metrics),
    }
    staged = []
    try:
        for name, text in texts.items():
            handle, temp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
            staged.append((Path(temp), out / name))
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    for temp, final in staged:
        os.chmod(temp, 0o644)
        os.replace(temp, final)
    return [final for _, final in staged]
