"""A sweep's job processes: a local worker or a Slurm job's process imports, when it
starts, what its jobs will import, with the garbage collector paused
(``debiasbench.core.startup``), before its first job."""

from __future__ import annotations

from debiasbench.core.startup import command_of_this_process, import_run_modules, long_lived_imports


def prepare_job_process(tracking_uri: str | None, ours: bool) -> None:
    """In a process that will run sweep jobs (``execute_job``), import now, inside
    ``long_lived_imports``, what its first job would import: torch, MLflow, the runner and
    the tracker, and ``import_run_modules`` for the store at ``tracking_uri`` (None: the run
    modules only). ``ours``: the process is the sweep's for its whole life (a local worker
    process, a Slurm job's process), so what exists at the end, modules, is frozen; a process
    that another program owns and reuses (a Ray worker) freezes nothing. A failed import is
    left for the job to meet, where it is reported as its failure."""
    with command_of_this_process(ours), long_lived_imports():
        try:
            import mlflow  # noqa: F401
            import torch  # noqa: F401

            import debiasbench.run.runner  # noqa: F401
            import debiasbench.track.store  # noqa: F401

            import_run_modules(tracking_uri or "")
        except Exception:  # ImportError, or a broken install: the job reports it
            pass
