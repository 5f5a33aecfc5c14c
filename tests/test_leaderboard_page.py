"""The static leaderboard page, checked in headless Chromium: a table per dataset and rule
with ranks, the verdict, the Pareto plot, sorting, escaping, no machine path, offline."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from debiasbench.report.leaderboard import add_verdict, ranked_metrics
from debiasbench.report.page import render_page

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs playwright
    HAVE_PLAYWRIGHT = False
else:
    HAVE_PLAYWRIGHT = True

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if not HAVE_PLAYWRIGHT or CHROMIUM is None:
    pytest.skip("needs playwright and a chromium binary", allow_module_level=True)

NAN = math.nan
EVIL = "<script>window.__pwned = 1</script>"
MACHINE_DIRS = ("/tmp", "/home", "/root", "/work")
METRICS = ["test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc",
           "test_worst_group_acc", "test_unbiased_acc", "artifact_relevance", "val_acc"]
BAR_PLOTS = (("test_clean_acc", "test_biased_acc", "test_acc"),
             ("test_conflicting_acc", "test_worst_group_acc", "test_unbiased_acc"), ("artifact_relevance",))
RULES = {"val_acc": ("val_acc", "val_acc (validation; DomainBed-style)", "", False),
         "bias_annotated": ("mean(val_clean_acc, val_biased_acc)",
                            "bias-annotated: mean(val_clean_acc, val_biased_acc)", "fallback: the views", False),
         "oracle": ("mean(test_clean_acc, test_biased_acc)",
                    "ORACLE: mean(test_clean_acc, test_biased_acc) (hyper-parameters chosen on test data)", "", True)}


def _row(rule, method, dataset, setting, hparams, n, **means):
    metric, selected_by, note, oracle = RULES[rule]
    row = {"rule": rule, "method": method, "dataset": dataset, "model": "resnet18", "setting": setting,
           "hparams": hparams, "n": n, "selected_by": selected_by, "selection_metric": metric,
           "selection_note": note, "oracle": oracle, "selection_score": means.pop("score", 0.5)}
    for m in METRICS:
        row[m] = means.get(m, NAN)
        row[m + "_se"] = means.get(m + "_se", NAN) if n > 1 else NAN
    return row


def _colored(rule, shift=0.0):
    return [
        _row(rule, "vanilla", "colored_digits", "bias_ratio=0.99", "lr=0.001", 3, test_acc=0.612, test_acc_se=0.011,
             test_clean_acc=0.604 + shift, test_clean_acc_se=0.02, test_biased_acc=0.991, test_biased_acc_se=0.003,
             test_conflicting_acc=0.571, test_conflicting_acc_se=0.03, test_worst_group_acc=0.31, val_acc=0.98),
        _row(rule, EVIL, "colored_digits", "bias_ratio=0.99", "lambda=1000 root=/work/data lr=0.001", 3,
             test_acc=0.742, test_acc_se=0.02, test_clean_acc=0.75, test_biased_acc=0.93, test_worst_group_acc=0.52,
             val_acc=0.95),  # conflicting: NaN
        _row(rule, "rrr", "colored_digits", "bias_ratio=0.99", "lambda=10", 3, test_acc=0.801, test_clean_acc=0.79,
             test_biased_acc=0.88, test_conflicting_acc=0.774, test_worst_group_acc=0.6, val_acc=0.9),
    ]


SUMMARY = add_verdict(pd.DataFrame([
    *_colored("val_acc"), *_colored("bias_annotated", 0.1), *_colored("oracle", 0.2),
    _row("val_acc", "vanilla", "synthetic_artifacts", "", "", 1, test_acc=0.93, test_clean_acc=0.9,
         test_worst_group_acc=0.4, artifact_relevance=0.27, val_acc=0.94),
    _row("val_acc", "rrclarc", "synthetic_artifacts", "", "", 1, test_acc=0.91, test_clean_acc=0.88,
         test_worst_group_acc=0.5, artifact_relevance=0.12, val_acc=0.92),
]))
INFO = {"title": "Leaderboard <test>", "command": "debiasbench sweep /home/alice/benchmarks/colored_digits.yaml",
        "selection": "val_acc; bias-annotated; ORACLE",
        "rules": "val_acc: validation accuracy\nbias_annotated: bias labels\noracle: test data",
        "seeds": "3", "date": "2025-01-01", "tracking_uri": "sqlite:////tmp/quickrun2/mlflow.db"}


def without_images(text: str) -> str:
    """``text`` without its PNG data URIs (base64 may spell "/tmp" by chance)."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", text)


