"""A command's start: the modules a run imports, brought in with the cyclic garbage
collector paused.

Importing torch, MLflow, ``torch._dynamo`` and MLflow's SQLAlchemy store creates about
600,000 objects that live as long as the process. While they are being created, Python's
collector makes a full collection whenever the objects it tracks have grown by a quarter,
and each traverses all of them: a tiny ``debiasbench run`` made 8 full collections, 1.05 s
of its 4.05 s (``tools/measure_startup.py``; docs/performance.md). ``long_lived_imports``
pauses the collector while they are imported; in the console script's own process
(``command_of_this_process``), whose objects at that point are modules and the command's
settings, it then freezes them (``gc.freeze``: left out of every later collection, as for a
server that forks workers), so they are not traversed again either. Elsewhere (a test or a
notebook calling the command in its own process) nothing is frozen: objects of that process
that later become garbage must stay collectable. The collector runs as usual once the block
has ended, so nothing a run allocates afterwards is kept from it.

A sweep's local worker processes and its Slurm jobs' processes are the sweep's for their
whole life: each imports a job's modules so when it starts, and freezes them
(``debiasbench.sweep.job_process``). Ray's worker processes are Ray's, reused for other tasks: a Ray
task imports as any code does, with the collector running.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from typing import Iterator

_freeze = False


@contextlib.contextmanager
def command_of_this_process(own: bool = True) -> Iterator[None]:
    """In the block runs the command of this process's own command line (``own``: the
    console script, ``python -m debiasbench.cli``), which the process ends with: what exists
    when a ``long_lived_imports`` block ends lives until then, and may be frozen."""
    global _freeze
    before, _freeze = _freeze, own
    try:
        yield
    finally:
        _freeze = before


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """The collector paused in the block; at its end, everything then tracked is frozen inside
    ``command_of_this_process``, and the collector is enabled again if it was
    (also where the block raises)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _freeze:
            gc.freeze()
        if enabled:
            gc.enable()


#: What a run imports later in any case: torch.optim's optimisers import ``torch._dynamo``
#: at their first step (``_use_grad_for_differentiable``) and in their other methods
#: (``torch._disable_dynamo``): 0.7-1 s, in torch 2.14.1 whether or not anything is compiled.
RUN_MODULES = ("torch._dynamo",)
#: What opening an MLflow database store (sqlite, PostgreSQL, ...) imports.
DATABASE_STORE_MODULES = ("mlflow.store.tracking.sqlalchemy_store",)


def import_run_modules(tracking_uri: str) -> None:
    """Import now what a run in this process will import (``RUN_MODULES``, and the database
    store's modules where ``tracking_uri`` is one), inside ``long_lived_imports``. Only
    imports: nothing is opened or created. A module this torch or MLflow does not have is
    skipped (it would not have been imported later either)."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    scheme = tracking_uri.split(":", 1)[0].lower() if "://" in tracking_uri else ""
    database = any(scheme.startswith(engine) for engine in DATABASE_ENGINES)  # as MLflow picks its store
    for name in RUN_MODULES + (DATABASE_STORE_MODULES if database else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
