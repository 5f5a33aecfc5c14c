"""Helpers for tests of the project and of plugins: tiny, fast settings for CPU runs, and
``check_method`` / ``check_dataset``, which check a plugin against the contracts the
runner relies on (see ``debiasbench.testing.contracts``)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch

from debiasbench.contract.config import RunConfig, merge, resolve_config
from debiasbench.testing.contracts import TINY_PARAMS, ClassWeightsIgnoredWarning, check_dataset, check_method
from debiasbench.contract.method import Method
from debiasbench.run.runner import PHASE_SECONDS

if TYPE_CHECKING:
    from debiasbench.run.runner import RunResult
    from debiasbench.sweep.launchers import JobResult
    from debiasbench.track.store import Tracker

__all__ = ["SMALL_IMAGES", "TINY_PARAMS", "TINY_SYNTHETIC", "TIMING_METRICS", "ClassWeightsIgnoredWarning",
           "bare_training_loop", "check_dataset", "check_method", "claim_variant", "crash_resume_and_rerun",
           "crashing_once", "one_thread", "run_sweep_file", "tiny_config", "without_timing"]

#: synthetic_artifacts small enough for an end-to-end run in about a second on a CPU.
TINY_SYNTHETIC: dict[str, Any] = TINY_PARAMS["synthetic_artifacts"]
#: synthetic_artifacts at 32x32, the smallest size every architecture of the registry takes
#: (vgg16 and resnet18 downsample five times), with as few images as a one-epoch run needs.
SMALL_IMAGES: dict[str, Any] = {"n_train": 48, "n_val": 16, "n_test": 16, "image_size": 32, "patch_size": 5}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block: tiny images (8x8 digits) gain nothing
    from more, and on a loaded 2-core machine spinning threads made such runs ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_sweep_file(path: str | Path, folder: Path) -> tuple[list[RunConfig], list[JobResult]]:
    """Every job of the sweep file at ``path``, on one thread, into a fresh sqlite store and
    checkpoint folder under ``folder`` (a claim test runs the file the README quotes).
    Returns the jobs and their results."""
    from debiasbench.sweep.driver import load_sweep, run_sweep

    jobs = [dataclasses.replace(job, checkpoint_dir=str(folder / "ckpt")) for job in load_sweep(path)]
    with one_thread():
        return jobs, run_sweep(jobs, f"sqlite:///{folder / 'mlflow.db'}", log=lambda line: None)


def claim_variant(config: RunConfig) -> str:
    """How claim tests name a run of an unknown-bias sweep: ``ga_labels`` / ``ga_mined`` for
    gradient alignment by its bias source, the method's name otherwise."""
    if config.method == "gradient_alignment":
        return f"ga_{config.hparams['bias_source']}"
    return config.method


def crash_resume_and_rerun(config: RunConfig, tracker: Tracker) -> tuple[RunResult, RunResult]:
    """Run ``config`` of a ``crashing_once`` method until it crashes, run it again (it resumes
    from its last checkpoint), and run it uninterrupted into another experiment of the same
    store: returns (resumed, uninterrupted), whose metrics should be equal."""
    import pytest

    from debiasbench.run.runner import run
    from debiasbench.track.store import Tracker

    with one_thread():
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(config, tracker, progress=False)
        resumed = run(config, tracker, progress=False)
        uninterrupted = run(config, Tracker(tracker.uri, "other"), progress=False)
    return resumed, uninterrupted


def tiny_config(**overrides: Any) -> RunConfig:
    """A validated CPU run config on tiny ``synthetic_artifacts`` (2 epochs, small_cnn).

    ``allow_unsuited`` is set: tests of a method's mechanics run it on the tiny data even
    where its assumptions exclude the pairing (gradient alignment)."""
    base = {"dataset": "synthetic_artifacts", "dataset_params": dict(TINY_SYNTHETIC), "epochs": 2,
            "batch_size": 32, "device": "cpu", "experiment": "tests", "allow_unsuited": True}
    return resolve_config(merge(base, overrides))


def bare_training_loop(config: RunConfig, dataset: Any) -> None:
    """The baseline a run's cost is measured against: plain PyTorch training of the run's
    model on ``dataset``'s training split (the same batches, Adam at the run's ``lr``), no
    method, evaluation, tracking or checkpoints (``tests/benchmarks``, ``tools/measure_phases.py``)."""
    import torch.nn.functional as F

    from debiasbench.data.dataset import Loader
    from debiasbench.models.build import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.model, dataset.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for batch in Loader(dataset.splits["train"], config.batch_size, torch.Generator().manual_seed(0)):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch.x), batch.y).backward()
            optimizer.step()


#: Metrics that measure time, not the result: left out when two runs are compared (and
#: every phase's ``seconds/<phase>``).
TIMING_METRICS = frozenset({"train_seconds", "samples_per_second", "prepare_seconds", "pgd_score_seconds"})


def without_timing(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` without the timings, for "same config, same result" comparisons."""
    return {k: v for k, v in metrics.items() if k not in TIMING_METRICS and not k.startswith(PHASE_SECONDS)}


def crashing_once(base: type[Method], name: str, at_step: int) -> type[Method]:
    """A subclass of ``base`` whose loss raises ``RuntimeError("simulated crash")`` once,
    at training step ``at_step`` (counted over the whole run), like a killed process:
    run it, run it again and compare with an uninterrupted run to test resuming.
    Set ``crashed = True`` on the class to run it without the crash; ``steps_taken`` is
    the number of steps the last run took (to place the crash, set ``at_step``)."""

    class CrashingOnce(base):  # type: ignore[valid-type, misc]
        crashed = False
        steps_taken = 0

        def loss(self, model, batch):
            step = self.ctx.extras.setdefault("steps", 0)
            self.ctx.extras["steps"] = type(self).steps_taken = step + 1
            if not type(self).crashed and step == type(self).at_step:
                type(self).crashed = True
                raise RuntimeError("simulated crash")
            return super().loss(model, batch)

    CrashingOnce.name = name
    CrashingOnce.at_step = at_step
    CrashingOnce.__name__ = CrashingOnce.__qualname__ = f"CrashingOnce{base.__name__}"
    return CrashingOnce


def install_plugin(source: Path, target: Path, what: str = "the plugin") -> dict[str, str]:
    """Install the package at ``source`` into the folder ``target`` offline (no index, no
    build isolation, no dependencies) and return the environment of a process that sees
    it: this one's, with ``PYTHONPATH`` set to ``target`` and no ``MLFLOW_TRACKING_URI`` or
    ``PYTHONWARNINGS``. Test an installed plugin in a new process: the registries read
    entry points once per process."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"pip install of {what} failed:\n{proc.stdout}\n{proc.stderr}")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH", "PYTHONWARNINGS")}
    return {**env, "PYTHONPATH": str(target)}


def run_cli(env: Mapping[str, str], cwd: Path, *args: str) -> Any:
    """``debiasbench <args>`` in a new process with ``env``; the completed process, after
    asserting that it exited 0 (its output is in the message where it did not)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "debiasbench.cli", *args], capture_output=True, text=True,
                          env=dict(env), cwd=cwd)
    assert proc.returncode == 0, f"debiasbench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc

