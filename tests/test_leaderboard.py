"""Model selection and ``debiasbench leaderboard`` on stores built by hand, where the
right answer is known: each rule picks the candidate its score favours (validation
accuracy, the bias-annotated score, the oracle's test score), ranks tie where standard
errors overlap, the Pareto front holds the undominated methods, an oracle is labelled so,
and nothing written names a directory of this machine."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.core.errors import UserError
from debiasbench.report.leaderboard import (add_verdict, finished_once, pareto_front, public_text, runs_frame,
                                     store_label, tie_ranks)
from debiasbench.report.tables import leaderboard_table
from debiasbench.report.selection import RULES, metric_rule, select, select_by_rule, select_rules
from debiasbench.track.store import FAILURE_TAG, RUN_KEY_TAG

SCRIPT = "<script>alert(1)</script>"
MACHINE_DIRS = ("/tmp", "/home", "/root", "/work")


def without_images(text: str) -> str:
    """``text`` without its PNG data URIs (base64 may spell "/tmp" by chance)."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", text)


def log_run(client, experiment_id: str, method: str, seed: int, lam: float, val: float, test: float,
            bias_ratio: float = 0.99, status: str = "FINISHED", key: str | None = None) -> str:
    params = {"method": method, "dataset": "colored_digits", "model": "small_cnn", "seed": str(seed),
              "lr": "0.001", "device": "cpu", "hparams.lambda": str(lam),
              "dataset_params.bias_ratio": str(bias_ratio)}
    run_key = key or f"{method}-{lam}-{seed}-{bias_ratio}"
    return log(client, experiment_id, params, {"val_acc": val, "test_acc": test, "test_conflicting_acc": test / 2},
               run_key, status)


def log(client, experiment_id: str, params: dict, metrics: dict, key: str, status: str = "FINISHED",
        tags: dict | None = None) -> str:
    run = client.create_run(experiment_id, tags={RUN_KEY_TAG: key, **(tags or {})})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, value)
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    if status == "FAILED":
        client.set_tag(run.info.run_id, FAILURE_TAG, "non-finite loss in epoch 1")
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def store(tracking_uri):
    """lambda=1: best on validation, worse on test; lambda=2: the reverse. Three seeds
    each, two bias ratios (never pooled), one failed run and one method named <script>."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for ratio in (0.99, 0.995):
        for seed in range(3):
            log_run(client, experiment, "rrr", seed, 1.0, val=0.90 + 0.01 * seed, test=0.60 + 0.02 * seed,
                    bias_ratio=ratio)
            log_run(client, experiment, "rrr", seed, 2.0, val=0.80, test=0.95, bias_ratio=ratio)
    log_run(client, experiment, "rrr", 3, 1.0, val=0.0, test=0.0, status="FAILED")
    log_run(client, experiment, SCRIPT, 0, 1.0, val=0.5, test=0.5)
    return tracking_uri


def selected(summary: pd.DataFrame, method: str = "rrr", ratio: str = "0.99") -> pd.Series:
    rows = summary[(summary["method"] == method) & (summary["setting"] == f"bias_ratio={ratio}")]
    assert len(rows) == 1
    return rows.iloc[0]


def test_selection_picks_the_best_validation_metric_not_the_best_test_metric(store):
    runs, _ = runs_frame(store)
    summary = select(finished_once(runs), "val_acc", metrics=("test_acc", "val_acc"))
    for ratio in ("0.99", "0.995"):
        row = selected(summary, ratio=ratio)
        assert row["hparams"] == "lambda=1.0" and row["rule"] == "val_acc"
        assert row["n"] == 3  # the failed run never competes or counts
        tests = [0.60, 0.62, 0.64]
        assert row["test_acc"] == pytest.approx(statistics.mean(tests))
        assert row["test_acc_se"] == pytest.approx(statistics.stdev(tests) / math.sqrt(3))
        assert row["selection_score"] == pytest.approx(0.91)
        assert row["candidates"] == 2
    assert selected(summary, SCRIPT).loc["n"] == 1 and math.isnan(selected(summary, SCRIPT)["test_acc_se"])


def test_oracle_selection_on_test_is_allowed_only_when_asked_and_labelled(store):
    runs, _ = runs_frame(store)
    finished = finished_once(runs)
    with pytest.raises(UserError, match="pass --oracle"):
        select(finished, "test_acc")
    summary = select(finished, "test_acc", oracle=True, metrics=("test_acc",))
    row = selected(summary)
    assert row["hparams"] == "lambda=2.0" and row["test_acc"] == pytest.approx(0.95)
    assert row["selected_by"].startswith("ORACLE") and row["oracle"]
    with pytest.raises(UserError, match="'val_worst_group_acc' was not logged"):
        select(finished, "val_worst_group_acc")


def test_a_repeated_job_counts_once(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    found = client.get_experiment_by_name("debiasbench")
    assert found is not None  # the store fixture created it
    experiment = found.experiment_id
    log_run(client, experiment, "rrr", 0, 1.0, val=0.90, test=0.70, key="rrr-1.0-0-0.99")  # same job again
    summary = select(finished_once(runs_frame(store)[0]), metrics=("test_acc",))
    row = selected(summary)
    assert row["n"] == 3 and row["test_acc"] == pytest.approx(statistics.mean([0.70, 0.62, 0.64]))


# --- the rules, on stores where val_acc and the bias-annotated score disagree ----------------

def _candidates(tracking_uri: str, dataset: str, per_lambda: dict[float, dict[str, float]],
                params: dict | None = None, methods: tuple[str, ...] = ("vanilla",), seeds: int = 2) -> pd.DataFrame:
    """Finished runs of each method x lambda x seed with the given metrics (seed s adds s/1000)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment(f"e-{dataset}-{len(per_lambda)}")
    for method in methods:
        for lam, metrics in per_lambda.items():
            for seed in range(seeds):
                log(client, experiment, {"method": method, "dataset": dataset, "model": "small_cnn", "seed": str(seed),
                                         "hparams.lambda": str(lam), **(params or {})},
                    {k: v + seed / 1000 for k, v in metrics.items()}, f"{dataset}-{method}-{lam}-{seed}")
    return finished_once(runs_frame(tracking_uri)[0])


