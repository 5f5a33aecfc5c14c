"""What a command imports at its start: help and version need neither torch nor MLflow;
seeding without determinism leaves torch's compiler alone. Each check runs in a fresh
interpreter, since this one has imported everything already. Nothing is timed here
(``tools/measure_startup.py`` measures).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

def last_line(script: str, *args: str, cwd=None) -> str:
    """The last line a fresh interpreter running ``script`` (with ``args``) prints."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          cwd=cwd)
    assert done.stdout.strip(), done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["--version"]])
def test_help_and_version_import_neither_torch_nor_mlflow(argv):
    loaded = last_line("""
        import sys
        from debiasbench.cli import main
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
        print(sorted(name for name in ("torch", "mlflow", "numpy") if name in sys.modules))
    """, *argv)
    assert loaded == "[]"


def test_seeding_without_determinism_does_not_import_torchs_compiler_and_switches_it_back_off():
    states = last_line("""
        import sys
        import torch
        from debiasbench.run.runner import seed_everything

        seed_everything(0, False)
        off = "torch._inductor" in sys.modules, torch.are_deterministic_algorithms_enabled()
        seed_everything(0, True)
        on = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        seed_everything(0, False)
        print(off, on, torch.are_deterministic_algorithms_enabled())
    """)
    assert states == "(False, False) (True, True) False"