def _tables(summary: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    return [(d, r, rows) for d, frame in summary.groupby("dataset", sort=False)
            for r, rows in frame.groupby("rule", sort=False)]


def _shown(frame: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if frame[m].notna().any()]


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


def _table(page, dataset: str, rule: str):
    return page.locator(f'section.dataset[data-dataset="{dataset}"] section.rule[data-rule="{rule}"] table')


def _headers(table) -> list[str]:
    return table.locator("thead th").evaluate_all("hs => hs.map(h => h.textContent)")


def _column(table, header: str, attribute: str = "value") -> list[str]:
    """The data-<attribute> of every row's cell in the column ``header``, top to bottom."""
    index = _headers(table).index(header)
    return table.locator("tbody tr").evaluate_all(f"rs => rs.map(r => r.cells[{index}].dataset.{attribute})")


def _sorted_by(table, header: str) -> list[str]:
    table.locator("thead th").nth(_headers(table).index(header)).click()
    return _column(table, header)


def test_html_escapes_strings_from_the_summary():
    text = render_page(SUMMARY, INFO, METRICS)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    assert EVIL not in text
    assert "Leaderboard &lt;test&gt;" in text
    assert "http://" not in text and "https://" not in text


def test_no_machine_path_anywhere_in_the_page():
    text = without_images(render_page(SUMMARY, INFO, METRICS))
    assert not [d for d in MACHINE_DIRS if d in text]
    assert "sqlite: mlflow.db" in text and "debiasbench sweep &lt;dir&gt;/colored_digits.yaml" in text
    assert "root=&lt;dir&gt;/data" in text


def test_oracle_tables_are_flagged_and_the_page_warns_only_when_there_is_one():
    text = render_page(SUMMARY, INFO, METRICS)
    assert "chosen on test data" in text and '<section class="rule oracle" data-rule="oracle">' in text
    plain = SUMMARY[SUMMARY["rule"] != "oracle"]
    assert "chosen on test data" not in render_page(plain, INFO, METRICS)


def test_every_dataset_has_a_table_per_rule_that_names_the_rule_and_its_metric(page):
    sections = page.eval_on_selector_all("section.dataset", "ss => ss.map(s => s.dataset.dataset)")
    assert sections == list(dict.fromkeys(SUMMARY["dataset"]))
    for dataset, rule, rows in _tables(SUMMARY):
        heading = page.locator(f'section.dataset[data-dataset="{dataset}"] section.rule[data-rule="{rule}"] h3')
        text = heading.text_content()
        assert f"Rule {rule}, selected on {rows['selection_metric'].iloc[0]}" in text
        assert text.startswith("ORACLE") == (rule == "oracle")
    assert page.locator("table.results").count() == len(_tables(SUMMARY)) == 4


def _cell_text(row: pd.Series, metric: str, ranked: bool = True) -> str:
    mean, se, rank = row[metric], row[metric + "_se"], row.get(f"rank_{metric}", NAN) if ranked else NAN
    value = f"{mean:.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}")
    return "–" if math.isnan(mean) else ("" if pd.isna(rank) else f"#{int(rank)} ") + value


def test_table_rows_match_the_summary_with_ranks_next_to_the_ranked_metrics(page):
    for dataset, rule, rows in _tables(SUMMARY):
        table = _table(page, dataset, rule)
        frame = SUMMARY[SUMMARY["dataset"] == dataset]
        ranked = [m for m in ranked_metrics(frame) if m in _shown(frame)]
        extra = [m for m in _shown(frame) if m not in ranked]
        assert _headers(table) == ["method", "score", *ranked, "n", "Pareto", "details"]
        cells = table.locator("tbody tr").evaluate_all("rs => rs.map(r => Array.from(r.cells, c => c.textContent))")
        folded = table.locator("tbody tr").evaluate_all(
            "rs => rs.map(r => Object.fromEntries(Array.from(r.querySelectorAll('details dt'), "
            "dt => [dt.textContent, dt.nextElementSibling.textContent])))")
        assert len(cells) == len(rows)
        for texts, more, (_, row) in zip(cells, folded, rows.iterrows()):
            assert texts[0] == row.method and texts[-3:-1] == [str(row.n), "yes" if row.pareto else ""]
            assert [_cell_text(row, m) for m in ranked] == texts[2:2 + len(ranked)], (dataset, rule, row.method)
            # the rest of the row is folded into its details, in order
            assert list(more) == ["model", "setting", "hparams", *extra]
            assert [more["model"], more["setting"] or "–"] == [row.model, row.setting or "–"]
            assert more["hparams"] == (row.hparams.replace("/work", "<dir>") or "–")
            assert [more[m] for m in extra] == [_cell_text(row, m, ranked=False) for m in extra]