def _pick(runs: pd.DataFrame, rule: str, dataset: str) -> pd.Series:
    summary = select_by_rule(runs, RULES[rule], ("test_acc", "test_clean_acc"))
    rows = summary[summary["dataset"] == dataset]
    assert len(rows) == 1, summary
    return rows.iloc[0]


ARTIFACT = {  # lambda=1 learns the artifact (high val_acc, fails the views); lambda=100 ignores it
    1.0: {"val_acc": 0.95, "val_clean_acc": 0.60, "val_biased_acc": 0.50, "val_worst_group_acc": 0.0,
          "test_clean_acc": 0.58, "test_biased_acc": 0.52, "artifact_relevance": 0.40},
    100.0: {"val_acc": 0.85, "val_clean_acc": 0.84, "val_biased_acc": 0.83, "val_worst_group_acc": 0.0,
            "test_clean_acc": 0.83, "test_biased_acc": 0.82, "artifact_relevance": 0.10},
}


def test_val_acc_and_the_bias_annotated_rule_pick_different_candidates_on_an_artifact_dataset(tracking_uri):
    runs = _candidates(tracking_uri, "synthetic_artifacts", ARTIFACT)
    by_val = _pick(runs, "val_acc", "synthetic_artifacts")
    assert by_val["hparams"] == "lambda=1.0" and by_val["selection_metric"] == "val_acc"
    annotated = _pick(runs, "bias_annotated", "synthetic_artifacts")
    assert annotated["hparams"] == "lambda=100.0"
    assert annotated["selection_metric"] == "mean(val_clean_acc, val_biased_acc)"
    assert annotated["selected_by"] == "bias-annotated: mean(val_clean_acc, val_biased_acc)"
    assert "artifact dataset" in annotated["selection_note"] and not annotated["oracle"]
    assert annotated["selection_score"] == pytest.approx((0.84 + 0.83) / 2 + 0.0005)


def test_the_bias_annotated_rule_uses_validation_worst_group_accuracy_on_natural_bias_groups(tracking_uri):
    runs = _candidates(tracking_uri, "waterbirds", {
        1.0: {"val_acc": 0.95, "val_worst_group_acc": 0.40, "val_clean_acc": 0.90, "val_biased_acc": 0.99},
        2.0: {"val_acc": 0.90, "val_worst_group_acc": 0.80, "val_clean_acc": 0.85, "val_biased_acc": 0.90},
        3.0: {"val_acc": 0.80, "val_worst_group_acc": 0.70, "val_clean_acc": 0.95, "val_biased_acc": 0.99}})
    assert _pick(runs, "val_acc", "waterbirds")["hparams"] == "lambda=1.0"
    annotated = _pick(runs, "bias_annotated", "waterbirds")
    assert annotated["hparams"] == "lambda=2.0" and annotated["selection_metric"] == "val_worst_group_acc"
    assert "natural bias groups" in annotated["selection_note"]


