"""`make demo` installs only what the demo runs; the test targets add the test extras.

Read from what make would do on a machine without the virtual environment (``make -n -B``
with a virtual environment path that does not exist): nothing is installed here."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def planned(target: str, tmp_path: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def test_the_demo_installs_torch_and_the_package_without_the_test_extras(tmp_path):
    commands = planned("demo", tmp_path)
    assert "pip install --quiet torch==" in commands and "pip install --quiet -e ." in commands
    assert "[test]" not in commands and "[docs]" not in commands
    assert "debiasbench sweep benchmarks/demo.yaml" in commands


@pytest.mark.parametrize("target", ["test", "test-fast", "lint", "install"])
def test_the_test_targets_add_the_test_extras(target, tmp_path):
    assert "-e '.[test]'" in planned(target, tmp_path)
