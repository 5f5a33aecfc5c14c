"""Model selection over a store's runs, as DomainBed and SubpopBench do it.

Runs are grouped by method x dataset x model x setting (the dataset parameters, e.g.
``bias_ratio``: different problems, never pooled). Within a group every distinct
combination of the other run keys (hparams, learning rate, ...) is a candidate whose
seeds are replicates. The candidate with the highest mean *validation* metric over its
seeds is selected, and its test metrics are reported as mean, standard error and n over
those seeds. Selecting on a test metric is an oracle: allowed only when asked for, and
then labelled so everywhere it is shown.

Works on the table ``runs_frame`` reads (MLflow's ``params.`` / ``metrics.`` / ``tags.``
columns, values as the store keeps them), so a leaderboard can be made from a store
whose plugins are not installed here.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from debiasbench.config import RUN_KEYS, RunConfig
from debiasbench.errors import UserError

IDENTITY = ("method", "dataset", "model")
SETTING_PREFIX = "params.dataset_params."
#: Run keys that are neither identity, setting nor something a method is tuned by.
NOT_CANDIDATE = {"seed", *IDENTITY, *RunConfig.NON_SEMANTIC}


def selection_label(metric: str, oracle: bool) -> str:
    """How the page names the rule; an oracle says so first."""
    if oracle:
        return f"ORACLE: {metric} (hyper-parameters chosen on test data)"
    return f"{metric} (validation; DomainBed-style)"


def check_selection_metric(metric: str, oracle: bool, available: set[str]) -> None:
    if metric not in available:
        known = ", ".join(sorted(m for m in available if m.startswith(("val_", "test_")))) or "none"
        raise UserError(f"selection metric {metric!r} was not logged by any finished run; logged: {known}")
    if not metric.startswith("val_") and not oracle:
        raise UserError(f"selecting by {metric!r} picks hyper-parameters on test data: pass --oracle "
                        "to do it anyway (the results are then labelled ORACLE)")


def _param_columns(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    params = [c for c in runs.columns if c.startswith("params.")]
    setting = sorted(c for c in params if c.startswith(SETTING_PREFIX))
    candidate = sorted(c for c in params if _is_run_input(c.removeprefix("params."))
                       and c.removeprefix("params.") not in NOT_CANDIDATE)
    return setting, candidate


def _is_run_input(key: str) -> bool:
    """A run key or hparam, not a param the run logs about itself (``explanation``,
    ``eval_cav_samples``): those can differ between seeds of one candidate (a CAV that
    falls back to every sample on one seed) and must not split it."""
    return key.startswith("hparams.") or key in RUN_KEYS


def _label(row: pd.Series, columns: list[str], strip: str) -> str:
    return " ".join(f"{c.removeprefix(strip).removeprefix('hparams.')}={row[c]}" for c in columns)


def _varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].astype(str).nunique(dropna=False) > 1]


def select(runs: pd.DataFrame, metric: str = "val_acc", oracle: bool = False,
           metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per group: the selected candidate's mean, ``_se`` and ``n`` over seeds for
    each of ``metrics``, with the labels of its setting and hparams and its run ids.

    ``runs`` holds FINISHED runs only (failed runs never compete). A candidate without a
    finite value of the selection metric cannot be selected; a group none of whose
    candidates has one is left out.
    """
    check_selection_metric(metric, oracle, {c.removeprefix("metrics.") for c in runs.columns
                                            if c.startswith("metrics.")})
    setting_cols, candidate_cols = _param_columns(runs)
    runs = runs.copy()
    for column in setting_cols + candidate_cols:
        runs[column] = runs[column].astype(str)
    rows = []
    for dataset, of_dataset in runs.groupby("params.dataset", sort=False):
        setting_varying = _varying(of_dataset, setting_cols)
        keys = ["params.method", "params.model", *setting_varying]
        for _, group in of_dataset.groupby(keys, sort=False, dropna=False):
            best = _best_candidate(group, candidate_cols, f"metrics.{metric}")
            if best is None:
                continue
            chosen, score = best
            first = chosen.iloc[0]
            row: dict[str, Any] = {
                "method": first["params.method"], "dataset": dataset, "model": first["params.model"],
                "setting": _label(first, setting_varying, SETTING_PREFIX),
                "hparams": _label(first, _varying(group, candidate_cols), "params."),
                "n": len(chosen), "selected_by": selection_label(metric, oracle), "selection_score": score,
                "candidates": group[candidate_cols].drop_duplicates().shape[0] if candidate_cols else 1,
                "run_ids": " ".join(chosen["run_id"]),
            }
            for name in metrics:
                values = chosen.get(f"metrics.{name}", pd.Series(dtype=float)).dropna().astype(float)
                row[name] = values.mean() if len(values) else math.nan
                row[f"{name}_se"] = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _best_candidate(group: pd.DataFrame, candidate_cols: list[str],
                    score_col: str) -> tuple[pd.DataFrame, float] | None:
    """The runs of the candidate with the highest mean score over its seeds; ties go to
    more seeds, then to the first candidate in the store's order."""
    if score_col not in group:
        return None
    parts = group.groupby(candidate_cols, sort=False, dropna=False) if candidate_cols else [((), group)]
    best: tuple[tuple[float, int], pd.DataFrame, float] | None = None
    for _, members in parts:
        scores = members[score_col].dropna().astype(float)
        if not len(scores):
            continue
        rank = (scores.mean(), len(members))
        if best is None or rank > best[0]:
            best = (rank, members, float(scores.mean()))
    return None if best is None else (best[1], best[2])