def test_ranks_follow_the_verdict_and_rank_one_is_highlighted(page):
    table = _table(page, "colored_digits", "val_acc")
    rows = SUMMARY[(SUMMARY["dataset"] == "colored_digits") & (SUMMARY["rule"] == "val_acc")]
    ranks = _column(table, "test_clean_acc", "rank")
    assert ranks == [str(int(r)) for r in rows["rank_test_clean_acc"]]
    # clean: rrr 0.79, <script> 0.75, vanilla 0.604±0.02: no SE for the first two (one
    # interval each a point), so three tiers
    assert sorted(ranks) == ["1", "2", "3"]
    assert table.locator("td.best").count() == sum((rows[c] == 1).sum() for c in rows if c.startswith("rank_"))
    artifact = _column(_table(page, "synthetic_artifacts", "val_acc"), "artifact_relevance", "rank")
    assert artifact == ["1", "2"]  # lower is better: rrclarc (0.12) first


def test_the_verdict_names_the_pareto_front_and_the_rank_one_methods(page):
    verdict = page.locator('section.dataset[data-dataset="colored_digits"] .verdict').text_content()
    assert "under rule bias_annotated" in verdict
    assert "Pareto front of test_clean_acc vs. test_conflicting_acc (higher is better): rrr" in verdict
    front = SUMMARY[(SUMMARY["rule"] == "bias_annotated") & SUMMARY["pareto"]]["method"].tolist()
    assert front == ["rrr"]  # 0.79/0.774 beats vanilla on both; <script> has no conflicting accuracy
    synthetic = page.locator('section.dataset[data-dataset="synthetic_artifacts"] .verdict').text_content()
    assert "under rule val_acc" in synthetic  # no bias-annotated rows there
    assert "vs. artifact_relevance (lower is better)" in synthetic  # an artifact dataset: relevance is its bias axis


def test_clicking_headers_sorts_numbers_with_nan_last_and_text(page):
    table = _table(page, "colored_digits", "val_acc")
    rows = SUMMARY[(SUMMARY["dataset"] == "colored_digits") & (SUMMARY["rule"] == "val_acc")]
    values = rows["test_conflicting_acc"].dropna().tolist()
    nans = [""] * (len(rows) - len(values))
    assert nans, "the fixture should have a NaN in this column"
    ascending = _sorted_by(table, "test_conflicting_acc")
    assert [float(v) for v in ascending[:len(values)]] == sorted(values) and ascending[len(values):] == nans
    descending = _sorted_by(table, "test_conflicting_acc")
    assert [float(v) for v in descending[:len(values)]] == sorted(values, reverse=True)
    assert descending[len(values):] == nans
    assert _sorted_by(table, "method") == sorted(rows["method"])
    other = _table(page, "colored_digits", "oracle")
    assert other.locator("th[aria-sort]").count() == 0  # each table sorts on its own


def test_pareto_and_bar_plots_are_present_decoded_and_loaded(page, tmp_path: Path):
    from PIL import Image

    pareto = page.query_selector_all("img.plot.pareto")
    assert len(pareto) == 2  # one per dataset (one model x setting each)
    assert "Pareto plot on colored_digits" in pareto[0].get_attribute("alt")
    plots = page.query_selector_all("img.plot")
    expected_bars = sum(any(rows[m].notna().any() for m in group)
                        for dataset, frame in SUMMARY.groupby("dataset", sort=False)
                        for rows in [frame[frame["rule"] == ("bias_annotated" if dataset == "colored_digits"
                                                             else "val_acc")]]
                        for group in BAR_PLOTS)
    assert len(plots) == len(pareto) + expected_bars == 7
    for img in plots:
        assert img.evaluate("i => i.complete && i.naturalWidth > 0") and img.get_attribute("alt")
        src = img.get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert decoded.format == "PNG" and decoded.size == tuple(img.evaluate("i => [i.naturalWidth, i.naturalHeight]"))
    page.screenshot(path=tmp_path / "leaderboard.png", full_page=True)
    assert (tmp_path / "leaderboard.png").stat().st_size > 0


