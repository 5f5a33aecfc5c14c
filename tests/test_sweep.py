"""Sweep files: shared grids and per-method hparams expand into jobs, bad grids are one
line, and a multi-seed sweep ends with mean ± standard error tables."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.core.errors import ConfigError
from debiasbench.report.tables import variant_labels
from debiasbench.sweep.driver import load_sweep

TINY_DATA = "{n_train: 100, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}"


def write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shared_grid_and_per_method_hparams_make_every_combination(tmp_path):
    path = write(tmp_path, """
        methods: [vanilla, gradient_alignment, pgd]
        datasets: [colored_digits]
        seeds: [0, 1]
        grid:
          dataset_params.bias_ratio: [0.99, 0.995]
        hparams:
          gradient_alignment: {bias_source: [labels, mined], gamma: 1.0}
          pgd: {norm_p: 2.0}
    """)
    jobs = load_sweep(path)
    # vanilla 2 ratios x 2 seeds, GA 2 ratios x 2 sources x 2 seeds, PGD 2 x 2
    assert len(jobs) == 4 + 8 + 4
    ga = [j for j in jobs if j.method == "gradient_alignment"]
    assert {(j.hparams["bias_source"], j.dataset_params["bias_ratio"]) for j in ga} == {
        ("labels", 0.99), ("labels", 0.995), ("mined", 0.99), ("mined", 0.995)}
    assert all(j.hparams["gamma"] == 1.0 for j in ga)
    assert all(j.hparams["norm_p"] == 2.0 for j in jobs if j.method == "pgd")
    assert len({j.run_key() for j in jobs}) == len(jobs)


def test_variant_labels_name_what_differs_besides_the_seed(tmp_path):
    path = write(tmp_path, """
        methods: [vanilla, gradient_alignment]
        datasets: [colored_digits]
        seeds: [0, 1]
        grid: {dataset_params.bias_ratio: [0.99, 0.995]}
        hparams: {gradient_alignment: {bias_source: [labels, mined]}}
    """)
    jobs = load_sweep(path)
    labels = dict(zip([(j.method, j.seed, j.hparams.get("bias_source"), j.dataset_params["bias_ratio"])
                       for j in jobs], variant_labels(jobs)))
    assert labels[("vanilla", 0, None, 0.99)] == "bias_ratio=0.99"
    assert labels[("gradient_alignment", 1, "mined", 0.995)] == "bias_ratio=0.995 bias_source=mined"


@pytest.mark.parametrize("body,message", [
    ("hparams: {pgd: {norm_p: 2.0}}", "hparams method (not in methods) 'pgd'"),
    ("hparams: {vanilla: {gamma: [1.0]}}", "hparams.gamma"),
    ("hparams: {vanilla: [1, 2]}", "hparams.vanilla: expected a mapping"),
    ("grid: {dataset_params.bias_ratio: []}", "grid.dataset_params.bias_ratio: an empty list leaves no job"),
    ("grid: {dataset_params.bias_ratio: [0.9, 1.5]}",
     "dataset_params.bias_ratio: expected a float in [0.0, 1.0], got 1.5"),
    ("grid: {learning_rate: [0.1]}", "learning_rate"),
])
def test_bad_grids_are_config_errors_and_one_line_on_the_command_line(tmp_path, body, message):
    path = write(tmp_path, "methods: [vanilla]\ndatasets: [colored_digits]\n" + body + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_sweep(path)
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_sweep_over_seeds_ends_with_mean_and_standard_error(tmp_path, tracking_uri):
    path = write(tmp_path, f"""
        methods: [vanilla]
        datasets: [synthetic_artifacts]
        seeds: [0, 1]
        grid: {{lr: [0.001, 0.01]}}
        overrides:
          epochs: 1
          device: cpu
          dataset_params: {TINY_DATA}
    """)
    result = CliRunner().invoke(app, ["sweep", str(path), "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "synthetic_artifacts (small_cnn): test metrics, mean ± standard error over 2 seeds" in result.output
    table = result.output.split("over 2 seeds")[1].split("Reading:")[0]
    assert table.count("lr=0.01") == 1  # one row of the two seeds
    assert "±" in result.output.split("mean ± standard error over 2 seeds")[1]


def test_runs_that_differ_only_by_dataset_or_method_defaults_have_no_variant(tmp_path):
    path = write(tmp_path, """
        methods: [vanilla, gradient_alignment, pgd]
        datasets: [colored_digits, synthetic_artifacts]
        seeds: [0, 1]
    """)
    assert set(variant_labels(load_sweep(path))) == {""}


RANDOM_SEARCH = """
    methods: [vanilla, rrclarc, pgd]
    datasets: [synthetic_artifacts]
    seeds: [0, 1]
    n_trials: 4
    overrides: {epochs: 2}
    hparams:
      pgd: {norm_p: [1.0, 2.0], power: 1.5}
