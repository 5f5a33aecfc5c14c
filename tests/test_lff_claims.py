"""LfF's claim on coloured digits, reproduced by running the sweep file the README quotes
(``benchmarks/lff_digits.yaml``: bias ratio 0.99, 8x8, 10 epochs at batch 16, 3 seeds):
weighting by relative difficulty raises accuracy on bias-conflicting test digits over
vanilla trained with the same settings, on every seed. The gain here is a few points,
far from the paper's Colored MNIST (60,000 digits, 100 epochs): with 11 conflicting
training digits both models fit the colour at about the same pace (README)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from debiasbench.testing import run_sweep_file

SWEEP = Path(__file__).parent.parent / "benchmarks" / "lff_digits.yaml"


@pytest.fixture(scope="module")
def per_seed(tmp_path_factory) -> dict[str, dict[int, dict[str, float]]]:
    _, done = run_sweep_file(SWEEP, tmp_path_factory.mktemp("lff_claims"))
    assert {r.status for r in done} == {"FINISHED"}
    results: dict[str, dict[int, dict[str, float]]] = {}
    for r in done:
        results.setdefault(r.config.method, {})[r.config.seed] = r.metrics
    assert all(len(seeds) == 3 for seeds in results.values())
    return results


@pytest.mark.slow
@pytest.mark.xfail(reason="not on colored_digits' data version 2: LfF 0.155 against vanilla's 0.148, +0.003, "
                          "+0.019, -0.004 per seed (docs/results.md, 2026-12-06); version 1: 0.221 against 0.195, "
                          "ahead on every seed")
def test_lff_raises_conflicting_accuracy_over_vanilla_on_every_seed(per_seed):
    lff, vanilla = per_seed["lff"], per_seed["vanilla"]
    assert all(lff[s]["test_conflicting_acc"] > vanilla[s]["test_conflicting_acc"] for s in vanilla)
    mean = {m: statistics.mean(r["test_conflicting_acc"] for r in runs.values()) for m, runs in per_seed.items()}
    assert mean["lff"] >= mean["vanilla"] + 0.02
