"""Every registered method resumes from a killed run's last checkpoint and ends exactly as
an uninterrupted run: weights, optimiser, schedule, every named random stream and the
method's own state travel in the checkpoint."""

from __future__ import annotations

import pytest

from debiasbench.registry import METHODS
from debiasbench.runner import run
from debiasbench.testing import crash_resume_and_rerun, crashing_once, tiny_config, without_timing

#: 7 steps an epoch on the tiny data: the crash falls in the second of three epochs.
CRASH_AT_STEP = 9


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_a_resumed_run_of_every_method_ends_as_if_never_stopped(method, tracker, register, tmp_path):
    crashing = crashing_once(METHODS.get(method), f"crashing_{method}", at_step=CRASH_AT_STEP)
    register(METHODS, crashing)
    config = tiny_config(method=crashing.name, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    if config.epochs == 0:
        pytest.skip(f"{method} trains nothing by default (epochs: 0): nothing to resume")
    try:
        resumed, uninterrupted = crash_resume_and_rerun(config, tracker)
    except pytest.fail.Exception:
        crashing.crashed = True  # the method never called its loss: it trains no parameter
        result = run(config, tracker, progress=False)
        assert result.metrics["train_seconds"] == 0.0
        pytest.skip(f"{method} trains no parameter with its defaults: nothing to resume")
    assert without_timing(resumed.metrics) == without_timing(uninterrupted.metrics)
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`debiasbench.run_key` = '{config.run_key()}'")
    assert {r.data.tags.get("debiasbench.resumed_from_epoch") for r in runs if r.info.status == "FINISHED"} == {"1"}
