"""The claims of the GroupDRO and DFR papers, reproduced by running the sweep file the
README quotes (``benchmarks/baselines_digits.yaml``): on coloured digits at bias ratio
0.99 (8x8, 10 epochs, 3 seeds) GroupDRO (both samplers) and DFR raise accuracy on
bias-conflicting test digits over vanilla, averaged over the seeds; DFR, which refits the
last layer of exactly those vanilla models, gains on every seed, and gains clearly where
its held-out split holds minority groups (``val_bias_ratio`` 0.5)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from debiasbench.testing import run_sweep_file

SWEEP = Path(__file__).parent.parent / "benchmarks" / "baselines_digits.yaml"


def variant(config) -> str:
    name = f"groupdro_{config.hparams['sampling']}" if config.method == "groupdro" else config.method
    return name if config.dataset_params["val_bias_ratio"] is None else f"{name}_val0.5"


@pytest.fixture(scope="module")
def per_seed(tmp_path_factory):
    """test_conflicting_acc per variant and seed."""
    jobs, done = run_sweep_file(SWEEP, tmp_path_factory.mktemp("baseline_claims"))
    assert {r.status for r in done} == {"FINISHED"}
    # the vanilla jobs are DFR's base models: no base run is trained twice
    assert len(done) == len(jobs)
    results: dict[str, dict[int, float]] = {}
    for r in done:
        results.setdefault(variant(r.config), {})[r.config.seed] = r.metrics["test_conflicting_acc"]
    assert all(len(seeds) == 3 for seeds in results.values())
    return results


@pytest.mark.slow
@pytest.mark.parametrize("method,margin", [
    # measured (docs/results.md, 2026-12-06, data version 2): vanilla 0.085, GroupDRO uniform
    # 0.131, balanced 0.212, DFR 0.106; with a half-aligned validation split DFR 0.414 (its
    # vanilla base is the same model)
    pytest.param("groupdro_uniform", 0.06, marks=pytest.mark.xfail(
        reason="not on colored_digits' data version 2: uniform GroupDRO gains 4.6 points (0.131 against 0.085); "
               "10 on version 1")),
    ("groupdro_balanced", 0.10), ("dfr", 0.02), ("dfr_val0.5", 0.25)])
def test_method_raises_conflicting_accuracy_over_vanilla(per_seed, method, margin):
    mean = statistics.mean(per_seed[method].values())
    assert mean >= statistics.mean(per_seed["vanilla"].values()) + margin


@pytest.mark.slow
@pytest.mark.xfail(reason="not on colored_digits' data version 2: with the biased validation split DFR ties its "
                          "base on seed 2 (0.069 both; +0.009 and +0.054 on seeds 0 and 1, docs/results.md, "
                          "2026-12-06); version 1: ahead on every seed")
def test_dfr_gains_over_its_own_vanilla_base_on_every_seed(per_seed):
    assert all(per_seed["dfr"][seed] > per_seed["vanilla"][seed] for seed in (0, 1, 2))


@pytest.mark.slow
def test_dfr_gains_clearly_over_its_own_base_on_every_seed_with_minority_groups_in_validation(per_seed):
    assert all(per_seed["dfr_val0.5"][seed] > per_seed["vanilla_val0.5"][seed] + 0.2 for seed in (0, 1, 2))
