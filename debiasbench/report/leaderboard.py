"""``debiasbench leaderboard``: a tracking store's runs as files others can read.

Writes ``results.csv`` (every run, any status, with the failure reason in
``tags.debiasbench.failure``), ``summary.csv`` (what each selection rule of ``selection``
selects, one block of rows per rule with a ``rule`` column, plus ranks and Pareto-front
membership), ``README.md`` (a table per dataset per rule) and ``index.html`` (one static
page, ``debiasbench.report.page``). ``debiasbench.report.publish`` writes them.

**Verdict.** Within one comparable group (a rule, a dataset, a model and a setting) every
selected method is ranked on each headline metric (``ranked_metrics``) by ``tie_ranks``:
competition ranking ("1, 1, 3") monotone in the mean, where a method shares the rank of
the best of its tier unless Welch's t-test over seeds rejects equal means at level
``TIE_ALPHA`` (0.05). The Pareto front (``pareto_front``) is taken on
clean accuracy against the dataset's bias metric (``pareto_axes``).

**No machine paths.** The published files name the store by kind and file name only
(``store_label``: ``sqlite: mlflow.db``; ``source.json`` by its URI, credentials redacted
and its path made public as below), and every absolute path in a run's params, tags,
command lines or labels is shown relative to the working directory where it lies below
it, else as ``<dir>/`` and its last component (``public_text``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

import pandas as pd

from debiasbench.core.errors import UserError, redact_credentials
from debiasbench.core.files import NOTES_LIMIT, FileRefused, read_regular_bytes
from debiasbench.report.tables import EXTRA_METRICS, HEADLINE_METRICS
from debiasbench.core.stats import MISSING, TIE_ALPHA, format_mean_se, is_finite, n_note, welch_p_value
from debiasbench.track.store import RUN_KEY_TAG, search_all

COMMAND_TAG = "debiasbench.command"
SWEEP_FILE_TAG = "debiasbench.sweep_file"
#: Columns of summary tables besides the metrics (the dataset is the table's heading).
SUMMARY_COLUMNS = ("method", "model", "setting", "hparams", "n")
#: Metrics where lower is better.
LOWER_IS_BETTER = frozenset({"artifact_relevance"})
#: Bias metrics, ranked where logged; the first one logged is the Pareto plot's y axis.
BIAS_METRICS = ("test_conflicting_acc", "test_worst_group_acc", "artifact_relevance")
#: The rule the verdict, the Pareto plot and the bar plots follow where it applies.
VERDICT_RULE = "bias_annotated"
#: What replaces the directory of a path outside the working directory.
HIDDEN_DIR = "<dir>"


# --- no machine paths ------------------------------------------------------------------------

_PATH_BODY = r"[^\s'\"`,;()\[\]{}<>|]+"
#: sqlite / file URIs of absolute paths: ``sqlite:////abs/x.db``, ``file:///abs/mlruns``.
_STORE_URI = re.compile(r"\b(sqlite:///|file://)(/" + _PATH_BODY + ")")
#: An absolute POSIX path (or ``~/``) standing on its own: not inside a URL (``//``), a
#: relative path (``a/b``) or an already hidden one (``<dir>/x``).
_ABSOLUTE = re.compile(r"(?<![\w.~/\\<>-])~?/(?!/)" + _PATH_BODY)


def public_path(path: str, cwd: Path | None = None) -> str:
    """``path`` relative to the working directory where it lies below it (and that is not
    ``/``), else ``<dir>/<last component>`` (``<dir>`` alone for a top-level folder)."""
    here = Path.cwd() if cwd is None else cwd
    full = Path(os.path.expanduser(path))
    if len(here.parts) > 1:
        try:
            return str(full.relative_to(here))
        except ValueError:
            pass
    return f"{HIDDEN_DIR}/{full.name}" if full.name and len(full.parts) > 2 else HIDDEN_DIR


def public_text(value: Any, cwd: Path | None = None) -> Any:
    """``value`` with every absolute path in it made public (``public_path``); non-strings as they are."""
    if not isinstance(value, str) or "/" not in value:
        return value
    value = _STORE_URI.sub(lambda m: m.group(1) + public_path(m.group(2), cwd), value)
    return _ABSOLUTE.sub(lambda m: public_path(m.group(0), cwd), value)


def public_frame(frame: pd.DataFrame, columns: Iterable[str] | None = None, cwd: Path | None = None) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (of ``columns``, default all) hold no machine path:
    ``params.dataset_params.root``, ``cache_dir``, ``checkpoint_dir``, the sweep file and
    command tags, failure messages, whatever a plugin logs."""
    out = frame.copy()
    for column in (out.columns if columns is None else columns):
        if column in out and (pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column])):
            out[column] = out[column].map(lambda v: public_text(v, cwd))
    return out


