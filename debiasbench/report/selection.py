"""Model selection over a store's runs, as DomainBed and SubpopBench do it, under several rules.

Runs are grouped by method x dataset x model x setting (the dataset parameters, e.g.
``bias_ratio``, and the dataset's ``dataset_version``: different problems, never pooled). Within a group every distinct
combination of the other run keys (hparams, learning rate, ...) is a candidate whose
seeds are replicates. A *rule* scores every run; the candidate with the highest mean score
over its seeds is selected, and its test metrics are reported as mean, standard error and n
over those seeds. The leaderboard shows the rules side by side (``RULES``):

- ``val_acc``: validation accuracy. Needs no bias knowledge (DomainBed's training-domain
  validation set). Where validation is as biased as training it rewards the shortcut.
- ``bias_annotated``: uses the validation split's bias labels or controlled views, as
  SubpopBench's worst-group selection does; which score depends on what the dataset's runs
  logged (``bias_annotated_score``), and every table names it.
- ``oracle``: the same choice made on test metrics: hyper-parameters chosen on test data,
  an upper bound, labelled ORACLE wherever it is shown.

``--select <metric>`` adds one more rule, that metric alone (``metric_rule``); a test
metric there is an oracle, allowed only when asked for.

Works on the table ``runs_frame`` reads (MLflow's ``params.`` / ``metrics.`` / ``tags.``
columns, values as the store keeps them), so a leaderboard can be made from a store
whose plugins are not installed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from debiasbench.contract.config import RECORDED_VERSION, RUN_KEYS, RunConfig
from debiasbench.core.errors import UserError
from debiasbench.core.stats import is_finite, mean_se

IDENTITY = ("method", "dataset", "model")
SETTING_PREFIX = "params.dataset_params."
#: The version of the data a run was made on: part of the setting, "1" for runs stored
#: before versions were recorded (a version other than 1 is always recorded).
DATASET_VERSION = f"params.{RECORDED_VERSION}"
#: Run keys that are neither identity, setting nor something a method is tuned by.
NOT_CANDIDATE = {"seed", *IDENTITY, *RunConfig.NON_SEMANTIC}
#: The param that sets colored_digits-like validation splits apart from the training bias ratio.
VAL_BIAS_RATIO = f"{SETTING_PREFIX}val_bias_ratio"
#: Fewest samples in every group for worst-group accuracy to rank candidates (below it one
#: or two misclassified samples decide the score).
MIN_GROUP = 10
_SCORE = "__score"


@dataclass(frozen=True)
class Score:
    """How one rule scores the runs of one dataset: a metric, or the mean of several
    (each run's mean; NaN where the run lacks one of them), and why this score."""

    metrics: tuple[str, ...]
    note: str = ""

    @property
    def name(self) -> str:
        return self.metrics[0] if len(self.metrics) == 1 else f"mean({', '.join(self.metrics)})"

    def of(self, runs: pd.DataFrame) -> pd.Series:
        columns = [f"metrics.{m}" for m in self.metrics]
        if any(c not in runs for c in columns):
            return pd.Series(math.nan, index=runs.index, dtype=float)
        return runs[columns].astype(float).mean(axis=1, skipna=False)


@dataclass(frozen=True)
class Rule:
    """A named selection rule. ``score`` sees the runs of one dataset and says how to score
    them, or None where the dataset's runs lack what the rule needs."""

    name: str
    label: str
    description: str
    oracle: bool
    score: Callable[[pd.DataFrame], Score | None]

    def selected_by(self, score: Score) -> str:
        """How tables name the rule with its metric; an oracle says so first."""
        if self.oracle:
            return f"ORACLE: {score.name} (hyper-parameters chosen on test data)"
        if self.label == score.name:
            return f"{score.name} (validation; DomainBed-style)"
        return f"{self.label}: {score.name}"


def _logged(runs: pd.DataFrame, metric: str, every: bool = False) -> bool:
    column = f"metrics.{metric}"
    if column not in runs:
        return False
    present = runs[column].notna()
    return bool(present.all() if every else present.any())


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("None", "nan", "")


def worst_group_problem(runs: pd.DataFrame, metric: str) -> str | None:
    """Why ``metric`` (a ``*_worst_group_acc``) cannot rank this dataset's candidates, or None.

    It must be logged by every run; on a validation split it must have minority groups (a
    colored_digits-like dataset's validation split follows the training bias ratio unless
    ``val_bias_ratio`` is set, so its minority cells hold a sample or none); and it must vary
    between runs (the same value, typically 0 from a near-empty cell, for every run tells
    nothing)."""
    if not _logged(runs, metric, every=True):
        return "is not logged by every run"
    if metric.startswith("val_") and VAL_BIAS_RATIO in runs and runs[VAL_BIAS_RATIO].map(_unset).any():
        return ("is degenerate: dataset_params.val_bias_ratio is unset, so validation follows the training "
                "bias ratio and its minority groups are (nearly) empty")
    values = runs[f"metrics.{metric}"].astype(float)
    if len(values) > 1 and values.nunique() == 1:
        return f"is degenerate: {values.iloc[0]:.3g} for every run, so it cannot tell candidates apart"
    return None


def bias_annotated_score(split: str) -> Callable[[pd.DataFrame], Score | None]:
    """The bias-annotated score on ``split`` (``val``; ``test`` for the oracle), per dataset:

    1. artifact datasets (their runs log ``artifact_relevance``: an inserted artifact with
       controlled clean / biased views): the mean of ``<split>_clean_acc`` and
       ``<split>_biased_acc``. A model that uses the artifact loses on the clean view for the
       attacked class and on the biased view for the other classes, so the mean rewards
       ignoring it while still rewarding accuracy; their worst-group accuracy is often
       degenerate (the artifact group of the other classes does not exist);
    2. datasets with natural bias groups, by the split's group sizes (``evaluate`` logs
       ``<split>_smallest_group`` and ``<split>_empty_groups``): ``<split>_worst_group_acc``
       where every run's smallest group holds at least ``MIN_GROUP`` samples (Waterbirds,
       CelebA, bFFHQ: 4 groups); else ``<split>_unbiased_acc`` (the mean over class x bias
       cells: balanced accuracy) where no cell is empty (a colour dataset with 100 cells and
       a validation split set apart, ``val_conflict_pct`` / ``val_bias_ratio``: a worst cell
       of a few digits is noise, their mean is not); runs from before those facts were
       logged fall back to ``worst_group_problem``;
    3. then the mean of the clean and biased views, where logged (colored datasets log them);
    4. else the rule does not apply to the dataset.
    """
    views = (f"{split}_clean_acc", f"{split}_biased_acc")
    worst = f"{split}_worst_group_acc"

    def score(runs: pd.DataFrame) -> Score | None:
        has_views = all(_logged(runs, m) for m in views)
        if has_views and _logged(runs, "artifact_relevance"):
            return Score(views, "artifact dataset (artifact_relevance logged): mean of the clean and biased views")
        smallest, empty = f"{split}_smallest_group", f"{split}_empty_groups"
        if _logged(runs, smallest, every=True) and _logged(runs, empty, every=True) and _logged(runs, worst):
            size = int(runs[f"metrics.{smallest}"].astype(float).min())
            if size >= MIN_GROUP:
                return Score((worst,), f"natural bias groups: worst-group accuracy of the {split} split "
                                       f"(smallest group: {size} samples)")
            if runs[f"metrics.{empty}"].astype(float).max() < 1 and _logged(runs, f"{split}_unbiased_acc"):
                return Score((f"{split}_unbiased_acc",),
                             f"natural bias groups, every class x bias cell of the {split} split populated but "
                             f"the smallest holds {size} sample(s), too few for a worst group: unbiased "
                             "(group-mean) accuracy")
            if has_views:
                return Score(views, f"the {split} split lacks minority groups (empty class x bias cells); "
                                    "fallback: mean of the clean and biased views")
            return None
        problem = worst_group_problem(runs, worst)
        if problem is None:
            return Score((worst,), f"natural bias groups: worst-group accuracy of the {split} split")
        if has_views:
            return Score(views, f"{worst} {problem}; fallback: mean of the clean and biased views")
        return None

    return score


def _metric(metric: str) -> Callable[[pd.DataFrame], Score | None]:
    return lambda runs: Score((metric,)) if _logged(runs, metric) else None


RULES: dict[str, Rule] = {
    "val_acc": Rule("val_acc", "val_acc", "validation accuracy; no bias knowledge (DomainBed's "
                    "training-domain validation)", False, _metric("val_acc")),
    "bias_annotated": Rule("bias_annotated", "bias-annotated",
                           "uses validation bias labels (SubpopBench-style): on natural bias groups, worst-group "
                           "accuracy on validation where every group holds 10+ samples, else the group mean where "
                           "every group is populated; on artifact datasets, and where validation has no minority "
                           "groups, the mean of the clean and biased validation views", False,
                           bias_annotated_score("val")),
    "oracle": Rule("oracle", "ORACLE", "the bias-annotated score measured on test data: an upper bound, "
                   "not a result", True, bias_annotated_score("test")),
}


def selection_label(metric: str, oracle: bool) -> str:
    """How the page names a one-metric rule; an oracle says so first."""
    return metric_rule(metric, oracle).selected_by(Score((metric,)))


def metric_rule(metric: str, oracle: bool = False) -> Rule:
    """``--select <metric>``: the metric alone. A test metric is an oracle (needs ``oracle``)."""
    if metric == "val_acc" and not oracle:
        return RULES["val_acc"]
    return Rule(metric, metric, f"--select {metric}" + (" --oracle" if oracle else ""), oracle,
                _metric(metric))


def check_selection_metric(metric: str, oracle: bool, available: set[str]) -> None:
    if metric not in available:
        known = ", ".join(sorted(m for m in available if m.startswith(("val_", "test_")))) or "none"
        raise UserError(f"selection metric {metric!r} was not logged by any finished run; logged: {known}")
    if not metric.startswith("val_") and not oracle:
        raise UserError(f"selecting by {metric!r} picks hyper-parameters on test data: pass --oracle "
                        "to do it anyway (the results are then labelled ORACLE)")


def _param_columns(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    params = [c for c in runs.columns if c.startswith("params.")]
    setting = sorted(c for c in params if c.startswith(SETTING_PREFIX) or c == DATASET_VERSION)
    candidate = sorted(c for c in params if _is_run_input(c.removeprefix("params."))
                       and c.removeprefix("params.") not in NOT_CANDIDATE)
    return setting, candidate


def _is_run_input(key: str) -> bool:
    """A run key or hparam, not a param the run logs about itself (``explanation``,
    ``eval_cav_samples``): those can differ between seeds of one candidate (a CAV that
    falls back to every sample on one seed) and must not split it."""
    return key.startswith("hparams.") or key in RUN_KEYS


#: What a hyper-parameter left null reads as: the method sets it itself (rrr's ``lambda``:
#: its objective's default; pgd's ``bias_epochs``: the run's epochs).
AUTO = "auto"


def _label(row: pd.Series, columns: list[str], strip: str) -> str:
    def value(column: str) -> Any:
        unset = column.startswith("params.hparams.") and (_unset(row[column]) or str(row[column]) == "null")
        return AUTO if unset else row[column]

    return " ".join(f"{c.removeprefix(strip).removeprefix('params.').removeprefix('hparams.')}={value(c)}"
                    for c in columns)


#: The tag naming the vanilla run a correction started from.
BASE_RUN_TAG = "tags.debiasbench.base_run_id"
TRAIN_SECONDS = "metrics.train_seconds"


def with_base_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` where a correction's ``train_seconds`` (DFR's 0, a ClArC fine-tuning's few
    seconds) counts the training of the base model it started from (``BASE_RUN_TAG``); NaN,
    shown as a dash, where that base run is not among ``runs``."""
    if BASE_RUN_TAG not in runs or TRAIN_SECONDS not in runs:
        return runs
    own = pd.Series(runs[TRAIN_SECONDS].astype(float).to_numpy(), index=runs["run_id"].astype(str))
    own = own[~own.index.duplicated(keep="last")]
    based = runs[BASE_RUN_TAG].map(lambda v: not _unset(v))
    out = runs.copy()
    base_seconds = out.loc[based, BASE_RUN_TAG].astype(str).map(own)
    out.loc[based, TRAIN_SECONDS] = out.loc[based, TRAIN_SECONDS].astype(float) + base_seconds.astype(float)
    return out


def without_extra_base_candidates(of_dataset: pd.DataFrame, keys: list[str], candidate_cols: list[str],
                                  based: set[str]) -> pd.DataFrame:
    """``of_dataset`` without the candidates made only of base runs of corrections (runs
    some run names as its ``BASE_RUN_TAG``) where these give their method more candidates
    than any other method of its model and setting has: a correction's base model is
    trained with the default training keys (vanilla at 10 epochs where a sweep set 5), so
    it is a candidate no sweep asked for. A base that is also a job of the sweep (the same
    run key) leaves the counts equal and stays."""
    if not based or not candidate_cols:
        return of_dataset
    dropped: list[Any] = []
    for _, table in of_dataset.groupby(keys[1:], sort=False, dropna=False):
        counts = {m: len(rows[candidate_cols].drop_duplicates()) for m, rows in table.groupby(keys[0], sort=False)}
        for method, rows in table.groupby(keys[0], sort=False):
            others = [c for m, c in counts.items() if m != method]
            excess = counts[method] - max(others) if others else 0
            if excess <= 0:
                continue
            parts = list(rows.groupby(candidate_cols, sort=False, dropna=False))
            only_bases = [members for _, members in parts if members["run_id"].astype(str).isin(based).all()]
            for members in only_bases[::-1][:excess]:
                dropped.extend(members.index)
    return of_dataset.drop(index=dropped)


def _varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].astype(str).nunique(dropna=False) > 1]


def select(runs: pd.DataFrame, metric: str = "val_acc", oracle: bool = False,
           metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """Selection by one metric (``--select``); see ``select_by_rule``."""
    check_selection_metric(metric, oracle, {c.removeprefix("metrics.") for c in runs.columns
                                            if c.startswith("metrics.") and runs[c].notna().any()})
    return select_by_rule(runs, metric_rule(metric, oracle), metrics)


def select_rules(runs: pd.DataFrame, rules: list[Rule], metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """``select_by_rule`` for every rule, one block of rows after the other."""
    frames = [select_by_rule(runs, rule, metrics) for rule in rules]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def select_by_rule(runs: pd.DataFrame, rule: Rule, metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per group: the candidate ``rule`` selects, with the mean, ``_se`` and ``_n``
    over its seeds of each of ``metrics`` (``n``: its seeds; ``<metric>_n``: those with a
    finite value of the metric, non-finite ones counted as missing: ``finite_metrics``), the
    labels of its setting and hparams, its run ids, and the rule (``rule``, ``selected_by``,
    ``selection_metric``, ``selection_note``).

    ``runs`` holds FINISHED runs only (failed runs never compete). A candidate without a
    finite score cannot be selected; a group none of whose candidates has one is left out,
    and so is a dataset the rule does not apply to.
    """
    setting_cols, candidate_cols = _param_columns(runs)
    based = set(runs[BASE_RUN_TAG].dropna().astype(str)) if BASE_RUN_TAG in runs else set()
    runs = with_base_costs(finite_metrics(runs)).copy()
    if DATASET_VERSION in runs:
        runs[DATASET_VERSION] = runs[DATASET_VERSION].fillna("1")
    for column in setting_cols + candidate_cols:
        runs[column] = runs[column].astype(str)
    rows = []
    for dataset, of_dataset in runs.groupby("params.dataset", sort=False):
        score = rule.score(of_dataset)
        if score is None:
            continue
        of_dataset = of_dataset.assign(**{_SCORE: score.of(of_dataset)})
        setting_varying = _varying(of_dataset, setting_cols)
        keys = ["params.method", "params.model", *setting_varying]
        of_dataset = without_extra_base_candidates(of_dataset, keys, candidate_cols, based)
        for _, group in of_dataset.groupby(keys, sort=False, dropna=False):
            best = _best_candidate(group, candidate_cols, _SCORE)
            if best is None:
                continue
            chosen, value = best
            first = chosen.iloc[0]
            row: dict[str, Any] = {
                "rule": rule.name, "method": first["params.method"], "dataset": dataset,
                "model": first["params.model"], "setting": _label(first, setting_varying, SETTING_PREFIX),
                "hparams": _label(first, _varying(group, candidate_cols), "params."),
                "n": len(chosen), "selected_by": rule.selected_by(score), "selection_metric": score.name,
                "selection_note": score.note, "oracle": rule.oracle, "selection_score": value,
                "candidates": group[candidate_cols].drop_duplicates().shape[0] if candidate_cols else 1,
                "run_ids": " ".join(chosen["run_id"]),
            }
            for name in metrics:
                values = chosen.get(f"metrics.{name}", pd.Series(dtype=float)).dropna().astype(float)
                row[name], row[f"{name}_se"], row[f"{name}_n"] = mean_se(values)
            rows.append(row)
    return pd.DataFrame(rows)


def finite_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with every non-finite metric (NaN, an infinity, MLflow's stored infinity
    1.8e308: ``core.stats.is_finite``) as NaN, i.e. missing: it takes part in no score,
    mean, n or rank (``leaderboard.non_finite_runs`` names the runs that logged one)."""
    columns = [c for c in runs.columns if c.startswith("metrics.")]
    if not columns:
        return runs
    out = runs.copy()
    for column in columns:
        values = pd.to_numeric(out[column], errors="coerce").astype(float)
        out[column] = values.where(values.map(is_finite))
    return out


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
