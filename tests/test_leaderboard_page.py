"""The static leaderboard page, checked in headless Chromium: table, sorting, plots, escaping, offline."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from debiasbench.leaderboard_page import render_page

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs playwright
    sync_playwright = None

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if sync_playwright is None or CHROMIUM is None:
    pytest.skip("needs playwright and a chromium binary", allow_module_level=True)

NAN = math.nan
EVIL = "<script>window.__pwned = 1</script>"
METRICS = ["test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc",
           "test_worst_group_acc", "test_unbiased_acc", "artifact_relevance", "val_acc"]
ACC_PLOTS = (("test_clean_acc", "test_biased_acc", "test_acc"),
             ("test_conflicting_acc", "test_worst_group_acc", "test_unbiased_acc"), ("artifact_relevance",))


def _row(method, dataset, setting, hparams, n, **means):
    row = {"method": method, "dataset": dataset, "model": "resnet18", "setting": setting, "hparams": hparams,
           "n": n}
    for m in METRICS:
        row[m] = means.get(m, NAN)
        row[m + "_se"] = means.get(m + "_se", NAN) if n > 1 else NAN
    return row


SUMMARY = pd.DataFrame([
    _row("vanilla", "colored_digits", "bias_ratio=0.99", "lr=0.001", 3, test_acc=0.612, test_acc_se=0.011,
         test_clean_acc=0.604, test_clean_acc_se=0.02, test_biased_acc=0.991, test_biased_acc_se=0.003,
         test_conflicting_acc=0.571, test_conflicting_acc_se=0.03, test_worst_group_acc=0.31, val_acc=0.98),
    _row(EVIL, "colored_digits", "bias_ratio=0.99", "lambda=1000 lr=0.001", 3, test_acc=0.742, test_acc_se=0.02,
         test_clean_acc=0.75, test_biased_acc=0.93, test_worst_group_acc=0.52, val_acc=0.95),  # conflicting: NaN
    _row("rrr", "colored_digits", "bias_ratio=0.99", "lambda=10", 3, test_acc=0.801, test_clean_acc=0.79,
         test_biased_acc=0.88, test_conflicting_acc=0.774, test_worst_group_acc=0.6, val_acc=0.9),
    _row("vanilla", "synthetic_artifacts", "", "", 1, test_acc=0.93, test_worst_group_acc=0.4,
         artifact_relevance=0.27, val_acc=0.94),
])
INFO = {"title": "Leaderboard <test>", "command": "debiasbench sweep --dataset colored_digits --seeds 3",
        "selection": "val_acc (validation accuracy)", "seeds": "3", "date": "2025-01-01",
        "tracking_uri": "sqlite:///mlflow.db"}
SHOWN = [m for m in METRICS if SUMMARY[m].notna().any()]  # metric columns the table should have


def _expected_plots(summary: pd.DataFrame) -> int:
    return sum(any(frame[m].notna().any() for m in group)
               for _, frame in summary.groupby("dataset") for group in ACC_PLOTS)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "leaderboard.html"
    path.write_text(render_page(SUMMARY, INFO, METRICS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_file: Path):
    """The page loaded in a fresh context; fails the test on any script error or request off the file."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    page.requests = requests
    yield page
    context.close()
    assert errors == []


def _index(page, header: str) -> int:
    return page.eval_on_selector_all("#leaderboard thead th", "hs => hs.map(h => h.textContent)").index(header)


def _column(page, header: str) -> list[str]:
    """The data-value of every row's cell in the column ``header``, top to bottom."""
    return page.eval_on_selector_all(
        "#leaderboard tbody tr", f"rs => rs.map(r => r.cells[{_index(page, header)}].dataset.value)")


def _aria_sort(page, header: str) -> str | None:
    return page.locator("#leaderboard thead th").nth(_index(page, header)).get_attribute("aria-sort")


def _sorted_by(page, header: str) -> list[str]:
    page.locator("#leaderboard thead th").nth(_index(page, header)).click()
    return _column(page, header)


def test_html_escapes_strings_from_the_summary():
    text = render_page(SUMMARY, INFO, METRICS)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    assert EVIL not in text
    assert "Leaderboard &lt;test&gt;" in text
    assert "http://" not in text and "https://" not in text


def test_oracle_selection_shows_a_warning():
    assert "chosen on test data" in render_page(SUMMARY, {**INFO, "selection": "ORACLE: x"}, METRICS)
    assert "chosen on test data" not in render_page(SUMMARY, INFO, METRICS)


