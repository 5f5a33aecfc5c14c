"""Model selection and ``debiasbench leaderboard`` on a store built by hand, where the
right answer is known: the hparams with the best validation metric win, not those with
the best test metric; an oracle choice is allowed only when asked and labelled so."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.errors import UserError
from debiasbench.leaderboard import finished_once, runs_frame
from debiasbench.selection import select
from debiasbench.tracking import FAILURE_TAG, RUN_KEY_TAG

SCRIPT = "<script>alert(1)</script>"


def log_run(client, experiment_id: str, method: str, seed: int, lam: float, val: float, test: float,
            bias_ratio: float = 0.99, status: str = "FINISHED", key: str | None = None) -> str:
    params = {"method": method, "dataset": "colored_digits", "model": "small_cnn", "seed": str(seed),
              "lr": "0.001", "device": "cpu", "hparams.lambda": str(lam),
              "dataset_params.bias_ratio": str(bias_ratio)}
    run_key = key or f"{method}-{lam}-{seed}-{bias_ratio}"
    run = client.create_run(experiment_id, tags={RUN_KEY_TAG: run_key})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, value)
    client.log_metric(run.info.run_id, "val_acc", val)
    client.log_metric(run.info.run_id, "test_acc", test)
    client.log_metric(run.info.run_id, "test_conflicting_acc", test / 2)
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
        assert row["hparams"] == "lambda=1.0"
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
    assert row["selected_by"].startswith("ORACLE")
    with pytest.raises(UserError, match="'val_worst_group_acc' was not logged"):
        select(finished, "val_worst_group_acc")


def test_a_repeated_job_counts_once(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("debiasbench").experiment_id
    log_run(client, experiment, "rrr", 0, 1.0, val=0.90, test=0.70, key="rrr-1.0-0-0.99")  # same job again
    summary = select(finished_once(runs_frame(store)[0]), metrics=("test_acc",))
    row = selected(summary)
    assert row["n"] == 3 and row["test_acc"] == pytest.approx(statistics.mean([0.70, 0.62, 0.64]))


def test_leaderboard_writes_results_summary_readme_and_page(store, tmp_path):
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", store, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "index.html", "results.csv", "summary.csv"]
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 14 and (results["status"] == "FAILED").sum() == 1
    assert "non-finite loss" in results.loc[results["status"] == "FAILED", f"tags.{FAILURE_TAG}"].iloc[0]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert len(summary) == 3 and set(summary["hparams"]) >= {"lambda=1.0"}
    readme = (out / "README.md").read_text()
    assert "| rrr | colored_digits | small_cnn | bias_ratio=0.99 | lambda=1.0 | 3 | 0.620 ± 0.012" in readme
    assert "val_acc (validation" in readme and "debiasbench leaderboard" in readme
    page = (out / "index.html").read_text()
    for text in (readme, page):
        assert SCRIPT not in text and "&lt;script&gt;" in text


@pytest.mark.parametrize("args,message", [
    (["--select", "test_acc"], "pass --oracle"),
    (["--experiment", "nope"], "experiment 'nope' not in"),
])
def test_leaderboard_bad_input_is_one_line_and_exit_code_2(store, tmp_path, args, message):
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", store, "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


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
    (row,) = [r for _, r in select(finished_once(runs), metrics=("test_acc",)).iterrows()]
    assert row["n"] == 3 and row["candidates"] == 1
    assert "eval_cav_samples" not in row["hparams"]