def store_label(uri: str) -> str:
    """A tracking store as its kind and file name (``sqlite: mlflow.db``; a server as its
    host), never its folder or credentials."""
    if not uri:
        return ""
    if "://" not in uri:
        return f"file: {Path(uri).name}"
    parts = urlsplit(uri)
    name = Path(parts.path).name
    if parts.scheme in ("sqlite", "file") or not parts.hostname:
        return f"{parts.scheme}: {name}".rstrip()
    return f"{parts.scheme}: {parts.hostname}" + (f" ({name})" if name else "")


# --- reading the store -----------------------------------------------------------------------

def open_store(tracking_uri: str | None) -> Any:
    """An MLflow client of an existing store (reading never creates an empty one, upgrades
    an older one or adds MLflow's tables to another application's database); its calls to
    a server are bounded (``debiasbench.track.store.bound_server_calls``)."""
    from debiasbench.track.store import absolute_tracking_uri, existing_store_client

    uri = absolute_tracking_uri(tracking_uri)
    client = existing_store_client(uri)
    if client is None:
        raise UserError(f"tracking store {redact_credentials(uri)!r} does not exist: run a sweep first or pass "
                        "--tracking-uri")
    return client, uri


def runs_frame(tracking_uri: str | None, experiments: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Every debiasbench run of the store (or of ``experiments``) as one row: ``run_id``,
    ``experiment``, ``status``, ``start_time``, ``params.*``, ``metrics.*``, ``tags.*``."""
    runs, uri, _ = read_store(tracking_uri, experiments)
    return runs, uri


def read_store(tracking_uri: str | None,
               experiments: list[str] | None = None) -> tuple[pd.DataFrame, str, list[dict[str, str]]]:
    """``runs_frame``'s runs and store URI, and the experiments those runs belong to, each
    as its ``name``, ``id`` and ``created`` (its creation time, ISO 8601 UTC; "" where the
    store keeps none): what identifies a store in a leaderboard's ``source.json``."""
    client, uri = open_store(tracking_uri)
    shown_uri = redact_credentials(uri)
    try:
        found = client.search_experiments()
    except UserError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"tracking store {shown_uri!r} cannot be read: {redact_credentials(message)}") from None
    names = {e.experiment_id: e.name for e in found}
    if experiments:
        missing = sorted(set(experiments) - set(names.values()))
        if missing:
            raise UserError(f"experiment {missing[0]!r} not in {shown_uri!r}; it has: "
                            f"{', '.join(sorted(names.values()))}")
        names = {i: n for i, n in names.items() if n in experiments}
    created = {e.experiment_id: e.creation_time for e in found}
    rows: list[dict[str, Any]] = []
    read_from: list[dict[str, str]] = []
    for experiment_id, name in names.items():
        for run in search_all(client, experiment_id):
            if RUN_KEY_TAG not in run.data.tags:
                continue  # not a debiasbench run
            if not read_from or read_from[-1]["id"] != experiment_id:
                read_from.append({"name": name, "id": experiment_id, "created": _utc(created.get(experiment_id))})
            rows.append({"run_id": run.info.run_id, "experiment": name, "status": run.info.status,
                         "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
                         **{f"params.{k}": v for k, v in run.data.params.items()},
                         **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                         NON_FINITE_COLUMN: ", ".join(f"{k}={non_finite_text(v)}" for k, v in
                                                      sorted(run.data.metrics.items()) if not is_finite(v)),
                         **{f"tags.{k}": v for k, v in run.data.tags.items() if k.startswith("debiasbench.")}})
    return pd.DataFrame(rows), uri, read_from