"""


def test_random_search_gives_the_same_jobs_from_the_same_file_twice(tmp_path):
    path = write(tmp_path, RANDOM_SEARCH)
    first, second = load_sweep(path), load_sweep(path)
    assert [j.run_key() for j in first] == [j.run_key() for j in second]
    assert len(first) == 3 * 4 * 2
    other_seed = write(tmp_path, RANDOM_SEARCH + "    trial_seed: 1\n")
    assert {j.run_key() for j in load_sweep(other_seed)} != {j.run_key() for j in first}


def test_random_search_trial_zero_is_the_defaults_and_draws_stay_in_the_declared_spaces(tmp_path):
    from debiasbench.core.registry import METHODS

    jobs = load_sweep(write(tmp_path, RANDOM_SEARCH))
    rrclarc = [j for j in jobs if j.method == "rrclarc" and j.seed == 0]
    defaults = {name: spec.default for name, spec in METHODS.get("rrclarc").hparams.items()}
    assert rrclarc[0].hparams == defaults and rrclarc[0].lr == 1e-3 and rrclarc[0].epochs == 2
    assert len({j.hparams["lambda"] for j in rrclarc}) == 4
    assert all(1.0 <= j.hparams["lambda"] <= 1e8 and 1e-4 <= j.lr <= 1e-2 for j in rrclarc[1:])
    pgd = [j for j in jobs if j.method == "pgd"]
    assert {j.hparams["power"] for j in pgd} == {1.5}  # a scalar fixes the value
    assert {j.hparams["norm_p"] for j in pgd} <= {1.0, 2.0}  # a list is drawn from
    assert all(j.epochs == 2 for j in jobs)  # a key in overrides is not drawn
    # every seed of a trial shares its hparams, so selection can average over seeds
    by_seed = {seed: [(j.method, j.lr, tuple(sorted(j.hparams.items()))) for j in jobs if j.seed == seed]
               for seed in (0, 1)}
    assert by_seed[0] == by_seed[1]


@pytest.mark.parametrize("body,message", [
    ("n_trials: 0", "n_trials: expected an integer >= 1, got 0"),
    ("n_trials: two", "n_trials: expected an integer >= 1, got 'two'"),
    ("trial_seed: 3", "trial_seed: only used with n_trials"),
    ("datasets: [{colored_digits: 8}]", "datasets: expected a name or {name: {param: value}}"),
])
def test_bad_random_search_settings_are_one_line(tmp_path, body, message):
    datasets = "" if body.startswith("datasets") else "datasets: [colored_digits]\n"
    text = "methods: [vanilla]\n" + datasets + body + "\n"
    result = CliRunner().invoke(app, ["sweep", str(write(tmp_path, text)), "--dry-run"])
    assert result.exit_code == 2 and message in result.output


def test_a_dataset_entry_can_carry_its_own_parameters(tmp_path):
    jobs = load_sweep(write(tmp_path, """
        methods: [vanilla]
        datasets: [{colored_digits: {image_size: 8}}, synthetic_artifacts]
    """))
    assert [(j.dataset, j.dataset_params["image_size"]) for j in jobs] == [
        ("colored_digits", 8), ("synthetic_artifacts", 32)]


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("benchmarks/*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_sweep_file_is_valid(path):
    assert len(load_sweep(path)) > 0