COLORED = {
    1.0: {"val_acc": 0.99, "val_worst_group_acc": 0.9, "val_clean_acc": 0.30, "val_biased_acc": 1.0},
    2.0: {"val_acc": 0.95, "val_worst_group_acc": 0.1, "val_clean_acc": 0.60, "val_biased_acc": 0.98},
}


def test_the_bias_annotated_rule_falls_back_to_the_views_where_validation_has_no_minority_groups(tracking_uri):
    """colored_digits-like: val follows the training bias ratio unless val_bias_ratio is set."""
    runs = _candidates(tracking_uri, "colored_digits", COLORED, {"dataset_params.val_bias_ratio": "None"})
    annotated = _pick(runs, "bias_annotated", "colored_digits")
    assert annotated["hparams"] == "lambda=2.0"
    assert annotated["selection_metric"] == "mean(val_clean_acc, val_biased_acc)"
    assert "val_bias_ratio is unset" in annotated["selection_note"] and "fallback" in annotated["selection_note"]


def test_the_bias_annotated_rule_uses_worst_group_accuracy_once_val_bias_ratio_sets_validation_apart(tracking_uri):
    runs = _candidates(tracking_uri, "colored_digits", COLORED, {"dataset_params.val_bias_ratio": "0.1"})
    annotated = _pick(runs, "bias_annotated", "colored_digits")
    assert annotated["hparams"] == "lambda=1.0" and annotated["selection_metric"] == "val_worst_group_acc"


GROUPS = {  # worst group, group mean and views disagree: each size regime picks its own
    1.0: {"val_acc": 0.99, "val_worst_group_acc": 0.9, "val_unbiased_acc": 0.5, "val_clean_acc": 0.3,
          "val_biased_acc": 1.0},
    2.0: {"val_acc": 0.95, "val_worst_group_acc": 0.1, "val_unbiased_acc": 0.8, "val_clean_acc": 0.4,
          "val_biased_acc": 0.9},
    3.0: {"val_acc": 0.90, "val_worst_group_acc": 0.2, "val_unbiased_acc": 0.6, "val_clean_acc": 0.9,
          "val_biased_acc": 0.9},
}


@pytest.mark.parametrize("smallest, empty, metric, picked", [
    (40.0, 0.0, "val_worst_group_acc", "lambda=1.0"),  # groups large enough: worst group
    (3.0, 0.0, "val_unbiased_acc", "lambda=2.0"),  # every cell populated, a few samples each
    (1.0, 12.0, "mean(val_clean_acc, val_biased_acc)", "lambda=3.0"),  # no minority groups
])
def test_the_bias_annotated_rule_follows_the_validation_splits_group_sizes(tracking_uri, smallest, empty,
                                                                          metric, picked):
    per_lambda = {lam: {**m, "val_smallest_group": smallest, "val_empty_groups": empty}
                  for lam, m in GROUPS.items()}
    runs = _candidates(tracking_uri, "colored_mnist", per_lambda)
    annotated = _pick(runs, "bias_annotated", "colored_mnist")
    assert (annotated["selection_metric"], annotated["hparams"]) == (metric, picked)


def test_a_worst_group_accuracy_equal_for_every_run_is_degenerate_and_falls_back(tracking_uri):
    flat = {lam: {**m, "val_worst_group_acc": 0.0} for lam, m in COLORED.items()}
    runs = _candidates(tracking_uri, "celeba", flat, seeds=1)
    annotated = _pick(runs, "bias_annotated", "celeba")
    assert annotated["hparams"] == "lambda=2.0" and "0 for every run" in annotated["selection_note"]


def test_a_rule_that_does_not_apply_to_a_dataset_leaves_it_out(tracking_uri):
    runs = _candidates(tracking_uri, "image_folder", {1.0: {"val_acc": 0.9, "test_acc": 0.8}})
    assert select_by_rule(runs, RULES["bias_annotated"]).empty
    assert select_by_rule(runs, RULES["oracle"]).empty
    assert len(select_by_rule(runs, RULES["val_acc"])) == 1


