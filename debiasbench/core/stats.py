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


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of ``values``: the standard error is the sample standard
    deviation (n - 1 in the denominator) over sqrt(n).

    With one value there is no spread to estimate, so the standard error is NaN rather than 0
    (0 would claim a certainty one seed cannot give); with none, the mean is NaN too. Values
    are taken as given: callers drop missing (NaN) values first, since a NaN makes both NaN.
    """
    values = [float(v) for v in values]
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
