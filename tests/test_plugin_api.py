"""The public plugin API, end to end, through a throwaway package: a method whose logs are
Python floats, an architecture declared in the ``debiasbench.models`` entry-point group,
and an entry point that reuses a built-in model name (warned about, and the built-in kept).

As in tests/test_plugin_example.py, the package is installed with pip (no build
isolation, no dependencies, no index) into a temporary folder put on PYTHONPATH, never
into the project's environment, so nothing has to be uninstalled and other processes never
see it; the registry reads entry points once per process, so every check is a subprocess.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

from debiasbench.testing import TINY_SYNTHETIC, install_plugin, run_cli

pytestmark = pytest.mark.slow  # subprocesses importing torch and MLflow: seconds each

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "debiasbench-api-probe"
version = "0.0.1"
dependencies = ["debiasbench"]

[project.entry-points."debiasbench.methods"]
float_focal = "api_probe.method:FloatFocal"

[project.entry-points."debiasbench.models"]
probe_net = "api_probe.nets:probe_net"
small_cnn = "api_probe.nets:impostor_cnn"

[tool.setuptools]
packages = ["api_probe"]
"""

METHOD = '''
"""Focal loss whose logs are plain Python floats."""

import torch.nn.functional as F

from debiasbench.contract.method import Method


class FloatFocal(Method):
    name = "float_focal"
    description = "Focal loss (gamma 2) logging Python floats."

    def loss(self, model, batch):
        log_pt = F.log_softmax(model(batch.x), dim=1).gather(1, batch.y[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()).clamp_min(1e-12).pow(2.0) * log_pt).mean()
        return loss, {"focal": float(loss.detach())}
'''

NETS = '''
"""Architectures for debiasbench's models group."""

from collections import OrderedDict

from torch import nn


def probe_net(num_classes, in_channels=3, input_shape=None):
    """A two-layer probe network from a plugin.

    The latent layer is ``features``."""
    net = nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(8, num_classes),
    ))
    return net, "features"


def impostor_cnn(num_classes, in_channels=3):
    """Declared under a built-in's name: must never replace it."""
    raise AssertionError("the plugin replaced the built-in small_cnn")
'''

TINY_SET = [arg for key, value in TINY_SYNTHETIC.items() for arg in ("--set", f"dataset_params.{key}={value}")]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a process that has the probe package installed."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (the test extra has it): it builds the plugin offline")
    root = tmp_path_factory.mktemp("api_probe")
    source, site = root / "source", root / "site"
    (source / "api_probe").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "api_probe" / "__init__.py").write_text("")
    (source / "api_probe" / "method.py").write_text(textwrap.dedent(METHOD))
    (source / "api_probe" / "nets.py").write_text(textwrap.dedent(NETS))
    return install_plugin(source, site, "the probe plugin")


debiasbench = run_cli  # debiasbench(env, cwd, *args): the command in a new process, asserted to exit 0


DUPLICATE = ("DuplicateRegistrationWarning: model 'small_cnn' registered twice: entry point "
             "api_probe.nets:impostor_cnn ignored, keeping debiasbench.models.architectures:small_cnn")


def test_models_lists_the_plugin_architecture_and_warns_about_the_reused_name(plugin_env, tmp_path):
    proc = debiasbench(plugin_env, tmp_path, "models")
    lines = proc.stdout.splitlines()
    assert "probe_net: A two-layer probe network from a plugin." in lines
    assert "small_cnn: Three conv-BN-ReLU blocks (32/64/128 channels): fast enough for CPU tests." in lines  # kept
    assert DUPLICATE in proc.stderr


def test_run_with_the_plugin_method_and_architecture_finishes_and_logs_the_float_logs(plugin_env, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = debiasbench(plugin_env, tmp_path, "run", "--method", "float_focal", "--model", "probe_net",
                       "--dataset", "synthetic_artifacts", "--set", "epochs=1", "--set", "device=cpu",
                       "--set", "allow_unsuited=true", *TINY_SET, "--tracking-uri", uri)
    assert "test_conflicting_acc" in proc.stdout
    assert DUPLICATE in proc.stderr
    client = MlflowClient(uri)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "float_focal" and run.data.params["model"] == "probe_net"
    assert "epoch/train_focal" in run.data.metrics



def test_runs_of_a_plugin_no_longer_installed_stay_on_the_leaderboard_marked_not_installed(plugin_env, tmp_path):
    """Runs of the plugin's method, then the plugin gone (a process that does not see its
    folder, as after ``pip uninstall``): the leaderboard lists them, marked in the printed
    table, README.md, summary.csv and index.html, with a line naming the method."""
    import pandas as pd

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for method in ("float_focal", "vanilla"):
        debiasbench(plugin_env, tmp_path, "run", "--method", method, "--dataset", "synthetic_artifacts",
                    "--set", "epochs=1", "--set", "device=cpu", "--set", "log_model=false",
                    "--set", "allow_unsuited=true", *TINY_SET, "--tracking-uri", uri)
    uninstalled = {k: v for k, v in plugin_env.items() if k != "PYTHONPATH"}
    assert "float_focal" not in debiasbench(uninstalled, tmp_path, "methods").stdout
    proc = debiasbench(uninstalled, tmp_path, "leaderboard", "--tracking-uri", uri, "--out", "board")
    printed = proc.stdout.splitlines()
    [row] = [i for i, line in enumerate(printed) if "float_focal" in line and "synthetic_artifacts" in line]
    assert "(not installed)" in printed[row + 1].split("│")[1]  # under its name, in the method column
    assert sum("(not installed)" in line for line in printed) == 1  # vanilla is not marked
    assert "Not installed: float_focal. No installed plugin registers these methods" in " ".join(printed)
    board = tmp_path / "board"
    assert pd.read_csv(board / "summary.csv").groupby("method")["installed"].all().to_dict() == {
        "float_focal": False, "vanilla": True}
    readme = (board / "README.md").read_text()
    assert "| float_focal (not installed) |" in readme and "| vanilla (not installed)" not in readme
    assert "Not installed: float_focal." in readme
    page = (board / "index.html").read_text()
    assert '<span class="not-installed"' in page and "Not installed: float_focal." in page