def test_the_oracle_rule_scores_on_test_data_and_is_flagged(tracking_uri):
    runs = _candidates(tracking_uri, "synthetic_artifacts", {
        **ARTIFACT, 7.0: {**ARTIFACT[100.0], "val_clean_acc": 0.5, "test_clean_acc": 0.95, "test_biased_acc": 0.95}})
    oracle = _pick(runs, "oracle", "synthetic_artifacts")
    assert oracle["hparams"] == "lambda=7.0" and oracle["oracle"]
    assert oracle["selection_metric"] == "mean(test_clean_acc, test_biased_acc)"
    assert oracle["selected_by"].startswith("ORACLE:") and "chosen on test data" in oracle["selected_by"]
    assert _pick(runs, "bias_annotated", "synthetic_artifacts")["hparams"] == "lambda=100.0"


def test_select_metric_is_a_rule_of_its_own_and_val_acc_is_the_built_in_one():
    assert metric_rule("val_acc") is RULES["val_acc"]
    custom = metric_rule("val_worst_group_acc")
    assert custom.name == "val_worst_group_acc" and not custom.oracle
    assert metric_rule("test_acc", oracle=True).oracle


# --- the verdict ------------------------------------------------------------------------------

def test_ranks_follow_the_mean_and_tie_where_welchs_t_test_cannot_tell_a_result_from_its_tiers_best():
    import numpy as np
    from scipy import stats

    from debiasbench.core.stats import TIE_ALPHA, welch_p_value

    # the p-value from mean, SE and n is Welch's test on the seeds themselves
    a, b = np.array([0.61, 0.70, 0.675, 0.64]), np.array([0.65, 0.68, 0.67])
    se = [float(x.std(ddof=1) / math.sqrt(len(x))) for x in (a, b)]
    assert welch_p_value(a.mean(), se[0], 4, b.mean(), se[1], 3) == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert TIE_ALPHA == 0.05
    # the cases: a wide SE never ranks a worse mean above a better one
    ranks = tie_ranks([0.662, 0.667, 0.30], [0.049, 0.016, 0.01], [3, 3, 3])
    assert ranks == [1, 1, 3]
    pgd_lff = tie_ranks([0.779, 0.793, 0.75], [0.080, 0.004, 0.002], [3, 3, 3])
    assert pgd_lff[1] <= pgd_lff[0] <= pgd_lff[2]
    # a: 0.90±0.005 leads; b (0.89) is not told apart from it; c (0.80) is: a new tier at
    # its position, which d (0.795) joins: 1, 1, 3, 3
    assert tie_ranks([0.90, 0.89, 0.80, 0.795], [0.005, 0.005, 0.005, 0.005], [3] * 4) == [1, 1, 3, 3]
    # monotone in the mean: the narrow 0.85 is separated from the leader, and the wide 0.80
    # below it joins the 0.85 tier instead of sharing rank 1 (the overlap rule's #1)
    assert tie_ranks([0.90, 0.85, 0.80], [0.001, 0.001, 0.2], [3] * 3) == [1, 2, 2]
    # order in the input does not matter; lower is better reverses it
    assert tie_ranks([0.80, 0.90, 0.795, 0.89], [0.005] * 4, [3] * 4) == [3, 1, 3, 1]
    assert tie_ranks([0.1, 0.3, 0.2], [0.0, 0.0, 0.0], [3] * 3, lower_is_better=True) == [1, 3, 2]
    # one seed: no test, a tie only on an equal mean; no mean: no rank
    ranks = tie_ranks([0.5, 0.5, 0.4, math.nan], [math.nan] * 4, [1] * 4)
    assert ranks[:3] == [1, 1, 3] and math.isnan(ranks[3])
    # random results: ranks never decrease as the mean gets worse
    rng = np.random.default_rng(0)
    for _ in range(200):
        means, ses = rng.uniform(0, 1, 8), rng.uniform(0, 0.2, 8)
        ranks = tie_ranks(list(means), list(ses), [3] * 8)
        by_mean = [r for _, r in sorted(zip(-means, ranks))]
        assert by_mean == sorted(by_mean) and by_mean[0] == 1


