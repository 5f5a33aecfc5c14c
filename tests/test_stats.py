"""Mean ± standard error over seeds (``debiasbench.core.stats``): the numbers and how they read."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from debiasbench.core.stats import MISSING, format_mean_se, mean_se, mean_se_parts
from debiasbench.report.selection import with_base_costs

BOARD = Path(__file__).resolve().parent.parent / "leaderboard"


def test_standard_error_is_the_sample_standard_deviation_over_root_n():
    mean, se, n = mean_se([0.80, 0.84, 0.88])
    # sample variance: (0.04² + 0 + 0.04²) / (3 - 1) = 0.0016; sd 0.04; se 0.04 / sqrt(3)
    assert n == 3
    assert mean == pytest.approx(0.84)
    assert se == pytest.approx(0.04 / math.sqrt(3))


def test_one_seed_has_a_mean_but_no_standard_error():
    mean, se, n = mean_se([0.7])
    assert (mean, n) == (0.7, 1)
    assert math.isnan(se)


def test_no_values_give_no_mean():
    mean, se, n = mean_se([])
    assert n == 0
    assert math.isnan(mean) and math.isnan(se)


def test_identical_seeds_have_zero_standard_error():
    assert mean_se([0.5, 0.5, 0.5])[1] == 0.0


def test_accepts_a_pandas_series():
    assert mean_se(pd.Series([1.0, 3.0])) == pytest.approx((2.0, 1.0, 2))


def test_format_writes_mean_plus_minus_standard_error():
    assert format_mean_se(0.1234, 0.0041) == "0.123 ± 0.004"


def test_format_without_a_standard_error_writes_the_mean_alone():
    assert format_mean_se(0.1234, math.nan) == "0.123"
    assert format_mean_se(0.1234, None) == "0.123"


def test_format_without_a_mean_writes_the_missing_marker():
    assert format_mean_se(math.nan, 0.1) == MISSING
    assert format_mean_se(None) == MISSING
    assert format_mean_se(None, missing="n/a") == "n/a"


def test_format_digits_apply_to_mean_and_error_alike():
    assert format_mean_se(65.7061, 11.3894, digits=1) == "65.7 ± 11.4"


def test_parts_are_the_formatted_texts_apart():
    assert mean_se_parts(0.6204, 0.0121) == ("0.620", "0.012")
    assert mean_se_parts(0.6204, math.nan) == ("0.620", None)


def test_published_summary_means_and_errors_are_those_of_its_runs():
    """Every mean and standard error in the committed summary.csv is ``mean_se`` of the
    selected runs' values in results.csv (a correction's training time with its base run's,
    ``with_base_costs``): one computation behind every published number."""
    summary = pd.read_csv(BOARD / "summary.csv", keep_default_na=False, na_values=[""])
    runs = with_base_costs(pd.read_csv(BOARD / "results.csv")).set_index("run_id")
    checked = 0
    for _, row in summary.iterrows():
        for metric in ("test_clean_acc", "test_biased_acc", "artifact_relevance", "train_seconds"):
            if f"metrics.{metric}" not in runs or metric not in row:
                continue
            mean, se, _ = mean_se(runs.loc[row["run_ids"].split(), f"metrics.{metric}"].dropna())
            for computed, published in ((mean, row[metric]), (se, row[f"{metric}_se"])):
                if pd.isna(published):
                    assert math.isnan(computed), (row["run_ids"], metric)
                else:
                    assert computed == pytest.approx(published, rel=1e-9, abs=1e-12), (row["run_ids"], metric)
                checked += 1
    assert checked > 100
