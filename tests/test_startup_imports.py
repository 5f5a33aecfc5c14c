"""What a command imports at its start, and how (``debiasbench.core.startup``): help and
version need neither torch nor MLflow; seeding without determinism leaves torch's
compiler alone; a run's imports are made with the garbage collector paused, which runs
again before the run trains. Each check runs in a fresh interpreter, since this one has
imported everything already. Nothing is timed here (``tools/measure_startup.py`` measures).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TINY_RUN = ["run", "--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=64",
            "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
            "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "epochs=1",
            "--set", "device=cpu", "--set", "log_model=false", "--no-progress"]


def last_line(script: str, *args: str, cwd=None) -> str:
    """The last line a fresh interpreter running ``script`` (with ``args``) prints."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          cwd=cwd)
    assert done.stdout.strip(), done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["--version"], ["run", "--threads", "0"],
                                  ["sweep", "benchmarks/demo.yaml", "--threads", "-1"]])
def test_help_version_and_a_refused_thread_count_import_neither_torch_nor_mlflow(argv):
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


def test_the_run_modules_are_those_of_the_store_in_use():
    loaded = last_line("""
        import sys
        from debiasbench.core.startup import import_run_modules

        store = "mlflow.store.tracking.sqlalchemy_store"
        import_run_modules("http://127.0.0.1:5000")
        server = store in sys.modules, "torch._dynamo" in sys.modules
        import_run_modules("sqlite:////tmp/mlflow.db")
        print(server, store in sys.modules)
    """)
    assert loaded == "(False, True) True"


#: A tiny run whose method notes whether the collector runs at each training step; at exit
#: it prints that, whether the collector is enabled and whether objects were frozen.
GC_PROBE = """
    import atexit, gc, sys
    from debiasbench.cli import main
    from debiasbench.core.registry import METHODS
    from debiasbench.methods.vanilla import Vanilla

    steps = []

    class Probe(Vanilla):
        name = "startup_probe"

        def loss(self, model, batch):
            steps.append(gc.isenabled())
            return super().loss(model, batch)

    METHODS.register(Probe)
    atexit.register(lambda: print(bool(steps) and all(steps), gc.isenabled(), gc.get_freeze_count() > 0))
    own = sys.argv[1] == "own"
    sys.argv[1:2] = []
    main(None if own else sys.argv[1:])
"""


@pytest.mark.parametrize("how,frozen", [("own", True), ("caller's", False)])
def test_a_run_imports_with_the_collector_paused_and_trains_with_it_running(how, frozen, tmp_path):
    """``main()`` reads this process's command line, so the process ends with the run and
    what its start imported is frozen; ``main(argv)``, as a caller's process calls it (a
    test, a notebook), freezes nothing: that process's objects must stay collectable."""
    state = last_line(GC_PROBE, "own" if how == "own" else "argv", *TINY_RUN, "--method", "startup_probe",
                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                      "--set", f"checkpoint_dir={tmp_path / 'checkpoints'}", cwd=tmp_path)
    assert state == f"True True {frozen}"


def test_a_job_process_imports_a_jobs_modules_and_freezes_only_where_it_is_ours():
    """``prepare_job_process``: a local worker or a Slurm job's process is the sweep's and
    freezes what it imported; a process another program reuses (Ray's workers) does not.
    The collector runs afterwards in both."""
    state = last_line("""
        import gc, sys
        from debiasbench.sweep.job_process import prepare_job_process

        prepare_job_process("sqlite:////tmp/mlflow.db", ours=False)
        imported = all(name in sys.modules for name in ("torch", "mlflow", "debiasbench.run.runner",
                                                        "torch._dynamo", "mlflow.store.tracking.sqlalchemy_store"))
        print(imported, gc.isenabled(), gc.get_freeze_count() > 0, end=" ")
        prepare_job_process(None, ours=True)
        print(gc.isenabled(), gc.get_freeze_count() > 0)
    """)
    assert state == "True True False True True"