def test_table_rows_match_the_summary(page):
    headers = page.eval_on_selector_all("#leaderboard thead th", "hs => hs.map(h => h.textContent)")
    assert headers == ["method", "dataset", "model", "setting", "hparams", "n", *SHOWN]
    cells = page.eval_on_selector_all(
        "#leaderboard tbody tr", "rs => rs.map(r => Array.from(r.cells, c => c.textContent))")
    assert len(cells) == len(SUMMARY)
    for shown, (_, row) in zip(cells, SUMMARY.iterrows()):
        assert shown[:6] == [row.method, row.dataset, row.model, row.setting, row.hparams, str(row.n)]
        for text, metric in zip(shown[6:], SHOWN):
            mean, se = row[metric], row[metric + "_se"]
            expected = "–" if math.isnan(mean) else f"{mean:.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}")
            assert text == expected, (row.method, metric)


def test_clicking_headers_sorts_numbers_with_nan_last_and_text(page):
    values = SUMMARY["test_conflicting_acc"].dropna().tolist()
    nans = [""] * (len(SUMMARY) - len(values))
    assert nans, "the fixture should have a NaN in this column"
    ascending = _sorted_by(page, "test_conflicting_acc")
    assert [float(v) for v in ascending[:len(values)]] == sorted(values) and ascending[len(values):] == nans
    assert _aria_sort(page, "test_conflicting_acc") == "ascending"
    descending = _sorted_by(page, "test_conflicting_acc")
    assert [float(v) for v in descending[:len(values)]] == sorted(values, reverse=True)
    assert descending[len(values):] == nans
    assert _aria_sort(page, "test_conflicting_acc") == "descending"
    assert _sorted_by(page, "method") == sorted(SUMMARY["method"])
    assert _aria_sort(page, "test_conflicting_acc") is None


def test_plots_are_present_and_loaded(page, tmp_path: Path):
    plots = page.query_selector_all("img.plot")
    assert len(plots) == _expected_plots(SUMMARY) == 5
    assert all(img.evaluate("i => i.complete && i.naturalWidth > 0") for img in plots)
    assert all(img.get_attribute("alt") for img in plots)
    sections = page.eval_on_selector_all("section.dataset", "ss => ss.map(s => s.dataset.dataset)")
    assert sections == list(dict.fromkeys(SUMMARY["dataset"]))
    page.screenshot(path=tmp_path / "leaderboard.png", full_page=True)
    assert (tmp_path / "leaderboard.png").stat().st_size > 0


def test_script_method_name_is_shown_as_text_and_never_runs(page):
    assert EVIL in _column(page, "method")
    assert page.locator("#leaderboard td", has_text=EVIL).count() == 1
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_page_makes_no_network_requests(page):
    assert page.requests, "the file itself should have been requested"
    assert all(url.startswith(("file://", "data:")) for url in page.requests), page.requests


def test_the_published_page_rows_match_summary_csv_end_to_end(browser, tmp_path: Path, tracking_uri):
    """``debiasbench leaderboard`` on a store with a method named <script>: the page it
    writes shows exactly the rows of the summary.csv written beside it."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from debiasbench.cli import app
    from debiasbench.tracking import RUN_KEY_TAG

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for method in ("vanilla", EVIL):
        for seed in range(2):
            run = client.create_run(experiment, tags={RUN_KEY_TAG: f"{method}{seed}"})
            for name, value in {"method": method, "dataset": "colored_digits", "model": "small_cnn",
                                "seed": seed}.items():
                client.log_param(run.info.run_id, name, value)
            client.log_metric(run.info.run_id, "val_acc", 0.5 + seed / 10)
            client.log_metric(run.info.run_id, "test_acc", 0.4 + seed / 10 + len(method) / 100)
            client.set_terminated(run.info.run_id, "FINISHED")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    context = browser.new_context()
    page = context.new_page()
    page.goto((out / "index.html").as_uri())
    cells = page.eval_on_selector_all(
        "#leaderboard tbody tr", "rs => rs.map(r => Array.from(r.cells, c => c.dataset.value))")
    headers = page.eval_on_selector_all("#leaderboard thead th", "hs => hs.map(h => h.textContent)")
    assert len(cells) == len(summary) == 2
    for shown, (_, row) in zip(cells, summary.iterrows()):
        by_header = dict(zip(headers, shown))
        assert by_header["method"] == row["method"] and by_header["n"] == str(row["n"])
        assert float(by_header["test_acc"]) == pytest.approx(row["test_acc"])
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert len(page.query_selector_all("img.plot")) >= 1
    context.close()