def _utc(milliseconds: int | None) -> str:
    if milliseconds is None:
        return ""
    return dt.datetime.fromtimestamp(milliseconds / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


def finished_once(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs, the latest one per run key (``debiasbench run`` may repeat a job)."""
    done = runs[runs["status"] == "FINISHED"].sort_values("start_time")
    return done.drop_duplicates(f"tags.{RUN_KEY_TAG}", keep="last")


def summary_metrics(runs: pd.DataFrame) -> tuple[str, ...]:
    return tuple(m for m in (*HEADLINE_METRICS, *EXTRA_METRICS) if f"metrics.{m}" in runs)


# --- the verdict -----------------------------------------------------------------------------

def has_metric(frame: pd.DataFrame, metric: str) -> bool:
    """Whether a summary ``frame`` holds a value of ``metric`` in any row."""
    return metric in frame.columns and bool(frame[metric].notna().any())


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def clean_metric(frame: pd.DataFrame) -> str | None:
    """Clean accuracy: ``test_clean_acc`` where logged, else the natural ``test_acc``."""
    return next((m for m in ("test_clean_acc", "test_acc") if has_metric(frame, m)), None)


def ranked_metrics(frame: pd.DataFrame) -> tuple[str, ...]:
    """The headline metrics a dataset's rows are ranked on: clean accuracy, then every
    bias metric logged (``artifact_relevance``: lower is better). On artifact datasets
    (``artifact_relevance`` logged) also ``test_biased_acc``, accuracy with the artifact on
    every image, the RR-ClArC paper's measure of a correction; on colour datasets it is
    near 1 for every model and ranks nothing."""
    clean = clean_metric(frame)
    biased = ("test_biased_acc",) if has_metric(frame, "artifact_relevance") else ()
    return tuple(m for m in (clean, *biased, *BIAS_METRICS) if m and has_metric(frame, m))


def pareto_axes(frame: pd.DataFrame) -> tuple[str, str] | None:
    """(x, y) of the Pareto plot: clean accuracy and the bias metric: artifact relevance on
    artifact datasets (where a method's reliance on the artifact is measured directly;
    their "conflicting" samples are the attacked class's clean images only), else
    conflicting accuracy, else worst-group accuracy."""
    x = clean_metric(frame)
    y = next((m for m in ("artifact_relevance", *BIAS_METRICS) if has_metric(frame, m)), None)
    return (x, y) if x and y else None


def better(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def tie_ranks(means: Sequence[float], ses: Sequence[float], ns: Sequence[float] | None = None,
              lower_is_better: bool = False, alpha: float = TIE_ALPHA) -> list[float]:
    """Competition ranks ("1, 1, 3"), monotone in the mean, with ties where Welch's t-test
    cannot tell two results apart.

    Results are taken best mean first (equal means in input order). The first leads a tier
    with rank 1. Each next result joins the current tier (its rank) where Welch's two-sided
    t-test against the tier's leader, on both results' mean, standard error and number of
    seeds (``ns``; unknown: a z-test), does not reject equal means at level ``alpha``;
    otherwise it leads a new tier whose rank is its position (1 + the results before it).
    A better mean therefore never gets a worse rank. Where the test cannot be made (a
    result of one seed: no standard error) a result ties only on an equal mean. A missing
    mean gets no rank (NaN).
    """
    sign = 1.0 if lower_is_better else -1.0
    order = sorted((i for i, m in enumerate(means) if _finite(m)), key=lambda i: sign * float(means[i]))
    ranks = [math.nan] * len(means)

    def n_of(i: int) -> int:
        return int(ns[i]) if ns is not None and _finite(ns[i]) else 0

    lead = -1
    for position, i in enumerate(order):
        if lead >= 0:
            mean, lead_mean = float(means[i]), float(means[lead])
            p = welch_p_value(mean, float(ses[i]) if _finite(ses[i]) else math.nan, n_of(i),
                              lead_mean, float(ses[lead]) if _finite(ses[lead]) else math.nan, n_of(lead))
            if (math.isnan(p) and mean == lead_mean) or p >= alpha:
                ranks[i] = ranks[lead]
                continue
        lead = i
        ranks[i] = float(position + 1)
    return ranks


def same_for_every_method(group: pd.DataFrame, metric: str) -> float | None:
    """The mean of ``metric`` where every method of ``group`` (two or more) has that same
    mean, else None: such a metric does not separate the methods (on ``colored_digits``
    every worst-group accuracy is 0.000), so it is given no rank and no verdict."""
    if metric not in group:
        return None
    values = [float(v) for v in group[metric] if _finite(v)]
    if len(values) < 2 or max(values) - min(values) > 1e-12:
        return None
    return values[0]


def not_separating_text(metric: str, value: float) -> str:
    """Why a metric with ``value`` for every method is not ranked, in one sentence."""
    why = ("the same value for every method" if "worst_group" not in metric else
           "its worst group is one no method classifies a sample of correctly (typically a group of one or "
           "two samples)" if value == 0 else "every method reaches the same accuracy on its worst group")
    return f"{metric} is {value:.3f} for every method: it does not separate the methods ({why}), so it is not ranked"


def pareto_front(xs: Sequence[float], ys: Sequence[float], y_lower_is_better: bool = False) -> list[bool]:
    """Which points (higher x is better; y higher, or lower) no other point dominates: none is
    at least as good on both means and better on one. Points with a missing mean are not on it."""
    sign = -1.0 if y_lower_is_better else 1.0
    points = [(float(x), sign * float(y)) if _finite(x) and _finite(y) else None for x, y in zip(xs, ys)]
    front = []
    for i, p in enumerate(points):
        front.append(p is not None and not any(
            q is not None and j != i and q[0] >= p[0] and q[1] >= p[1] and q != p for j, q in enumerate(points)))
    return front


def add_verdict(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``rank_<metric>`` for each of its dataset's ``ranked_metrics`` and
    ``pareto`` (on the front of its dataset's ``pareto_axes``), computed within each
    comparable group (rule x dataset x model x setting); rows ordered by dataset, rule,
    model and setting (first seen), then by the rule's score (``selection_score``, best
    first), then by the rank on the bias axis and on clean accuracy. A metric with the same
    mean for every method of a group (``same_for_every_method``) gets no rank there."""
    if summary.empty:
        return summary
    out = summary.reset_index(drop=True).copy()
    out["pareto"] = False
    sort_ranks: dict[Any, tuple[float, ...]] = {}
    for _, of_dataset in out.groupby("dataset", sort=False):
        ranked, axes = ranked_metrics(of_dataset), pareto_axes(of_dataset)
        for _, group in of_dataset.groupby(["rule", "model", "setting"], sort=False, dropna=False):
            for metric in ranked:
                n_column = f"{metric}_n" if f"{metric}_n" in group else "n"  # seeds with a finite value
                ns = group[n_column].tolist() if n_column in group else None
                if same_for_every_method(group, metric) is not None:
                    out.loc[group.index, f"rank_{metric}"] = math.nan  # separates nothing: no rank
                    continue
                se = group[f"{metric}_se"] if f"{metric}_se" in group else pd.Series(math.nan, index=group.index)
                out.loc[group.index, f"rank_{metric}"] = tie_ranks(group[metric].tolist(), se.tolist(), ns,
                                                                   metric in LOWER_IS_BETTER)
            if axes:
                x, y = axes
                out.loc[group.index, "pareto"] = pareto_front(group[x].tolist(), group[y].tolist(),
                                                              y in LOWER_IS_BETTER)
                for i in group.index:
                    sort_ranks[i] = tuple(_or_inf(out.at[i, f"rank_{m}"]) for m in (y, x))
            if "selection_score" in group:  # the rule's score first, best first
                for i in group.index:
                    score = out.at[i, "selection_score"]
                    sort_ranks[i] = (-float(score) if _finite(score) else math.inf, *sort_ranks.get(i, ()))
    first_seen = {c: {v: k for k, v in enumerate(dict.fromkeys(out[c]))}
                  for c in ("dataset", "rule", "model", "setting")}
    keys = sorted(out.index, key=lambda i: (*(first_seen[c][out.at[i, c]] for c in first_seen),
                                            sort_ranks.get(i, ()), i))
    return out.loc[keys].reset_index(drop=True)


def _or_inf(value: Any) -> float:
    return float(value) if _finite(value) else math.inf


#: Said under a table that holds results of a method not installed here.
NOT_INSTALLED_TEXT = ("No installed plugin registers these methods (uninstalled, or failing to load): their results "
                      "are read from the store as they were recorded and cannot be rerun or checked against "
                      "code installed here.")


def mark_installed(summary: pd.DataFrame, installed: Iterable[str] | None = None) -> pd.DataFrame:
    """``summary`` with ``installed``: whether its method is one of ``installed`` (default:
    the methods registered here, ``debiasbench.core.registry.METHODS``). A store keeps the
    runs of a plugin after ``pip uninstall``; the leaderboard lists them, marked."""
    if summary.empty:
        return summary
    if installed is None:
        from debiasbench.core.registry import METHODS

        installed = METHODS.names()
    names = set(installed)
    return summary.assign(installed=summary["method"].astype(str).isin(names))


def not_installed(frame: pd.DataFrame) -> list[str]:
    """The methods of ``frame`` marked not installed (``mark_installed``), in name order."""
    if "installed" not in frame:
        return []
    marked = frame["installed"].map(lambda v: v is False or str(v) == "False")
    return sorted(set(frame.loc[marked, "method"].astype(str)))


def verdict_rule(frame: pd.DataFrame) -> str | None:
    """The rule a dataset's verdict follows: bias-annotated where it applied, else the first
    rule that is not an oracle, else the first."""
    rules = list(dict.fromkeys(frame["rule"]))
    if VERDICT_RULE in rules:
        return VERDICT_RULE
    oracle = frame.groupby("rule", sort=False)["oracle"].first() if "oracle" in frame else {}
    return next((r for r in rules if not bool(oracle.get(r, False))), rules[0] if rules else None)


def group_label(row: pd.Series) -> str:
    return " ".join(str(row[c]) for c in ("model", "setting") if str(row.get(c, "") or ""))


def verdicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One dataset's verdict: per comparable group of ``verdict_rule``, the Pareto front,
    the methods ranked 1 on each ranked metric, and why a metric with the same mean for
    every method is not ranked (``not_separating``)."""
    rule = verdict_rule(frame)
    if rule is None:
        return []
    rows = frame[frame["rule"] == rule]
    axes = pareto_axes(frame)
    found = []
    groups = list(rows.groupby(["model", "setting"], sort=False, dropna=False))
    for _, group in groups:
        first = group.iloc[0]
        ranked = [m for m in ranked_metrics(frame) if f"rank_{m}" in group]
        flat = {m: same_for_every_method(group, m) for m in ranked}
        best = [(m, [str(v) for v in group.loc[group[f"rank_{m}"] == 1, "method"]])
                for m in ranked if flat[m] is None]
        front = [str(v) for v in group.loc[group["pareto"].astype(bool), "method"]] if "pareto" in group else []
        found.append({"rule": rule, "selected_by": str(first.get("selected_by", rule)),
                      "group": group_label(first) if len(groups) > 1 else "",
                      "axes": axes, "front": front, "best": best,
                      "not_separating": [not_separating_text(m, v) for m, v in flat.items() if v is not None]})
    return found


# --- the files -------------------------------------------------------------------------------

def build_info(runs: pd.DataFrame, rules: Sequence[Any], uri: str, command: str,
               cwd: Path | None = None) -> dict[str, str]:
    """What the page and README say about how the numbers were made; no machine path."""
    sweeps = sorted({public_text(c, cwd) for c in runs.get(f"tags.{COMMAND_TAG}", pd.Series(dtype=str)).dropna()})
    seeds = sorted({int(s) for s in runs["params.seed"].dropna()})
    return {
        "title": "debiasbench leaderboard",
        "command": "\n".join([*sweeps, command]),
        "selection": "; ".join(r.label for r in rules),
        "rules": "\n".join(f"{r.name}: {r.description}" for r in rules),
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})",
        "date": dt.date.today().isoformat(),
        "tracking_store": store_label(uri),
        "non_finite": non_finite_runs(runs),
    }


RANKS_TEXT = ("Rows are sorted by the rule's score. Ranks (#k) compare the methods of one table on one metric and "
              "follow the mean: competition ranking (1, 1, 3) where methods are taken best mean first and each "
              "shares the rank of the best method of its tier unless Welch's two-sided t-test over seeds (mean, "
              f"standard error and n of each) rejects equal means at level {TIE_ALPHA:g}; then it starts a new tier "
              "ranked by its position. A result of one seed can be tested against nothing: it ties only on an equal "
              "mean. A metric with the same mean for every method is not ranked: it does not separate them. "
              "The Pareto front holds the methods no other method beats on both clean accuracy and the bias metric.")


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _md(text: Any) -> str:
    """Text in Markdown, shown as written: HTML (which renderers would run) as entities,
    and the characters that would start code, emphasis, links or a table cell
    backslash-escaped (not ``_``: inside a word, as in names, it never starts emphasis);
    on one line."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*\[\]|])", r"\\\1", text)
    return text.replace("\r", " ").replace("\n", " ")


def _fence(text: str) -> list[str]:
    """``text`` as a fenced code block whose fence is longer than any run of backticks in
    it, so nothing in the text (a file name holding a fence) can close the block early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _code(text: str) -> str:
    """``text`` as inline code, delimited by more backticks than any run inside it."""
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _cell(mean: float, se: float, rank: float = math.nan, note: str = "") -> str:
    """"0.620 ± 0.012 (#1)": the mean over seeds, its standard error and the rank, if any;
    ``note`` (``core.stats.n_note``: " (n=3)") after the number where the mean rests on
    another number of seeds than the row's n."""
    text = format_mean_se(mean, se)
    if text == MISSING:
        return text
    return f"{text}{note} (#{int(rank)})" if _finite(rank) else f"{text}{note}"


def metric_n_note(row: pd.Series, metric: str) -> str:
    """``n_note`` of ``row``'s ``metric``: " (n=3)" where fewer of its seeds logged a finite value."""
    return n_note(row.get(f"{metric}_n", math.nan), row.get("n", math.nan))


#: How many runs that logged a non-finite metric the files name (results.csv has them all).
NON_FINITE_SHOWN = 20
#: The column of ``runs_frame`` (and results.csv) listing a run's non-finite metrics: ``test_acc=inf``.
NON_FINITE_COLUMN = "non_finite_metrics"


def non_finite_text(value: Any) -> str:
    """A non-finite metric as the files name it: ``nan``, ``inf`` or ``-inf`` (MLflow's
    stored infinity, 1.8e308, included)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "nan"
    return "nan" if math.isnan(number) else "-inf" if number < 0 else "inf"


def non_finite_runs(runs: pd.DataFrame) -> str:
    """One sentence naming the runs of ``runs`` (finished, as ``finished_once`` keeps them)
    that logged a non-finite metric, with the metric and its value, from the column
    ``NON_FINITE_COLUMN`` ``runs_frame`` writes (a NaN cell alone may be a metric never
    logged; without the column only infinities are found); "" where none did. Those values
    count as missing everywhere (``selection.finite_metrics``)."""
    found = []
    for _, run in runs.iterrows():
        listed = run.get(NON_FINITE_COLUMN, "")
        if NON_FINITE_COLUMN not in run:
            listed = ", ".join(f"{c.removeprefix('metrics.')}={non_finite_text(run[c])}" for c in runs.columns
                               if c.startswith("metrics.") and not pd.isna(run[c]) and not is_finite(run[c]))
        if isinstance(listed, str) and listed:
            found.append(f"{run['run_id']} ({run.get('params.method', '?')} on {run.get('params.dataset', '?')}, "
                         f"seed {run.get('params.seed', '?')}: {listed})")
    if not found:
        return ""
    more = f"; and {len(found) - NON_FINITE_SHOWN} more (see results.csv)" if len(found) > NON_FINITE_SHOWN else ""
    return (f"Runs with non-finite metrics, counted as missing (in no mean, n, rank or selection score): "
            f"{'; '.join(found[:NON_FINITE_SHOWN])}{more}.")


def _verdict_lines(frame: pd.DataFrame) -> list[str]:
    lines = []
    for v in verdicts(frame):
        where = f" ({_md(v['group'])})" if v["group"] else ""
        lines.append(f"**Verdict{where}** under rule {_code(v['rule'])}, {_md(v['selected_by'])}:")
        lines.append("")
        if v["axes"]:
            x, y = v["axes"]
            lines.append(f"- Pareto front of {x} vs. {y} ({better(y)}): {_md(', '.join(v['front'])) or '–'}")
        best = "; ".join(f"{m}{' (lower is better)' if m in LOWER_IS_BETTER else ''}: {_md(', '.join(ms)) or '–'}"
                         for m, ms in v["best"])
        if best:
            lines.append(f"- Rank 1 on {best}")
        lines += [f"- {_md(sentence(text))}." for text in v["not_separating"]]
        lines.append("")
    return lines


def markdown(summary: pd.DataFrame, info: dict[str, str], metrics: tuple[str, ...]) -> str:
    summary = public_frame(summary, ("setting", "hparams"))  # again: callers may pass raw labels
    rules = info.get("rules", info.get("selection", "")).splitlines()
    lines = [f"# {_md(info['title'])}", "",
             f"- date: {info['date']}",
             "- selection rules (one table per dataset and rule; hyper-parameters chosen per method, model "
             "and setting):", *(f"  - {_md(r)}" for r in rules),
             f"- seeds: {info['seeds']} (mean ± standard error over seeds; n = seeds of the selected setting; "
             "(n=k) after a value: the k of them with a finite value of that metric)",
             f"- tracking store: {_code(info.get('tracking_store') or store_label(info.get('tracking_uri', '')))}",
             f"- {RANKS_TEXT}", "",
             "Produced by:", "", *_fence(public_text(info["command"])), ""]
    if summary.empty:
        return "\n".join([*lines, "No rule selected any result.", ""])
    for dataset, frame in summary.groupby("dataset", sort=False):
        lines += [f"## {_md(dataset)}", "", *_verdict_lines(frame)]
        shown = [m for m in metrics if has_metric(frame, m)]
        for rule, rows in frame.groupby("rule", sort=False):
            first = rows.iloc[0]
            oracle = bool(first.get("oracle", False))
            note = str(first.get("selection_note", "") or "")
            lines += [f"### {'ORACLE — ' if oracle else ''}rule {_code(str(rule))}, selected on "
                      f"{_md(first['selection_metric'])}", "", f"{_md(first['selected_by'])}."
                      + (f" {_md(sentence(note))}." if note else "")
                      + (" Hyper-parameters chosen on test data: an upper bound, not a result." if oracle else ""), ""]
            lines += ["| " + " | ".join([*SUMMARY_COLUMNS, "score", *shown, "Pareto"]) + " |",
                      "|" + "---|" * (len(SUMMARY_COLUMNS) + len(shown) + 2)]
            missing = not_installed(rows)
            for _, row in rows.iterrows():
                cells = [_md(row[c]) for c in SUMMARY_COLUMNS] + [_cell(row["selection_score"], math.nan)]
                if str(row["method"]) in missing:
                    cells[0] += " (not installed)"
                cells += [_cell(row[m], row.get(f"{m}_se", math.nan), row.get(f"rank_{m}", math.nan),
                                metric_n_note(row, m)) for m in shown]
                cells.append("yes" if bool(row.get("pareto", False)) else "")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            if missing:
                lines += [f"Not installed: {_md(', '.join(missing))}. {NOT_INSTALLED_TEXT}", ""]
    if info.get("non_finite"):
        lines += [_md(public_text(info["non_finite"])), ""]
    notes = info.get("notes", "").strip()
    if notes:
        lines += [f"## {NOTES_HEADING}", "", notes, ""]
    return "\n".join(lines)


#: Heading of the maintainers' reading of the tables (``--notes``), on the page and in the README.
NOTES_HEADING = "What the ranking shows, and what it does not"


def read_notes(path: Path | None) -> str:
    """The text of ``--notes`` (paragraphs separated by blank lines), or "" without one."""
    if path is None:
        return ""
    try:  # a pipe or device is refused, not waited on or read forever; a huge file not copied
        return read_regular_bytes(path, "notes file", NOTES_LIMIT).decode("utf-8").strip()
    except FileRefused as exc:
        raise UserError(f"--notes: cannot read '{path}': {exc.problem.removeprefix('is ')}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"--notes: cannot read '{path}' ({type(exc).__name__})") from None
