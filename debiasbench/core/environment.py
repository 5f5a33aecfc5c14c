"""Settings read from environment variables, checked where they are read: a value out of
range is one line naming the variable, never a silent default."""

from __future__ import annotations

import os

from debiasbench.core.errors import UserError, shown


def seconds_setting(variable: str, default: float, low: float, high: float) -> float:
    """Seconds from ``variable``, from ``low`` to ``high``; ``default`` where it is unset
    or empty."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # NaN included
        raise UserError(f"{variable}: expected seconds from {low:g} to {high:g}, got {shown(text)}")
    return seconds
