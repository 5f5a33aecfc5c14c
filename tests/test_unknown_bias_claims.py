"""The claims of the Gradient Alignment and PGD papers, reproduced by running the sweep
file the README quotes (``benchmarks/unknown_bias_digits.yaml``): on coloured digits at
bias ratios 0.99 and 0.995, GA with true bias labels, GA with peer-picking-mined labels
and PGD each raise accuracy on bias-conflicting test digits and unbiased accuracy by at
least 10 points over vanilla, averaged over 3 seeds; peer-picking finds conflicting
digits with high precision. JTT (3 identification epochs) raises conflicting accuracy over
vanilla too, by less at 0.995 where its error set holds the 5 conflicting digits only;
LfF runs in the same sweep for the README's table and is tested with more steps in
``test_lff_claims.py``."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from debiasbench.testing import claim_variant, run_sweep_file

SWEEP = Path(__file__).parent.parent / "benchmarks" / "unknown_bias_digits.yaml"
VARIANTS = ("ga_labels", "ga_mined", "pgd")
#: Claims the data no longer bears out since colored_digits' version 2 drew other colours
#: (so other conflicting digits: 11 at 0.99, 5 at 0.995): kept as expected failures, not
#: weakened, with what was measured (docs/results.md, "Coloured digits at 8x8").
NOT_ON_DATA_VERSION_2 = {
    (0.995, "pgd", "test_conflicting_acc"): "PGD gains 5 points at 0.995 (0.099 against 0.053); 13 on version 1",
    (0.995, "pgd", "test_unbiased_acc"): "PGD gains 4 points at 0.995 (0.203 against 0.161); 12 on version 1",
    (0.995, "ga_mined", "test_unbiased_acc"): "mined GA gains 9.8 points at 0.995 (0.259 against 0.161): "
                                              "peer-picking finds 4 of the 5 conflicting digits; 13 on version 1, "
                                              "where it found all 5",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Mean metrics per (bias ratio, variant) over the sweep's 3 seeds."""
    _, done = run_sweep_file(SWEEP, tmp_path_factory.mktemp("claims"))
    assert {r.status for r in done} == {"FINISHED"}
    groups: dict[tuple[float, str], list[dict[str, float]]] = {}
    for r in done:
        groups.setdefault((r.config.dataset_params["bias_ratio"], claim_variant(r.config)), []).append(r.metrics)
    assert all(len(runs) == 3 for runs in groups.values())
    return {key: {name: statistics.mean(m[name] for m in runs) for name in runs[0]}
            for key, runs in groups.items()}


@pytest.mark.slow
@pytest.mark.parametrize("bias_ratio", [0.99, 0.995])
@pytest.mark.parametrize("method", VARIANTS)
@pytest.mark.parametrize("metric", ["test_conflicting_acc", "test_unbiased_acc"])
def test_method_beats_vanilla_by_ten_points(results, bias_ratio, method, metric, request):
    # measured (docs/results.md, 2026-12-06, data version 2): conflicting accuracy at 0.99
    # vanilla 0.054, GA 0.222 / mined 0.228, PGD 0.185; at 0.995 vanilla 0.053, GA 0.217 /
    # mined 0.204, PGD 0.103
    if (bias_ratio, method, metric) in NOT_ON_DATA_VERSION_2:
        request.applymarker(pytest.mark.xfail(reason=NOT_ON_DATA_VERSION_2[bias_ratio, method, metric]))
    assert results[bias_ratio, method][metric] >= results[bias_ratio, "vanilla"][metric] + 0.10


@pytest.mark.slow
@pytest.mark.parametrize("bias_ratio", [0.99, 0.995])
def test_peer_picking_mines_conflicting_digits_with_high_precision(results, bias_ratio):
    mined = results[bias_ratio, "ga_mined"]
    # measured (data version 2): precision 1.0 at both ratios, recall 0.82 (0.99) and 0.8 (0.995)
    assert mined["mining_precision"] >= 0.8 and mined["mining_recall"] >= 0.5


@pytest.mark.slow
def test_pgd_puts_most_sampling_mass_on_the_few_conflicting_digits(results):
    for bias_ratio in (0.99, 0.995):
        assert results[bias_ratio, "pgd"]["pgd_conflicting_mass"] > 0.5  # 0.5-1% of the samples


@pytest.mark.slow
@pytest.mark.parametrize("bias_ratio,margin", [(0.99, 0.10), (0.995, 0.04)])
def test_jtt_beats_vanilla_with_an_error_set_of_conflicting_digits(results, bias_ratio, margin):
    # measured (docs/results.md, 2026-12-06): conflicting accuracy 0.161 vs 0.054 (0.99), 0.102 vs 0.053 (0.995)
    jtt, vanilla = results[bias_ratio, "jtt"], results[bias_ratio, "vanilla"]
    assert jtt["test_conflicting_acc"] >= vanilla["test_conflicting_acc"] + margin
    assert jtt["test_unbiased_acc"] > vanilla["test_unbiased_acc"]
    assert jtt["mining_precision"] >= 0.8  # the error set is the conflicting digits