def test_script_method_name_is_shown_as_text_and_never_runs(page):
    assert EVIL in _column(_table(page, "colored_digits", "val_acc"), "method")
    assert page.locator("table.results td", has_text=EVIL).count() == 3  # one per rule
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_page_makes_no_network_requests(page):
    assert page.requests, "the file itself should have been requested"
    assert all(url.startswith(("file://", "data:")) for url in page.requests), page.requests


def test_a_summary_of_one_metric_without_rules_still_renders(browser, tmp_path: Path):
    """``selection.select``'s rows (one rule, no ranks yet) as a library user would pass them."""
    legacy = SUMMARY[SUMMARY["rule"] == "val_acc"].drop(columns=["rule", "oracle", "pareto"])
    legacy = legacy.drop(columns=[c for c in legacy if c.startswith("rank_")])
    path = tmp_path / "legacy.html"
    path.write_text(render_page(legacy, INFO, METRICS), encoding="utf-8")
    context = browser.new_context()
    page = context.new_page()
    page.goto(path.as_uri())
    assert page.locator("table.results").count() == 2 and page.locator("span.rank").count() > 0
    context.close()


def test_the_published_page_rows_match_summary_csv_end_to_end(browser, tmp_path: Path, tracking_uri):
    """``debiasbench leaderboard`` on a store with a method named <script> and runs that log
    machine paths: the page it writes shows exactly the rows of the summary.csv written beside
    it, per rule, with a Pareto plot, and no machine path."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from debiasbench.cli import app
    from debiasbench.track.store import RUN_KEY_TAG

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("debiasbench")
    for method in ("vanilla", EVIL):
        for seed in range(2):
            run = client.create_run(experiment, tags={RUN_KEY_TAG: f"{method}{seed}",
                                                      "debiasbench.command": "debiasbench sweep /root/b/x.yaml"})
            for name, value in {"method": method, "dataset": "colored_digits", "model": "small_cnn",
                                "seed": seed, "dataset_params.root": "/home/u/digits"}.items():
                client.log_param(run.info.run_id, name, value)
            shift = seed / 10 + len(method) / 100
            for name, value in {"val_acc": 0.5 + seed / 10, "test_acc": 0.4 + shift, "val_clean_acc": 0.3 + shift,
                                "val_biased_acc": 0.9, "test_clean_acc": 0.35 + shift, "test_biased_acc": 0.9,
                                "test_conflicting_acc": 0.2 + shift}.items():
                client.log_metric(run.info.run_id, name, value)
            client.set_terminated(run.info.run_id, "FINISHED")
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", tracking_uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    text = without_images((out / "index.html").read_text())
    assert not [d for d in MACHINE_DIRS if d in text] and "sqlite: mlflow.db" in text
    context = browser.new_context()
    page = context.new_page()
    page.goto((out / "index.html").as_uri())
    assert list(dict.fromkeys(summary["rule"])) == ["val_acc", "bias_annotated", "oracle"]
    for rule, rows in summary.groupby("rule", sort=False):
        table = _table(page, "colored_digits", rule)
        cells = table.locator("tbody tr").evaluate_all("rs => rs.map(r => Array.from(r.cells, c => c.dataset.value))")
        headers = _headers(table)
        assert len(cells) == len(rows) == 2
        for shown, (_, row) in zip(cells, rows.iterrows()):
            by_header = dict(zip(headers, shown))
            assert by_header["method"] == row["method"] and by_header["n"] == str(row["n"])
            assert float(by_header["test_clean_acc"]) == pytest.approx(row["test_clean_acc"])
        ranks = _column(table, "test_clean_acc", "rank")
        assert ranks == [str(int(r)) for r in rows["rank_test_clean_acc"]]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert len(page.query_selector_all("img.plot.pareto")) == 1
    context.close()



PUBLISHED = Path(__file__).resolve().parents[1] / "leaderboard" / "summary.csv"


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="needs the published leaderboard's summary.csv")
def test_at_1400_pixels_the_tables_fit_without_scrolling_and_start_with_score_verdict_metrics_and_n(
        browser, tmp_path: Path):
    """The published summary (long hparams, every metric) at a laptop's 1,400 px: no table
    scrolls sideways, even with every row's details open; the columns read method, score,
    the ranked (verdict) metrics, n, and the rest is folded into each row's details."""
    from debiasbench.report.leaderboard import summary_metrics

    summary = pd.read_csv(PUBLISHED, keep_default_na=False, na_values=[""])
    metrics = summary_metrics(pd.DataFrame(columns=[f"metrics.{c}" for c in summary.columns]))
    path = tmp_path / "wide.html"
    path.write_text(render_page(summary, INFO, metrics), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri())
    tables = page.locator("table.results")
    assert tables.count() == 9

    def overflowing() -> list[str]:
        return tables.evaluate_all("ts => ts.filter(t => t.parentElement.scrollWidth > t.parentElement.clientWidth"
                                   " || t.getBoundingClientRect().right > document.documentElement.clientWidth)"
                                   ".map(t => t.id)")

    assert overflowing() == []
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    for dataset, frame in summary.groupby("dataset", sort=False):
        ranked = [m for m in ranked_metrics(frame) if m in metrics]
        for rule in dict.fromkeys(frame["rule"]):
            assert _headers(_table(page, dataset, rule)) == ["method", "score", *ranked, "n", "Pareto", "details"]
    page.locator("td.more details").evaluate_all("ds => ds.forEach(d => { d.open = true; })")
    assert page.locator("td.more details[open]").count() == len(summary)
    assert overflowing() == []
    hparams = page.locator("td.more dd").evaluate_all("ds => ds.map(d => d.textContent)")
    assert any("bias_epochs=" in h for h in hparams)
    context.close()


