"""GroupDRO: the group-weight update against a hand computation, bad input, runs end to
end and on every architecture (resume keeps the weights: tests/test_resume.py; the paper's
claim: tests/test_groupdro_dfr_claims.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.datasets.colored_digits import ColoredDigits
from debiasbench.contract.method import Batch, RunContext
from debiasbench.methods.groupdro import GroupDRO, group_losses, update_group_weights
from debiasbench.core.registry import DATASETS
from debiasbench.run.runner import build_dataset, build_run_model
from debiasbench.testing import one_thread, tiny_config


def make_groupdro(**hparams) -> tuple[GroupDRO, RunContext]:
    config = tiny_config(method="groupdro", hparams=hparams)
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = GroupDRO(config.hparams, ctx)
    method.prepare(ctx)
    return method, ctx


def hand_batch(ctx: RunContext) -> Batch:
    """Six training samples of three groups, in unequal numbers (class 0 with and without
    the patch, class 1 without)."""
    train = ctx.dataset.splits["train"]
    picks = []
    for cls, artifact, count in ((0, True, 3), (0, False, 2), (1, False, 1)):
        found = ((train.y == cls) & (train.bias == int(artifact))).nonzero().squeeze(1)
        picks.append(found[:count])
    return train.batch(torch.cat(picks))


def test_one_step_updates_the_group_weights_by_the_exponentiated_gradient_formula():
    method, ctx = make_groupdro(eta=0.5)
    q0 = method.q.clone()
    batch = hand_batch(ctx)
    with torch.no_grad():
        ce = F.cross_entropy(ctx.model(batch.x), batch.y, reduction="none").tolist()
    # by hand: group ids y * 2 + bias; means of the samples of each group
    losses = {1: sum(ce[:3]) / 3, 0: sum(ce[3:5]) / 2, 2: ce[5]}
    unnormalised = [q0[g].item() * math.exp(0.5 * losses.get(g, 0.0)) for g in range(len(q0))]
    expected = [u / sum(unnormalised) for u in unnormalised]
    loss, logs = method.loss(ctx.model, batch)
    assert method.q.tolist() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(sum(expected[g] * value for g, value in losses.items()), rel=1e-5)
    assert logs["worst_group_loss"].item() == pytest.approx(max(losses.values()), rel=1e-5)
    loss.backward()  # the robust loss is differentiable; q is not
    assert not method.q.requires_grad


def test_weights_start_uniform_over_groups_with_training_samples_and_empty_groups_stay_at_zero():
    method, ctx = make_groupdro()
    present = method.counts > 0
    assert method.q[present].tolist() == pytest.approx([1 / int(present.sum())] * int(present.sum()))
    assert (method.q[~present] == 0).all() and (~present).any()  # non-attacked classes never have the patch
    for _ in range(3):
        method.loss(ctx.model, hand_batch(ctx))
    assert (method.q[~present] == 0).all() and method.q.sum().item() == pytest.approx(1.0)


def test_adjustment_adds_c_over_sqrt_group_size_in_the_update_only():
    method, ctx = make_groupdro(eta=0.1, adjustment=2.0)
    present = method.counts > 0
    expected = torch.where(present, 2.0 / method.counts.clamp_min(1).sqrt(), torch.zeros_like(method.counts))
    assert torch.allclose(method.adjust, expected)
    losses = torch.tensor([0.5, 1.0, 0.2, 0.0])
    q = torch.full((4,), 0.25)
    adjust = torch.tensor([0.0, 1.0, 0.0, 0.5])
    by_hand = q * torch.exp(0.1 * (losses + adjust))
    assert torch.allclose(update_group_weights(q, losses, 0.1, adjust), by_hand / by_hand.sum())


def test_group_losses_are_per_group_means_and_zero_for_absent_groups():
    per_sample = torch.tensor([1.0, 3.0, 2.0, 4.0])
    losses, counts = group_losses(per_sample, torch.tensor([0, 0, 2, 2]), 4)
    assert losses.tolist() == [2.0, 0.0, 3.0, 0.0] and counts.tolist() == [2, 0, 2, 0]


def test_balanced_sampling_draws_every_group_about_equally_often():
    method, ctx = make_groupdro(sampling="balanced")
    sampler = method.sampler(ctx)
    assert sampler is not None
    drawn = torch.cat([sampler.indices(e, torch.Generator().manual_seed(e)) for e in range(20)])
    per_group = torch.bincount(method.train_groups[drawn], minlength=method.num_groups)[method.counts > 0]
    assert per_group.min() > 0.8 * per_group.float().mean() and len(sampler) == len(method.train_groups)
    assert make_groupdro()[0].sampler(ctx) is None


class DigitsWithoutBiasLabels(ColoredDigits):
    """colored_digits that does not declare its colours as bias labels."""

    name = "test_digits_without_bias_labels"
    provides = frozenset()


@pytest.mark.parametrize("method", ["groupdro", "dfr"])
def test_a_method_needing_bias_labels_on_a_dataset_without_them_is_one_line_and_exit_code_2(
        method, tracking_uri, register):
    register(DATASETS, DigitsWithoutBiasLabels)
    result = CliRunner().invoke(app, ["run", "--method", method, "--dataset", DigitsWithoutBiasLabels.name])
    assert result.exit_code == 2, result.output
    assert (f"method {method!r} requires bias_labels, which dataset 'test_digits_without_bias_labels' "
            "does not provide") in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("setting,message", [
    ("hparams.eta=-1", "hparams.eta: expected a float >= 0.0, got -1"),
    ("hparams.sampling=weighted", "hparams.sampling: expected one of 'uniform', 'balanced'"),
])
def test_bad_groupdro_hparams_on_the_command_line_are_one_line_and_exit_code_2(setting, message, tracking_uri):
    result = CliRunner().invoke(app, ["run", "--method", "groupdro", "--set", setting])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_groupdro_runs_end_to_end_through_the_command_line(tracking_uri):
    with one_thread():
        result = CliRunner().invoke(app, [
            "run", "--method", "groupdro", "--dataset", "colored_digits", "--set", "dataset_params.image_size=8",
            "--set", "epochs=1", "--set", "device=cpu", "--set", "hparams.sampling=balanced",
            "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "test_conflicting_acc" in result.output
