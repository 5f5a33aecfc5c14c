"""The unknown-bias papers' claim on Colored MNIST built from real digits.

Runs the sweep file the README quotes (``benchmarks/unknown_bias_mnist.yaml``): LfF's
Colored MNIST (1% bias-conflicting, severity 4) from the 10,000 real digits ``make mnist``
writes (7,996 in the training file, 7,197 after the validation split), LfF's MLP, every
method at its defaults (20 epochs, Adam 1e-3, batch 256, constant learning rate), 3 seeds.
GA with true bias labels, GA with peer-picking-mined labels, PGD and LfF each raise
accuracy on bias-conflicting test digits by at least 10 points over vanilla, averaged over
the seeds. JTT does not: its error set is half aligned digits here (precision about 0.47)
and it gains about 3 points at its defaults, at most 5 over a grid of ``id_epochs`` 1-5 and
``upweight`` 20-100 (README); the test holds it to a gain, not to 10 points.

About 3 minutes on 2 cores. Needs ``data/MNIST/raw`` (``make mnist``; CI runs it first).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from debiasbench.testing import claim_variant, run_sweep_file

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "benchmarks" / "unknown_bias_mnist.yaml"
DIGITS = REPO / "data" / "MNIST" / "raw"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DIGITS / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"needs the real digits in {DIGITS}: run `make mnist`")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Mean metrics per variant over the sweep's 3 seeds (the file's ``root`` default,
    ``data``, is read from the repository root)."""
    before = os.getcwd()
    os.chdir(REPO)
    try:
        _, done = run_sweep_file(SWEEP, tmp_path_factory.mktemp("mnist_claims"))
    finally:
        os.chdir(before)
    assert {r.status for r in done} == {"FINISHED"}
    groups: dict[str, list[dict[str, float]]] = {}
    for r in done:
        groups.setdefault(claim_variant(r.config), []).append(r.metrics)
    assert sorted(groups) == ["ga_labels", "ga_mined", "jtt", "lff", "pgd", "vanilla"]
    assert all(len(runs) == 3 for runs in groups.values())
    return {key: {name: statistics.mean(m[name] for m in runs) for name in runs[0]}
            for key, runs in groups.items()}


def test_vanilla_learns_the_digits_and_takes_the_colour_shortcut(results):
    vanilla = results["vanilla"]
    # measured (2026-12-01): clean 0.592, bias-aligned 0.992, conflicting 0.397
    assert vanilla["test_clean_acc"] > 0.4
    assert vanilla["test_biased_acc"] - vanilla["test_conflicting_acc"] > 0.4


@pytest.mark.parametrize("method", ["ga_labels", "ga_mined", "pgd", "lff"])
def test_method_raises_conflicting_accuracy_over_vanilla_by_ten_points(results, method):
    # measured: GA 0.730 / mined 0.695, PGD 0.597, LfF 0.579, against vanilla 0.397
    assert results[method]["test_conflicting_acc"] >= results["vanilla"]["test_conflicting_acc"] + 0.10


def test_jtt_gains_over_vanilla_but_less_than_the_others(results):
    # measured: JTT 0.429 against vanilla 0.397 (error set precision 0.47, recall 0.69)
    gain = results["jtt"]["test_conflicting_acc"] - results["vanilla"]["test_conflicting_acc"]
    assert 0.01 < gain < results["lff"]["test_conflicting_acc"] - results["vanilla"]["test_conflicting_acc"]


def test_peer_picking_mines_conflicting_digits_with_high_precision(results):
    # measured: precision 0.857
    assert results["ga_mined"]["mining_precision"] >= 0.7
