"""Every registered method resumes from a killed run's last checkpoint and ends exactly as
an uninterrupted run: weights, optimiser, schedule, every named random stream and the
method's own state travel in the checkpoint."""

from __future__ import annotations

import pytest

from debiasbench.core.registry import METHODS
from debiasbench.run.runner import run
from debiasbench.testing import crashing_once, one_thread, tiny_config, without_timing
from debiasbench.track.store import Tracker


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_a_resumed_run_of_every_method_ends_as_if_never_stopped(method, tracker, register, tmp_path):
    crashing = register(METHODS, crashing_once(METHODS.get(method), f"crashing_{method}", at_step=-1))
    config = tiny_config(method=crashing.name, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
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
