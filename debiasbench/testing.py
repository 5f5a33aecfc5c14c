"""Helpers for tests of the project and of plugins: tiny, fast settings for CPU runs, and
``check_method`` / ``check_dataset``, which check a plugin against the contracts the
runner relies on (see ``debiasbench.contracts``)."""

from __future__ import annotations

from typing import Any, Mapping

from debiasbench.config import RunConfig, merge, resolve_config
from debiasbench.contracts import TINY_PARAMS, check_dataset, check_method
from debiasbench.method import Method

__all__ = ["TINY_PARAMS", "TINY_SYNTHETIC", "TIMING_METRICS", "check_dataset", "check_method", "crashing_once",
           "tiny_config", "without_timing"]

#: synthetic_artifacts small enough for an end-to-end run in about a second on a CPU.
TINY_SYNTHETIC: dict[str, Any] = TINY_PARAMS["synthetic_artifacts"]


def tiny_config(**overrides: Any) -> RunConfig:
    """A validated CPU run config on tiny ``synthetic_artifacts`` (2 epochs, small_cnn)."""
    base = {"dataset": "synthetic_artifacts", "dataset_params": dict(TINY_SYNTHETIC), "epochs": 2,
            "batch_size": 32, "device": "cpu", "experiment": "tests"}
    return resolve_config(merge(base, overrides))


#: Metrics that measure time, not the result: left out when two runs are compared.
TIMING_METRICS = frozenset({"train_seconds", "samples_per_second", "prepare_seconds", "pgd_score_seconds"})


def without_timing(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` without the timings, for "same config, same result" comparisons."""
    return {k: v for k, v in metrics.items() if k not in TIMING_METRICS}


def crashing_once(base: type[Method], name: str, at_step: int) -> type[Method]:
    """A subclass of ``base`` whose loss raises ``RuntimeError("simulated crash")`` once,
    at training step ``at_step`` (counted over the whole run), like a killed process:
    run it, run it again and compare with an uninterrupted run to test resuming.
    Set ``crashed = True`` on the class to run it without the crash."""

    class CrashingOnce(base):  # type: ignore[valid-type, misc]
        crashed = False

        def loss(self, model, batch):
            step = self.ctx.extras.setdefault("steps", 0)
            self.ctx.extras["steps"] = step + 1
            if not type(self).crashed and step == at_step:
                type(self).crashed = True
                raise RuntimeError("simulated crash")
            return super().loss(model, batch)

    CrashingOnce.name = name
    CrashingOnce.__name__ = CrashingOnce.__qualname__ = f"CrashingOnce{base.__name__}"
    return CrashingOnce
