"""Benchmarks report ratios, not seconds: each group holds one ``baseline`` measured in
the same session, and the summary prints every other member's median over it."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    lines = []
    for group, benches in getattr(session, "groups", None) or []:
        baseline = next((b for b in benches if "baseline" in b["name"]), None)
        if baseline is None:
            continue
        for bench in benches:
            if bench is not baseline:
                ratio = bench["median"] / baseline["median"]
                lines.append(f"{group}: {bench['name']} / {baseline['name']} = {ratio:.2f}x (median)")
    if lines:
        terminalreporter.write_sep("=", "ratios against the baseline of each group")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def colored_digits():
    from debiasbench.hparams import resolve
    from debiasbench.registry import DATASETS

    cls = DATASETS.get("colored_digits")
    return cls(**resolve(cls.params, {}, ""))
