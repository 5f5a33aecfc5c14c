"""Mean ± standard error over seeds: computed once, written one way.

The terminal summary, the leaderboard's Markdown and its HTML page all report a metric as
the mean over seeds with its standard error. They share this module so that the same runs
never show two different numbers, or the same number written two different ways.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

#: Between a mean and its standard error, as in "0.912 ± 0.004".
PLUS_MINUS = " ± "
#: Written where there is no mean at all (no finished run logged the metric).
MISSING = "–"


#: From this magnitude on a metric counts as infinite: MLflow's sqlite store keeps an
#: infinite metric as the largest double (1.7976931348623157e308), which reads back finite.
INFINITE_FROM = 1e308


def is_finite(value: object) -> bool:
    """Whether ``value`` is a number a mean may use: not NaN, not infinite, and not a stored
    infinity (``INFINITE_FROM``); text or None is not."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and abs(number) < INFINITE_FROM


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of the finite ``values``: the standard error is the sample
    standard deviation (n - 1 in the denominator) over sqrt(n).

    Non-finite values (NaN, infinities and MLflow's stored infinity, ``is_finite``) are
    missing: left out of the mean and of n. With one value there is no spread to estimate,
    so the standard error is NaN rather than 0 (0 would claim a certainty one seed cannot
    give); with none, the mean is NaN too.
    """
    values = [float(v) for v in values if is_finite(v)]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = statistics.fmean(values)
    if n == 1:
        return mean, math.nan, 1
    return mean, statistics.stdev(values) / math.sqrt(n), n


def mean_se_parts(mean: float, se: float | None, digits: int = 3) -> tuple[str, str | None]:
    """The mean's text and the standard error's (None where it is unknown), both with
    ``digits`` decimals: for layouts that set the two apart, such as the HTML page's cells,
    while the numbers stay written exactly as ``format_mean_se`` writes them."""
    se_text = None if se is None or math.isnan(se) else f"{float(se):.{digits}f}"
    return f"{float(mean):.{digits}f}", se_text


def format_mean_se(mean: float | None, se: float | None = None, digits: int = 3, missing: str = MISSING) -> str:
    """``"0.123 ± 0.004"``; just ``"0.123"`` where the standard error is unknown (None or
    NaN: a single seed); ``missing`` where there is no mean."""
    if mean is None or math.isnan(mean):
        return missing
    mean_text, se_text = mean_se_parts(mean, se, digits)
    return mean_text if se_text is None else f"{mean_text}{PLUS_MINUS}{se_text}"


def n_note(n: object, row_n: object) -> str:
    """``" (n=3)"`` where a cell's mean rests on fewer (or more) values than its row's n
    (a seed that did not log the metric, or logged a non-finite value); "" where they agree
    and where there is no value at all (the cell shows none)."""
    if not is_finite(n) or not is_finite(row_n) or int(float(n)) in (0, int(float(row_n))):  # type: ignore[arg-type]
        return ""
    return f" (n={int(float(n))})"  # type: ignore[arg-type]


#: Significance level of the test that separates two results in a leaderboard's ranks.
TIE_ALPHA = 0.05


def welch_p_value(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test that two results have the same mean, from each
    one's mean, standard error over seeds and number of seeds (the test needs nothing else:
    its statistic is the difference over sqrt(se_a² + se_b²), its degrees of freedom the
    Welch–Satterthwaite approximation). NaN where it cannot be made: a result of fewer than
    two seeds (no standard error). Both standard errors 0: 1 for equal means, else 0.
    An unknown n (0) with a known standard error is taken as many seeds (a z-test)."""
    if not all(math.isfinite(v) for v in (mean_a, mean_b, se_a, se_b)) or 0 < n_a < 2 or 0 < n_b < 2:
        return math.nan
    var_a, var_b = se_a ** 2, se_b ** 2
    if var_a + var_b == 0:
        return 1.0 if mean_a == mean_b else 0.0
    t = abs(mean_a - mean_b) / math.sqrt(var_a + var_b)
    denominator = sum(v ** 2 / (n - 1) for v, n in ((var_a, n_a), (var_b, n_b)) if n >= 2)
    from scipy import stats

    if n_a == 0 or n_b == 0 or denominator == 0:
        return float(2 * stats.norm.sf(t))
    df = (var_a + var_b) ** 2 / denominator
    return float(2 * stats.t.sf(t, df))
