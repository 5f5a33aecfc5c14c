"""Every registered method resumes from a killed run's last checkpoint and ends exactly as
an uninterrupted run: weights, optimiser, schedule, every named random stream and the
method's own state travel in the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from debiasbench.contract.config import RunConfig, merge, resolve_config
from debiasbench.core.registry import METHODS
from debiasbench.run.runner import run
from debiasbench.testing import crashing_once, one_thread, tiny_config, without_timing
from debiasbench.track.store import Tracker

#: Methods with state of their own beyond the model and optimiser, resumed on colored_digits
#: (8x8), where that state shapes every step: gradient alignment's smoothed gradient sums,
#: GroupDRO's group weights (eta 0.1 moves them fast), LfF's biased model and loss averages.
#: The value is what the run config changes for the method.
OWN_STATE: dict[str, dict[str, Any]] = {
    "gradient_alignment": {},
    "groupdro": {"hparams": {"eta": 0.1}},
    "lff": {},
}

#: Methods resumed in the everyday lane (`make test-fast`); the rest are marked slow.
FAST = {"vanilla"}


def resume_config(method: str, name: str, checkpoint_dir: Path) -> RunConfig:
    """Three epochs of ``name`` (the crashing subclass of ``method``) on tiny data."""
    if method in OWN_STATE:
        base = {"method": name, "dataset": "colored_digits", "dataset_params": {"image_size": 8},
                "device": "cpu", "epochs": 3, "log_model": False, "experiment": "tests",
                "checkpoint_dir": str(checkpoint_dir)}
        return resolve_config(merge(base, OWN_STATE[method]))
    return tiny_config(method=name, epochs=3, checkpoint_dir=str(checkpoint_dir))


@pytest.mark.parametrize("method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(METHODS.names())])
def test_a_resumed_run_of_every_method_ends_as_if_never_stopped(method, tracker, register, tmp_path):
    crashing = register(METHODS, crashing_once(METHODS.get(method), f"crashing_{method}", at_step=-1))
    config = resume_config(method, crashing.name, tmp_path / "ckpt")
    if config.epochs == 0:
        pytest.skip(f"{method} trains nothing by default (epochs: 0): nothing to resume")
    with one_thread():
        crashing.crashed = True
        uninterrupted = run(config, Tracker(tracker.uri, "uninterrupted"), progress=False)
        if crashing.steps_taken == 0:
            pytest.skip(f"{method} trains no parameter with its defaults: nothing to resume")
        # the crash falls two steps before the end: in the last epoch, after two checkpoints
        crashing.crashed, crashing.at_step = False, crashing.steps_taken - 2
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(config, tracker, progress=False)
        resumed = run(config, tracker, progress=False)
    assert without_timing(resumed.metrics) == without_timing(uninterrupted.metrics)
    stored = tracker.client.get_run(resumed.run_id)
    assert stored.data.tags["debiasbench.resumed_from_epoch"] == str(config.epochs - 1)
    # the crashed run stays in the store as FAILED beside the resumed one
    ours = [r for r in tracker.client.search_runs([tracker.experiment_id])
            if r.data.params.get("method") == crashing.name]
    assert sorted(r.info.status for r in ours) == ["FAILED", "FINISHED"]