def test_a_metric_equal_for_every_method_has_no_rank_badges_and_the_verdict_says_why(browser, tmp_path: Path):
    rows = [_row("bias_annotated", method, "colored_digits", "", "", 3, score=score, test_clean_acc=clean,
                 test_clean_acc_se=0.01, test_conflicting_acc=clean - 0.2, test_conflicting_acc_se=0.01,
                 test_worst_group_acc=0.0, test_worst_group_acc_se=0.0)
            for method, score, clean in (("vanilla", 0.8, 0.70), ("jtt", 0.9, 0.85), ("pgd", 0.7, 0.60))]
    path = tmp_path / "flat.html"
    path.write_text(render_page(add_verdict(pd.DataFrame(rows)), INFO, METRICS), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri())
    table = _table(page, "colored_digits", "bias_annotated")
    assert _column(table, "method") == ["jtt", "vanilla", "pgd"]  # by the rule's score
    assert _column(table, "test_worst_group_acc", "rank") == [None, None, None]
    worst = _headers(table).index("test_worst_group_acc")
    assert table.locator(f"tbody tr td:nth-child({worst + 1}) span.rank").count() == 0
    assert _column(table, "test_clean_acc", "rank") == ["1", "2", "3"]
    verdict = page.locator(".verdict").text_content()
    assert "test_worst_group_acc:" not in verdict and "Rank 1 on test_clean_acc: jtt" in verdict
    assert page.locator(".verdict li.not-separating").text_content().startswith(
        "Test_worst_group_acc is 0.000 for every method: it does not separate the methods")
    assert "Welch's two-sided t-test" in page.locator("header").text_content()
    context.close()


def test_a_method_that_is_not_installed_is_marked_on_its_row_and_named_under_the_table(browser, tmp_path: Path):
    from debiasbench.report.leaderboard import mark_installed

    rows = [_row("val_acc", method, "colored_digits", "", "", 3, score=score, test_clean_acc=score)
            for method, score in (("vanilla", 0.8), ("gone_plugin", 0.9))]
    path = tmp_path / "uninstalled.html"
    path.write_text(render_page(mark_installed(add_verdict(pd.DataFrame(rows))), INFO, METRICS), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri())
    table = _table(page, "colored_digits", "val_acc")
    marked = table.locator("tbody tr.uninstalled td:first-child")
    assert marked.count() == 1 and marked.text_content() == "gone_plugin not installed"
    assert table.locator("tbody tr:not(.uninstalled) .not-installed").count() == 0
    note = page.locator("section.rule p.not-installed-note").text_content()
    assert note.startswith("Not installed: gone_plugin. No installed plugin registers these methods")
    context.close()
