"""Sweep files: shared grids and per-method hparams expand into jobs, bad grids are one
line, and a multi-seed sweep ends with a mean ± standard error table."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.errors import ConfigError
from debiasbench.report import variant_labels
from debiasbench.sweep import load_sweep

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
    ("grid: {dataset_params.bias_ratio: [0.9, 1.5]}", "dataset_params.bias_ratio: expected a float in [0.0, 1.0], got 1.5"),
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
    assert "mean ± standard error over seeds" in result.output
    assert result.output.count("lr=0.01") == 2 + 1  # two runs, one summary row
    assert "±" in result.output.split("mean ± standard error over seeds")[1]


def test_runs_that_differ_only_by_dataset_or_method_defaults_have_no_variant(tmp_path):
    path = write(tmp_path, """
        methods: [vanilla, gradient_alignment, pgd]
        datasets: [colored_digits, synthetic_artifacts]
        seeds: [0, 1]
    """)
    assert set(variant_labels(load_sweep(path))) == {""}
