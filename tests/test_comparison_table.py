"""The table a sweep ends with: one table per dataset, test metrics named in full in a
legend with their direction, a note where a column does not separate the methods, and a
reading; it fits an 80-column terminal with one seed."""

from __future__ import annotations

import io

from rich.console import Console

from debiasbench.contract.config import RunConfig
from debiasbench.report.comparison import COLUMNS, comparison_tables, print_comparison
from debiasbench.sweep.launchers import JobResult


def result(method: str, dataset: str, seed: int = 0, status: str = "FINISHED", **metrics: float) -> JobResult:
    config = RunConfig(method=method, dataset=dataset, model="small_cnn", seed=seed)
    defaults = {"test_acc": 0.8, "test_clean_acc": 0.7, "test_biased_acc": 0.99, "test_conflicting_acc": 0.4,
                "test_worst_group_acc": 0.0, "test_unbiased_acc": 0.5, "test_smallest_group": 1.0,
                "test_empty_groups": 5.0, "train_seconds": 1.5, "prepare_seconds": 0.5}
    return JobResult(config, status, {**defaults, **metrics} if status == "FINISHED" else {})


def render(results: list[JobResult], width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for renderable in comparison_tables(results):
        console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


SWEEP = [result("vanilla", "colored_digits"),
         result("gradient_alignment", "colored_digits", test_conflicting_acc=0.73),
         result("vanilla", "synthetic_artifacts", test_biased_acc=0.54, test_clean_acc=0.86,
                test_worst_group_acc=0.7, artifact_relevance=0.24),
         result("rrclarc", "synthetic_artifacts", test_biased_acc=0.77, test_clean_acc=0.86,
                test_worst_group_acc=0.76, artifact_relevance=0.17)]


def test_each_dataset_gets_its_own_table_of_test_metrics():
    text = render(SWEEP)
    assert "colored_digits (small_cnn): test metrics, one seed" in text
    assert "synthetic_artifacts (small_cnn): test metrics, one seed" in text
    digits, artifacts = text.split("synthetic_artifacts (small_cnn)")
    assert "rrclarc" in artifacts and "rrclarc" not in digits
    assert "gradient_alignment" in digits and "gradient_alignment" not in artifacts


def test_the_legend_names_every_column_in_full_with_its_direction():
    text = render(SWEEP)
    legend = text.split("Columns:")[1]
    for column in COLUMNS:
        assert column.metric in legend
    assert "artifact ↓ = artifact_relevance" in legend
    assert "conflict ↑ = test_conflicting_acc" in legend
    assert "↓" in text.split("Columns:")[0]  # the arrows are in the headers too


def test_a_column_equal_for_every_method_says_why_it_does_not_separate_them():
    text = render(SWEEP)
    digits = text.split("synthetic_artifacts (small_cnn)")[0]
    assert ("worst group is 0.000 for every method, so it does not separate them: the test split's smallest "
            "class x bias group holds 1 sample(s) and 5 groups are empty") in " ".join(digits.split())
    assert "worst group is" not in text.split("synthetic_artifacts (small_cnn)")[1]


def test_the_reading_says_how_much_vanilla_uses_the_shortcut_and_who_does_best():
    text = " ".join(render(SWEEP).split())
    assert "Reading: vanilla uses the shortcut (biased 0.990 vs clean 0.700)" in text
    assert "highest bias-conflicting accuracy: gradient_alignment 0.730 (vanilla 0.400)" in text
    assert "lowest artifact relevance: rrclarc 0.170 (vanilla 0.240)" in text
    assert "one seed: differences of a few points may be noise" in text


def test_a_one_seed_demo_fits_80_columns_without_cutting_names():
    demo = [result(m, "colored_digits") for m in ("vanilla", "gradient_alignment", "groupdro", "dfr")]
    demo += [result(m, "synthetic_artifacts", artifact_relevance=0.2, train_seconds=25.0)
             for m in ("vanilla", "rrclarc", "aclarc", "jtt")]
    text = render(demo, width=80)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in ("acc", "clean", "biased", "conflict", "worst", "group", "unbiased", "artifact", "seconds"):
        assert word in text
    assert "gradient_alignment" in text


def test_seeds_become_mean_and_standard_error_and_failed_runs_are_counted():
    runs = [result("vanilla", "colored_digits", seed=s, test_acc=0.8 + 0.01 * s) for s in range(3)]
    runs += [result("lff", "colored_digits", seed=0), result("lff", "colored_digits", seed=1, status="FAILED")]
    text = render(runs, width=120)
    assert "mean ± standard error over 3 seeds" in text
    assert "0.810 ± 0.006" in text
    lff = next(line for line in text.splitlines() if line.strip().startswith("lff"))
    assert "1/2" in lff


def test_non_finite_metrics_count_as_missing_and_a_cell_of_fewer_seeds_says_its_n():
    """As in the leaderboard: NaN, infinities and MLflow's stored infinity (1.8e308) take
    part in no mean, and a cell whose mean rests on fewer seeds than its row's n says so."""
    stored_infinity = 1.7976931348623157e308
    results = [result("vanilla", "colored_digits", seed=0, test_clean_acc=0.6),
               result("vanilla", "colored_digits", seed=1, test_clean_acc=float("nan"), train_seconds=float("inf")),
               result("vanilla", "colored_digits", seed=2, test_clean_acc=0.8),
               result("jtt", "colored_digits", seed=0, test_conflicting_acc=stored_infinity),
               result("jtt", "colored_digits", seed=1, test_conflicting_acc=0.5),
               result("jtt", "colored_digits", seed=2, test_conflicting_acc=0.6)]
    text = render(results, width=200)
    vanilla = next(line for line in text.splitlines() if line.strip().startswith("vanilla"))
    jtt = next(line for line in text.splitlines() if line.strip().startswith("jtt"))
    assert "0.700 ± 0.100 (n=2)" in vanilla  # clean: seeds 0 and 2
    assert "2.000 ± 0.000 (n=2)" in vanilla  # seconds: train 1.5 + prepare 0.5, the infinite one left out
    assert "0.550 ± 0.050 (n=2)" in jtt  # conflicting: the stored infinity left out
    assert "e+308" not in text and "inf" not in text.split("Columns:")[0]
    assert "highest bias-conflicting accuracy: jtt 0.550" in text
    assert "(n=k) after a value: only k of them logged a finite value" in text
    assert "(n=k)" not in render(SWEEP, width=200)  # said only where a cell needs it


def test_in_a_file_or_pipe_each_note_is_one_whole_line():
    """Not at a terminal (``make demo > log``), a note longer than the console is printed
    whole rather than broken mid-sentence at the console's width."""
    console = Console(file=io.StringIO(), width=80, color_system=None)
    print_comparison(console, SWEEP)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    [worst] = [line for line in lines if line.startswith("worst group is")]
    assert worst.endswith("averages the groups instead.") and len(worst) > 80, worst
    assert all(line.endswith(".") for line in lines if line.startswith("Reading:")), lines