def test_pareto_front_holds_exactly_the_methods_no_other_beats_on_both_axes():
    clean = [0.90, 0.80, 0.70, 0.85, 0.90, math.nan]
    bias = [0.50, 0.70, 0.60, 0.50, 0.40, 0.99]
    # c (0.70, 0.60) is beaten by b; d (0.85, 0.50) by a; e (0.90, 0.40) by a (equal x, lower y)
    assert pareto_front(clean, bias) == [True, True, False, False, False, False]
    relevance = [0.30, 0.10, 0.20, 0.30, 0.35, 0.0]  # lower is better
    assert pareto_front(clean, relevance, y_lower_is_better=True) == [True, True, False, False, False, False]


def _summary_row(rule: str, method: str, clean: float, conflicting: float, se: float = 0.01, **extra) -> dict:
    return {"rule": rule, "dataset": "d", "model": "m", "setting": "", "method": method, "oracle": rule == "oracle",
            "test_clean_acc": clean, "test_clean_acc_se": se, "test_conflicting_acc": conflicting,
            "test_conflicting_acc_se": se, **extra}


def test_add_verdict_ranks_within_each_rule_and_marks_the_pareto_front():
    summary = add_verdict(pd.DataFrame([
        _summary_row("val_acc", "a", 0.90, 0.20), _summary_row("val_acc", "b", 0.80, 0.70),
        _summary_row("val_acc", "c", 0.70, 0.60),
        _summary_row("bias_annotated", "a", 0.85, 0.75), _summary_row("bias_annotated", "b", 0.80, 0.70),
        _summary_row("bias_annotated", "c", 0.845, 0.50)]))
    val = summary[summary["rule"] == "val_acc"].set_index("method")
    assert val["rank_test_clean_acc"].to_dict() == {"a": 1, "b": 2, "c": 3}
    assert val["rank_test_conflicting_acc"].to_dict() == {"b": 1, "c": 2, "a": 3}
    assert val["pareto"].to_dict() == {"a": True, "b": True, "c": False}
    annotated = summary[summary["rule"] == "bias_annotated"].set_index("method")
    assert annotated["rank_test_clean_acc"].to_dict() == {"a": 1, "c": 1, "b": 3}  # a, c overlap
    assert annotated["pareto"].to_dict() == {"a": True, "b": False, "c": False}
    # rows read best first on the bias axis within each rule
    assert list(summary["method"]) == ["b", "c", "a", "a", "b", "c"]


# --- the command and its files ---------------------------------------------------------------

def test_leaderboard_writes_results_summary_readme_and_page(store, tmp_path):
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", store, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "index.html", "results.csv", "source.json",
                                                        "summary.csv"]
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 14 and (results["status"] == "FAILED").sum() == 1
    assert "non-finite loss" in results.loc[results["status"] == "FAILED", f"tags.{FAILURE_TAG}"].iloc[0]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    # only val_acc applies: these runs logged no bias-annotated or oracle score
    assert len(summary) == 3 and set(summary["rule"]) == {"val_acc"} and set(summary["hparams"]) >= {"lambda=1.0"}
    readme = (out / "README.md").read_text()
    # test_acc is the clean metric here (no test_clean_acc): ranked, rrr first of its setting
    assert "| rrr | small_cnn | bias_ratio=0.99 | lambda=1.0 | 3 | 0.910 | 0.620 ± 0.012 (#1) |" in readme
    assert "rule `val_acc`, selected on val_acc" in readme and "debiasbench leaderboard" in readme
    page = (out / "index.html").read_text()
    for text in (readme, page):
        assert SCRIPT not in text and "&lt;script&gt;" in text


