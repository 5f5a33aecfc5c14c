"""Every bundled dataset's defaults show something, and unsuited pairs are refused.

A new user's first run uses the defaults: vanilla must learn the task (clean accuracy
well above chance) while the shortcut stays visible, or every method's result is noise.
"""

from __future__ import annotations

import dataclasses

import pytest

from debiasbench.contract.config import resolve_config
from debiasbench.core.errors import Unsuited
from debiasbench.run.runner import run
from debiasbench.sweep.driver import load_sweep
from debiasbench.testing import one_thread


@pytest.mark.slow
def test_vanilla_learns_the_digits_and_takes_the_colour_shortcut_at_colored_digits_defaults(tracker):
    config = resolve_config({"method": "vanilla", "dataset": "colored_digits", "device": "cpu"})
    with one_thread():
        metrics = run(config, tracker, progress=False).metrics
    assert metrics["test_clean_acc"] > 0.4  # chance: 0.1
    assert metrics["test_biased_acc"] - metrics["test_conflicting_acc"] > 0.3


@pytest.mark.slow
def test_vanilla_learns_the_shapes_and_takes_the_artifact_shortcut_at_synthetic_artifacts_defaults(tracker):
    config = resolve_config({"method": "vanilla", "dataset": "synthetic_artifacts", "device": "cpu"})
    with one_thread():
        metrics = run(config, tracker, progress=False).metrics
    assert metrics["test_clean_acc"] > 0.7  # chance: 0.25
    # The patch on every image pulls the other classes' images to the attacked class.
    assert metrics["test_clean_acc"] - metrics["test_biased_acc"] > 0.15


def test_gradient_alignment_is_refused_where_one_class_holds_every_conflicting_sample():
    with pytest.raises(Unsuited, match="unsuited to dataset 'synthetic_artifacts'.*allow_unsuited"):
        resolve_config({"method": "gradient_alignment", "dataset": "synthetic_artifacts"})
    allowed = resolve_config({"method": "gradient_alignment", "dataset": "synthetic_artifacts",
                              "allow_unsuited": True})
    plain = resolve_config({"method": "gradient_alignment", "dataset": "colored_digits"})
    assert allowed.allow_unsuited and not plain.allow_unsuited
    # Asking for an unsuited run does not change what the run computes.
    assert allowed.run_key() == dataclasses.replace(allowed, allow_unsuited=False).run_key()


def test_a_real_dataset_with_an_injected_artifact_is_unsuited_to_gradient_alignment_and_natural_bias_is_not():
    from debiasbench.core.registry import DATASETS, METHODS

    ga, isic, celeba = METHODS.get("gradient_alignment"), DATASETS.get("isic"), DATASETS.get("celeba")
    assert ga.unsuited({}, isic, {"artifact": "patch"})
    assert not ga.unsuited({}, isic, {"artifact": "none"})
    assert not ga.unsuited({}, celeba, {})


def test_sweep_leaves_unsuited_pairs_out_and_says_why_unless_asked(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [vanilla, gradient_alignment]\n"
                     "datasets: [colored_digits, synthetic_artifacts]\n")
    skipped: list[str] = []
    jobs = load_sweep(sweep, skipped)
    assert sorted((j.method, j.dataset) for j in jobs) == [
        ("gradient_alignment", "colored_digits"), ("vanilla", "colored_digits"), ("vanilla", "synthetic_artifacts")]
    assert len(skipped) == 1 and "'gradient_alignment' is unsuited to dataset 'synthetic_artifacts'" in skipped[0]
    sweep.write_text(sweep.read_text() + "overrides: {allow_unsuited: true}\n")
    assert len(load_sweep(sweep, [])) == 4
