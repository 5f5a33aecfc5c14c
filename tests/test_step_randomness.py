"""Per-step random draws of a method: ``ctx.random`` / ``ctx.sample`` give a new draw every
step, the same draws in two identical runs and after a resume; ``ctx.init``, the one-off
block that draws the same every time, is loud when a step enters it again."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.distributions import Beta

from debiasbench.core.randomness import RandomStreams, RepeatedInitError, RepeatedInitWarning
from debiasbench.core.registry import METHODS
from debiasbench.run.runner import run
from debiasbench.testing import crashing_once, one_thread, tiny_config, without_timing
from debiasbench.track.store import Tracker
from debiasbench.methods.vanilla import Vanilla


class BetaProbe(Vanilla):
    """Cross-entropy scaled by a Beta(0.2, 0.2) weight drawn once per step (as mixup draws
    its mixing weight); ``draws`` records them."""

    name = "beta_probe"
    draws: list[float] = []

    def loss(self, model, batch):
        lam = self.ctx.sample("beta_probe.lambda", Beta(torch.tensor(0.2), torch.tensor(0.2)))
        type(self).draws.append(float(lam))
        loss, logs = super().loss(model, batch)
        return loss * (0.5 + lam), logs


class InitPerStep(Vanilla):
    """The trap: a per-step draw inside the one-off ``ctx.init`` block."""

    name = "init_per_step"

    def loss(self, model, batch):
        with self.ctx.init("init_per_step.lambda"):
            lam = Beta(torch.tensor(0.2), torch.tensor(0.2)).sample()
        loss, logs = super().loss(model, batch)
        return loss * lam, logs


def test_random_blocks_draw_anew_on_each_entry_reproducibly_and_leave_the_global_state_alone():
    streams = RandomStreams(0, torch.device("cpu"))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    draws = []
    for _ in range(3):
        with streams.random("m.lambda"):
            draws.append(Beta(torch.tensor(0.2), torch.tensor(0.2)).sample().item())
    assert len(set(draws)) == 3
    assert torch.equal(torch.get_rng_state(), before)
    again = RandomStreams(0, torch.device("cpu"))
    with again.random("m.lambda"):
        assert Beta(torch.tensor(0.2), torch.tensor(0.2)).sample().item() == draws[0]
    assert "m.lambda" in streams.state_dict()  # the stream it advances is checkpointed


def test_init_entered_again_warns_outside_the_steps_and_raises_inside():
    streams = RandomStreams(0, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with streams.init("m.twin_init"):
            pass
    with pytest.warns(RepeatedInitWarning, match=r"random\('m.twin_init'\)"):
        with streams.init("m.twin_init"):
            pass
    with streams.stepping(), pytest.raises(RepeatedInitError, match=r"per step use random\('m.twin_init'\)"):
        with streams.init("m.twin_init"):
            pass
    with streams.stepping():
        with streams.init("m.other"):  # a first entry is fine during the steps
            pass


def test_a_per_step_beta_draw_differs_per_step_repeats_across_runs_and_resumes(tracker, register, tmp_path):
    crashing = register(METHODS, crashing_once(BetaProbe, "beta_probe", at_step=-1))
    config = tiny_config(method=crashing.name, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    with one_thread():
        crashing.crashed = True
        BetaProbe.draws = []
        first = run(config, Tracker(tracker.uri, "first"), progress=False)
        uninterrupted = list(BetaProbe.draws)
        steps = crashing.steps_taken
        assert len(uninterrupted) == steps and len(set(uninterrupted)) == steps  # a new draw every step
        BetaProbe.draws = []
        second = run(config, Tracker(tracker.uri, "second"), progress=False)
        assert BetaProbe.draws == uninterrupted
        assert without_timing(second.metrics) == without_timing(first.metrics)
        # killed two steps before the end, in the last epoch; the rerun resumes after epoch 2
        crashing.crashed, crashing.at_step = False, steps - 2
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(config, tracker, progress=False)
        BetaProbe.draws = []
        resumed = run(config, tracker, progress=False)
    assert BetaProbe.draws == uninterrupted[-len(BetaProbe.draws):] and 0 < len(BetaProbe.draws) < steps
    assert without_timing(resumed.metrics) == without_timing(first.metrics)


def test_a_per_step_draw_inside_ctx_init_fails_the_run_naming_the_per_step_stream(tracker, register):
    register(METHODS, InitPerStep)
    with one_thread(), pytest.raises(RepeatedInitError, match=r"random\('init_per_step.lambda'\)"):
        run(tiny_config(method="init_per_step", epochs=1), tracker, progress=False)