def _rules_store(tracking_uri: str, tmp_path: Path) -> None:
    """An artifact dataset where the rules disagree, runs that log machine paths (dataset
    root, cache and checkpoint folders, the sweep file) and a failure naming a file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    paths = {"dataset_params.root": "/work/data/isic", "dataset_params.cache_dir": "/home/alice/.cache/db",
             "checkpoint_dir": "/root/ckpt"}
    tags = {"debiasbench.command": f"debiasbench sweep {tmp_path / 'benchmarks' / 'rules.yaml'}",
            "debiasbench.sweep_file": "/home/alice/benchmarks/rules.yaml"}
    for method, shift in (("vanilla", 0.0), ("rrclarc", 0.05), (SCRIPT, -0.1)):
        for lam, metrics in ARTIFACT.items():
            for seed in range(3):
                values = {k: v + shift + seed / 100 for k, v in metrics.items()}
                values.update(test_acc=values["test_clean_acc"], test_conflicting_acc=values["val_clean_acc"])
                log(client, experiment, {"method": method, "dataset": "synthetic_artifacts", "model": "small_cnn",
                                         "seed": str(seed), "hparams.lambda": str(lam), **paths}, values,
                    f"{method}-{lam}-{seed}", tags=tags)
    failed = log(client, experiment, {"method": "rrr", "dataset": "synthetic_artifacts", "model": "small_cnn",
                                      "seed": "0", **paths}, {}, "rrr-0", status="FAILED", tags=tags)
    client.set_tag(failed, FAILURE_TAG, "FileNotFoundError: '/work/data/isic/labels.csv' (see /tmp/log.txt)")


def test_the_leaderboard_shows_every_rule_with_its_metric_ranks_and_oracle_flag(tracking_uri, tmp_path):
    _rules_store(tracking_uri, tmp_path)
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(dict.fromkeys(summary["rule"])) == ["val_acc", "bias_annotated", "oracle"]
    picks = summary[summary["method"] == "vanilla"].set_index("rule")["hparams"].to_dict()
    assert picks == {"val_acc": "lambda=1.0", "bias_annotated": "lambda=100.0", "oracle": "lambda=100.0"}
    assert summary.set_index("rule")["selection_metric"].to_dict() == {
        "val_acc": "val_acc", "bias_annotated": "mean(val_clean_acc, val_biased_acc)",
        "oracle": "mean(test_clean_acc, test_biased_acc)"}
    assert (summary["oracle"].astype(str) == "True").tolist() == (summary["rule"] == "oracle").tolist()
    assert {"rank_test_clean_acc", "rank_test_conflicting_acc", "rank_artifact_relevance", "pareto"} <= set(summary)
    readme = (out / "README.md").read_text()
    for heading in ("### rule `val_acc`, selected on val_acc",
                    "### rule `bias_annotated`, selected on mean(val_clean_acc, val_biased_acc)",
                    "### ORACLE — rule `oracle`, selected on mean(test_clean_acc, test_biased_acc)"):
        assert heading in readme
    assert "(#1)" in readme and "**Verdict** under rule `bias_annotated`" in readme
    assert "Pareto front of test_clean_acc vs. artifact_relevance (lower is better)" in readme
    # the printed table: one column per rule, ORACLE flagged, each cell a mean and its rank
    assert "bias_annotated" in result.output and "ORACLE" in result.output and "#1" in result.output


@pytest.mark.slow  # a store and a leaderboard of its own: seconds on 2 cores
def test_no_machine_path_reaches_any_written_file(tracking_uri, tmp_path):
    _rules_store(tracking_uri, tmp_path)
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    for path in out.iterdir():
        text = without_images(path.read_text())
        assert not [d for d in MACHINE_DIRS if d in text], path.name
        assert str(tmp_path) not in text
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(results["params.dataset_params.root"]) == {"<dir>/isic"}
    assert set(results["params.checkpoint_dir"]) == {"<dir>/ckpt"}
    assert set(results["tags.debiasbench.command"]) == {"debiasbench sweep benchmarks/rules.yaml"}  # below cwd
    assert "FileNotFoundError: '<dir>/labels.csv' (see <dir>/log.txt)" in set(results[f"tags.{FAILURE_TAG}"])
    readme = (out / "README.md").read_text()
    assert "tracking store: `sqlite: mlflow.db`" in readme and "debiasbench sweep benchmarks/rules.yaml" in readme


def test_public_text_hides_directories_and_store_label_names_kind_and_file(tmp_path):
    cwd = tmp_path / "project"
    assert public_text(f"sweep {cwd}/benchmarks/a.yaml --out=/srv/x/board", cwd) == \
        "sweep benchmarks/a.yaml --out=<dir>/board"
    assert public_text("sqlite:////tmp/q/mlflow.db and file:///var/lib/mlruns", cwd) == \
        "sqlite:///<dir>/mlflow.db and file://<dir>/mlruns"
    assert public_text("~/data/x.npz, /tmp", cwd) == "<dir>/x.npz, <dir>"
    unchanged = "lr=0.001 a/b http://host:5000/api/2.0 <dir>/x 1/2"
    assert public_text(unchanged, cwd) == unchanged and public_text(public_text("/a/b/c", cwd), cwd) == "<dir>/c"
    assert public_text(3.5, cwd) == 3.5
    assert store_label("sqlite:////tmp/quickrun2/mlflow.db") == "sqlite: mlflow.db"
    assert store_label("file:///home/u/mlruns") == "file: mlruns" and store_label("/home/u/mlruns") == "file: mlruns"
    assert store_label("http://user:secret@mlflow.internal:5000") == "http: mlflow.internal"


def test_the_printed_table_has_a_column_per_rule_and_a_caption_naming_each_metric():
    from rich.console import Console

    summary = add_verdict(pd.DataFrame([
        {**_summary_row(rule, method, clean, 0.5), "selection_metric": f"score-of-{rule}"}
        for rule in ("val_acc", "bias_annotated", "oracle") for method, clean in (("a", 0.9), ("b", 0.7))]))
    console = Console(width=200, record=True)
    console.print(leaderboard_table(summary))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "method" in line)
    assert header.index("val_acc") < header.index("bias_annotated") < header.index("ORACLE")
    assert "clean_acc 0.900 #1 *" in text and "clean_acc 0.700 #2" in text
    assert "oracle on d selected on score-of-oracle" in text
    assert sum(line.strip().startswith("│ a ") for line in text.splitlines()) == 1  # one row per method


@pytest.mark.parametrize("args,message", [
    (["--select", "test_acc"], "pass --oracle"),
    (["--experiment", "nope"], "experiment 'nope' not in"),
    (["--rule", "best"], "--rule 'best' is not a rule; rules: val_acc, bias_annotated, oracle"),
])
def test_leaderboard_bad_input_is_one_line_and_exit_code_2(store, tmp_path, args, message):
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", store, "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # a store and a leaderboard of its own: seconds on 2 cores
def test_select_adds_a_rule_and_rule_chooses_the_built_in_ones(tracking_uri, tmp_path):
    _rules_store(tracking_uri, tmp_path)
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out),
                                      "--rule", "val_acc", "--select", "test_acc", "--oracle"])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(dict.fromkeys(summary["rule"])) == ["val_acc", "test_acc"]
    custom = summary[summary["rule"] == "test_acc"].iloc[0]
    assert custom["selected_by"].startswith("ORACLE: test_acc")
    assert "debiasbench leaderboard --rule val_acc --select test_acc --oracle" in (out / "README.md").read_text()


def test_leaderboard_of_a_missing_store_is_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", f"sqlite:///{missing}",
                                      "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not missing.exists()


def test_params_a_run_logs_about_itself_do_not_split_the_seeds_of_one_setting(tracking_uri):
    """``eval_cav_samples`` says which samples the evaluation's CAV used; one seed falling
    back to every sample must not make that seed a setting of its own."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for seed, used in enumerate(("predicted", "all", "predicted")):
        run_id = log_run(client, experiment, "rrclarc", seed, 1.0, val=0.9, test=0.8)
        client.log_param(run_id, "eval_cav_samples", used)
        client.log_param(run_id, "explanation", "lrp")
    runs, _ = runs_frame(tracking_uri)
    (row,) = [r for _, r in select_rules(finished_once(runs), list(RULES.values()), ("test_acc",)).iterrows()]
    assert row["n"] == 3 and row["candidates"] == 1
    assert "eval_cav_samples" not in row["hparams"]


@pytest.mark.slow  # a store and a leaderboard of its own: seconds on 2 cores
def test_notes_appear_under_the_tables_escaped_and_a_missing_notes_file_is_one_line(tracking_uri, tmp_path):
    _rules_store(tracking_uri, tmp_path)
    notes = tmp_path / "notes.md"
    notes.write_text("The ranking shows <b>this</b>.\n\nIt does not show that.\n")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out),
                                      "--notes", str(notes)])
    assert result.exit_code == 0, result.output
    readme = (out / "README.md").read_text()
    assert readme.rstrip().endswith("It does not show that.")
    assert "## What the ranking shows, and what it does not" in readme
    page = (out / "index.html").read_text()
    assert "<p>The ranking shows &lt;b&gt;this&lt;/b&gt;.</p><p>It does not show that.</p>" in page
    missing = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "b2"),
                                       "--notes", str(tmp_path / "absent.md")])
    assert missing.exit_code == 2 and "--notes: cannot read" in missing.output
    assert not (tmp_path / "b2").exists()
