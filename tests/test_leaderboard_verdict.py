"""What a leaderboard table claims, on summaries and stores built by hand: a metric with the
same mean for every method is not ranked and the verdict says why; rows follow the rule's
score; a hyper-parameter left null reads "auto"; a correction's train_seconds counts its
base model; a base model no sweep asked for is not a candidate of its own; and the runs of
a method that is not installed are listed, marked so."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.report.leaderboard import (add_verdict, finished_once, mark_installed, markdown, not_installed,
                                            runs_frame, verdicts)
from debiasbench.report.selection import AUTO, RULES, select_by_rule
from debiasbench.track.store import RUN_KEY_TAG

INFO = {"title": "t", "command": "debiasbench leaderboard", "rules": "val_acc: v", "seeds": "3 (0, 1, 2)",
        "date": "2026-01-01", "tracking_store": "sqlite: mlflow.db"}


def _row(method: str, score: float, clean: float, worst: float = 0.0, **extra) -> dict:
    return {"rule": "bias_annotated", "dataset": "colored_digits", "model": "small_cnn", "setting": "",
            "hparams": "", "method": method, "n": 3, "oracle": False, "selected_by": "bias-annotated: s",
            "selection_metric": "s", "selection_note": "", "selection_score": score,
            "test_clean_acc": clean, "test_clean_acc_se": 0.002, "test_worst_group_acc": worst,
            "test_worst_group_acc_se": 0.0, **extra}


def test_a_metric_with_the_same_mean_for_every_method_gets_no_rank_and_the_verdict_says_why():
    summary = add_verdict(pd.DataFrame([_row("vanilla", 0.80, 0.70), _row("jtt", 0.90, 0.75),
                                        _row("pgd", 0.85, 0.60)]))
    assert summary["rank_test_worst_group_acc"].isna().all()
    assert summary.set_index("method")["rank_test_clean_acc"].to_dict() == {"jtt": 1, "vanilla": 2, "pgd": 3}
    (verdict,) = verdicts(summary)
    assert [m for m, _ in verdict["best"]] == ["test_clean_acc"]  # no "rank 1" on worst-group accuracy
    (why,) = verdict["not_separating"]
    assert why.startswith("test_worst_group_acc is 0.000 for every method: it does not separate the methods")
    readme = markdown(summary, INFO, ("test_clean_acc", "test_worst_group_acc"))
    assert "- Test_worst_group_acc is 0.000 for every method: it does not separate the methods" in readme
    assert "Rank 1 on test_clean_acc: jtt\n" in readme
    rows = [line for line in readme.splitlines() if line.startswith("| jtt ")]
    assert rows and all("0.000 ± 0.000 |" in line and "0.000 ± 0.000 (#" not in line for line in rows)
    # one method differing is enough to rank again
    ranked = add_verdict(pd.DataFrame([_row("vanilla", 0.8, 0.7), _row("jtt", 0.9, 0.75, worst=0.1)]))
    assert ranked["rank_test_worst_group_acc"].notna().all() and verdicts(ranked)[0]["not_separating"] == []


def test_rows_are_sorted_by_the_rules_score_and_ranks_never_reward_a_wide_standard_error():
    summary = add_verdict(pd.DataFrame([
        _row("vanilla", 0.70, 0.667, test_clean_acc_se=0.016), _row("jtt", 0.95, 0.662, test_clean_acc_se=0.049),
        _row("lff", 0.60, 0.793, test_clean_acc_se=0.003), _row("pgd", 0.80, 0.779, test_clean_acc_se=0.080)]))
    assert list(summary["method"]) == ["jtt", "pgd", "vanilla", "lff"]  # by selection_score, best first
    by_clean = summary.sort_values("test_clean_acc", ascending=False)["rank_test_clean_acc"].tolist()
    assert by_clean == sorted(by_clean) and by_clean[0] == 1


def _log(client, experiment: str, params: dict, metrics: dict, key: str, tags: dict | None = None) -> str:
    run = client.create_run(experiment, tags={RUN_KEY_TAG: key, **(tags or {})})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, value)
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _sweep_with_bases(tracking_uri: str) -> pd.DataFrame:
    """A sweep of 2 candidates per method at 5 epochs: vanilla, dfr (C: null or 0.1) and
    pgd (bias_epochs: null or 3); dfr's base models are vanilla at 10 epochs, trained
    for dfr only (the defaults of a correction's base), 7 seconds each."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    common = {"dataset": "colored_digits", "model": "small_cnn"}
    for seed in range(2):
        base = _log(client, experiment, {**common, "method": "vanilla", "seed": str(seed), "epochs": "10",
                                         "lr": "0.001"},
                    {"val_acc": 0.99, "test_clean_acc": 0.5, "train_seconds": 7.0}, f"base-{seed}")
        for lr in ("0.001", "0.01"):
            _log(client, experiment, {**common, "method": "vanilla", "seed": str(seed), "epochs": "5", "lr": lr},
                 {"val_acc": 0.9, "test_clean_acc": 0.6, "train_seconds": 3.0}, f"vanilla-{lr}-{seed}")
        for c in ("None", "0.1"):
            _log(client, experiment, {**common, "method": "dfr", "seed": str(seed), "epochs": "0", "lr": "0.001",
                                      "hparams.C": c},
                 {"val_acc": 0.95 if c == "None" else 0.9, "test_clean_acc": 0.7, "train_seconds": 0.0},
                 f"dfr-{c}-{seed}", tags={"debiasbench.base_run_id": base})
        for epochs in ("None", "3"):
            _log(client, experiment, {**common, "method": "pgd", "seed": str(seed), "epochs": "5", "lr": "0.001",
                                      "hparams.bias_epochs": epochs},
                 {"val_acc": 0.97 if epochs == "None" else 0.9, "test_clean_acc": 0.8, "train_seconds": 2.0},
                 f"pgd-{epochs}-{seed}")
    return finished_once(runs_frame(tracking_uri)[0])


def test_every_method_has_as_many_candidates_a_base_model_trained_for_a_correction_is_not_one(tracking_uri):
    summary = select_by_rule(_sweep_with_bases(tracking_uri), RULES["val_acc"], ("test_clean_acc", "train_seconds"))
    by_method = summary.set_index("method")
    assert by_method["candidates"].to_dict() == {"vanilla": 2, "dfr": 2, "pgd": 2}
    # the 10-epoch base (val_acc 0.99) would win vanilla's selection if it competed
    assert by_method.at["vanilla", "hparams"] in ("lr=0.001", "lr=0.01")
    assert by_method.at["vanilla", "test_clean_acc"] == pytest.approx(0.6)


def test_a_null_hyper_parameter_reads_auto_and_a_corrections_train_seconds_counts_its_base(tracking_uri):
    summary = select_by_rule(_sweep_with_bases(tracking_uri), RULES["val_acc"], ("test_clean_acc", "train_seconds"))
    by_method = summary.set_index("method")
    assert by_method.at["dfr", "hparams"] == f"C={AUTO}" and by_method.at["pgd", "hparams"] == f"bias_epochs={AUTO}"
    assert by_method.at["dfr", "train_seconds"] == pytest.approx(7.0)  # 0 s of its own + its base's 7 s
    assert by_method.at["pgd", "train_seconds"] == pytest.approx(2.0)  # no base: its own


def test_a_correction_whose_base_run_is_not_in_the_store_shows_no_train_seconds(tracking_uri):
    runs = _sweep_with_bases(tracking_uri)
    runs = runs[~runs[f"tags.{RUN_KEY_TAG}"].str.startswith("base-")]
    summary = select_by_rule(runs, RULES["val_acc"], ("train_seconds",)).set_index("method")
    assert math.isnan(summary.at["dfr", "train_seconds"])
    assert summary.at["vanilla", "train_seconds"] == pytest.approx(3.0)


def test_mark_installed_names_the_methods_no_plugin_registers():
    summary = mark_installed(pd.DataFrame([_row("vanilla", 0.8, 0.7), _row("gone_plugin", 0.9, 0.8)]))
    assert summary.set_index("method")["installed"].to_dict() == {"vanilla": True, "gone_plugin": False}
    assert not_installed(summary) == ["gone_plugin"]
    assert not_installed(mark_installed(summary, ["vanilla", "gone_plugin"])) == []


def test_the_leaderboard_lists_runs_of_an_uninstalled_method_marked_not_installed(tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for method in ("vanilla", "uninstalled_plugin_method"):
        for seed in range(2):
            _log(client, experiment, {"method": method, "dataset": "colored_digits", "model": "small_cnn",
                                      "seed": str(seed)},
                 {"val_acc": 0.9 + seed / 100, "test_clean_acc": 0.6 + seed / 100 + len(method) / 1000},
                 f"{method}-{seed}")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Not installed: uninstalled_plugin_method." in " ".join(result.output.split())
    summary = pd.read_csv(out / "summary.csv")
    assert summary.set_index("method")["installed"].to_dict() == {"vanilla": True,
                                                                  "uninstalled_plugin_method": False}
    readme = (out / "README.md").read_text()
    assert "| uninstalled_plugin_method (not installed) | small_cnn |" in readme
    assert "Not installed: uninstalled_plugin_method. No installed plugin registers these methods" in readme
    assert "| vanilla (not installed)" not in readme
    page = (out / "index.html").read_text()
    assert page.count('<span class="not-installed"') == 1 and "not-installed-note" in page
