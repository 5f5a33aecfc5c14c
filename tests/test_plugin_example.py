"""A third-party package adds a method and a dataset without touching debiasbench:
examples/plugin, installed with pip, shows up in every command.

The plugin is installed with pip (no build isolation, no dependencies: nothing is
downloaded) into a temporary folder put on PYTHONPATH, not into the project's virtual
environment, so other processes sharing it never see the plugin and nothing has to be
uninstalled; pip builds from a copy of the source, so the repository gets no build/ or
egg-info. The registry reads entry points once per process, so every check runs the
command in a subprocess. The plugin's own tests (examples/plugin/tests, outside the root
testpaths) run here too, against the installed package.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from debiasbench.testing import install_plugin, run_cli

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"
pytestmark = pytest.mark.slow  # subprocesses importing torch and MLflow: seconds each

TINY = {"n_train": 120, "n_val": 40, "n_test": 60, "image_size": 12}
TINY_SET = [arg for key, value in TINY.items() for arg in ("--set", f"dataset_params.{key}={value}")]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a process that has the plugin installed."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (the test extra has it): it builds the plugin offline")
    root = tmp_path_factory.mktemp("plugin")
    source, site = root / "source", root / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    return install_plugin(source, site, "examples/plugin")


debiasbench = run_cli  # debiasbench(env, cwd, *args): the command in a new process, asserted to exit 0


def finished_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(ids) if r.info.status == "FINISHED"]


def test_methods_and_datasets_list_the_plugin(plugin_env, tmp_path):
    methods = debiasbench(plugin_env, tmp_path, "methods").stdout
    assert "focal_loss" in methods and "gamma" in methods and "vanilla" in methods
    datasets = debiasbench(plugin_env, tmp_path, "datasets").stdout
    assert "colored_stripes" in datasets and "bias_ratio" in datasets


def test_run_with_the_plugin_method_and_dataset_logs_metrics(plugin_env, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = debiasbench(plugin_env, tmp_path, "run", "--method", "focal_loss", "--dataset", "colored_stripes",
                       "--set", "epochs=1", "--set", "device=cpu", "--set", "hparams.gamma=1.0",
                       *TINY_SET, "--tracking-uri", uri)
    assert "test_conflicting_acc" in proc.stdout
    [run] = finished_runs(uri)
    assert run.data.params["method"] == "focal_loss" and run.data.params["hparams.gamma"] == "1.0"
    assert {"test_acc", "test_clean_acc", "test_biased_acc", "test_conflicting_acc"} <= set(run.data.metrics)


@pytest.fixture(scope="module")
def swept_store(plugin_env, tmp_path_factory) -> tuple[str, Path, subprocess.CompletedProcess]:
    """A store filled by a sweep of vanilla and the plugin's method on the plugin's dataset."""
    folder = tmp_path_factory.mktemp("sweep")
    sweep = folder / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""
        methods: [vanilla, focal_loss]
        datasets: [{{colored_stripes: {TINY}}}]
        seeds: [0]
        overrides: {{epochs: 1, device: cpu}}
        hparams:
          focal_loss: {{gamma: [1.0, 2.0]}}
    """))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, folder, debiasbench(plugin_env, folder, "sweep", str(sweep), "--tracking-uri", uri)


def test_sweep_runs_the_plugin_method(swept_store):
    uri, _, proc = swept_store
    assert proc.stderr.count("finished in") == 3, proc.stdout + proc.stderr
    runs = finished_runs(uri)
    assert sorted(r.data.params["method"] for r in runs) == ["focal_loss", "focal_loss", "vanilla"]


def test_leaderboard_lists_the_plugin_method(swept_store, plugin_env):
    uri, folder, _ = swept_store
    proc = debiasbench(plugin_env, folder, "leaderboard", "--tracking-uri", uri, "--out", str(folder / "board"))
    assert "focal_loss" in proc.stdout
    summary = (folder / "board" / "summary.csv").read_text()
    assert "focal_loss" in summary and "colored_stripes" in summary


def test_the_plugins_own_tests_pass_installed(plugin_env, tmp_path):
    """examples/plugin/tests against the installed package (its entry-point test included)."""
    env = {k: v for k, v in plugin_env.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           "--rootdir", str(PLUGIN), "-c", str(PLUGIN / "pyproject.toml"),
                           "-o", "pythonpath=", str(PLUGIN / "tests")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
