"""The committed leaderboard (``leaderboard/``) says what its tables claim.

These read the published files, not a fresh sweep: a republished leaderboard whose
bias-annotated ranking contradicts the RR-ClArC paper, that lacks a selection rule or a
dataset, or that leaks a machine path fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

BOARD = Path(__file__).resolve().parent.parent / "leaderboard"


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return pd.read_csv(BOARD / "summary.csv", keep_default_na=False, na_values=[""])


def selected(summary: pd.DataFrame, rule: str, dataset: str, method: str) -> pd.Series:
    rows = summary[(summary["rule"] == rule) & (summary["dataset"] == dataset) & (summary["method"] == method)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_every_rule_is_published_for_every_dataset(summary):
    for dataset in ("colored_digits", "synthetic_artifacts", "colored_mnist"):
        rules = set(summary.loc[summary["dataset"] == dataset, "rule"])
        assert rules == {"val_acc", "bias_annotated", "oracle"}, (dataset, rules)


def test_under_the_bias_annotated_rule_rrclarc_puts_less_relevance_on_the_artifact_than_vanilla(summary):
    rrclarc = selected(summary, "bias_annotated", "synthetic_artifacts", "rrclarc")
    vanilla = selected(summary, "bias_annotated", "synthetic_artifacts", "vanilla")
    assert rrclarc["selection_metric"] == "mean(val_clean_acc, val_biased_acc)"
    assert rrclarc["artifact_relevance"] < vanilla["artifact_relevance"]
    assert rrclarc["test_biased_acc"] > vanilla["test_biased_acc"]


def test_colored_mnist_is_selected_on_group_accuracy_of_a_validation_split_with_minority_groups(summary):
    row = selected(summary, "bias_annotated", "colored_mnist", "vanilla")
    assert row["selection_metric"] in ("val_unbiased_acc", "val_worst_group_acc")
    assert int(row["n"]) == 3


def test_unsuited_pairs_are_not_on_the_board(summary):
    ga = summary[(summary["method"] == "gradient_alignment")]
    assert set(ga["dataset"]) == {"colored_digits", "colored_mnist"}


@pytest.mark.parametrize("name", ["README.md", "index.html", "summary.csv", "results.csv", "source.json"])
def test_no_machine_path_is_published(name):
    text = (BOARD / name).read_text(encoding="utf-8")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # base64 may spell anything
    for path in ("/tmp/", "/home/", "/root/", "/work/", "sqlite:////"):
        assert path not in text, (name, path)


def test_the_published_leaderboard_records_its_store_and_sweep_files():
    """source.json: what `debiasbench leaderboard` checks before replacing the folder."""
    source = json.loads((BOARD / "source.json").read_text(encoding="utf-8"))
    assert source["tracking_store"] == "sqlite:///mlflow.db"
    assert source["sweep_files"] == ["benchmarks/quick.yaml", "benchmarks/quick_mnist.yaml"]
    assert [e["name"] for e in source["experiments"]] == ["debiasbench"]
    assert source["experiments"][0]["created"].startswith("2026-12-")


def _chromium() -> str:
    import shutil

    pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs a chromium binary")
    return chromium


def test_the_published_page_at_1400_pixels_shows_score_verdict_metrics_and_n_without_scrolling_sideways():
    """The committed index.html as a reader opens it on a laptop: no table is wider than its
    container or the window, and every table starts with the method, the rule's score, the
    ranked (verdict) metrics and n; the rest of each row is in its details cell."""
    from playwright.sync_api import sync_playwright

    from debiasbench.report.leaderboard import ranked_metrics

    summary = pd.read_csv(BOARD / "summary.csv", keep_default_na=False, na_values=[""])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((BOARD / "index.html").resolve().as_uri())
            tables = page.locator("table.results")
            overflowing = tables.evaluate_all(
                "ts => ts.filter(t => t.parentElement.scrollWidth > t.parentElement.clientWidth"
                " || t.getBoundingClientRect().right > document.documentElement.clientWidth).map(t => t.id)")
            page_fits = page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
            headers = tables.evaluate_all(
                "ts => ts.map(t => [t.closest('section.dataset').dataset.dataset,"
                " Array.from(t.querySelectorAll('thead th'), th => th.textContent)])")
            details = page.locator("td.more details").count()
        finally:
            browser.close()
    assert len(headers) == len(summary.drop_duplicates(["dataset", "rule"]))  # a table per dataset and rule
    assert overflowing == [] and page_fits
    for dataset, columns in headers:
        ranked = ranked_metrics(summary[summary["dataset"] == dataset])
        assert columns == ["method", "score", *ranked, "n", "Pareto", "details"], (dataset, columns)
    assert details == len(summary)


def test_the_published_page_opens_in_chromium_with_its_plots_and_notes():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    chromium = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((BOARD / "index.html").resolve().as_uri())
            drawn = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0).length")
            pareto = page.locator("img.pareto").count()
            text = page.locator("body").inner_text()
        finally:
            browser.close()
    assert drawn >= 6 and pareto >= 3  # a Pareto plot and bar plots per dataset
    assert "What the ranking shows, and what it does not" in text
    for path in ("/tmp/", "/home/", "/root/", "/work/"):
        assert path not in text
