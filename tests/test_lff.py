"""LfF: the moving averages and relative-difficulty weights against a hand computation, the
biased model's own update and its state round trip, bad input, and runs from the CLI and on
every architecture (resuming a run: tests/test_resume.py; the paper's claim:
tests/test_lff_claims.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.errors import ConfigError
from debiasbench.train.losses import generalized_cross_entropy
from debiasbench.contract.method import RunContext
from debiasbench.methods.lff import LfF, LossEMA, relative_difficulty
from debiasbench.run.runner import build_run_model, run
from debiasbench.testing import SMALL_IMAGES, tiny_config


def test_moving_average_starts_at_the_first_loss_then_mixes_with_momentum():
    ema = LossEMA(torch.tensor([0, 0, 1, 1]), num_classes=2, momentum=0.7)
    ema.update(torch.tensor([0, 2]), torch.tensor([2.0, 4.0]))
    assert ema.value.tolist() == pytest.approx([2.0, 0.0, 4.0, 0.0])
    ema.update(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert ema.value.tolist() == pytest.approx([0.7 * 2 + 0.3 * 1, 3.0, 4.0, 0.0])
    assert ema.class_max().tolist() == pytest.approx([3.0, 4.0])
    assert ema.normalised(torch.tensor([0, 3]), by_class=True).tolist() == pytest.approx([1.7 / 3, 0.0])
    assert ema.normalised(torch.tensor([0, 3]), by_class=False).tolist() == pytest.approx([1.7, 0.0])


def test_relative_difficulty_is_the_biased_share_of_the_summed_losses():
    w = relative_difficulty(torch.tensor([3.0, 0.1, 1.0]), torch.tensor([1.0, 0.9, 1.0]))
    assert w.tolist() == pytest.approx([0.75, 0.1, 0.5])


class SixSamples(BenchmarkDataset):
    """Six 8x8 images of two classes (constructed; no file, no randomness beyond the seed)."""

    name = "test_six_samples"
    num_classes, num_bias = 2, 2

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(6, 3, 8, 8, generator=generator)
        y = torch.tensor([0, 1, 0, 1, 0, 1])
        zeros = torch.zeros(6, dtype=torch.bool)
        split = Split(x=x, y=y, bias=y.clone(), artifact=zeros, conflicting=zeros)
        self.splits = {"train": split, "val": split, "test": split}
        self.views = {}


def make_lff(grad_clip: float = 1.0, **hparams) -> tuple[LfF, RunContext]:
    config = resolve_config({"method": "lff", "device": "cpu", "batch_size": 4, "epochs": 1,
                             "grad_clip": grad_clip, "hparams": hparams})
    dataset = SixSamples()
    model = build_run_model(config, dataset, torch.device("cpu"))
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = LfF(config.hparams, ctx)
    method.prepare(ctx)
    return method, ctx


def test_weights_over_two_steps_equal_a_hand_computation_of_the_normalised_moving_averages():
    method, ctx = make_lff(momentum=0.7)
    model, train = ctx.model, ctx.dataset.splits["train"]
    model.train()
    a = 0.7
    hand_b, hand_d = torch.zeros(6), torch.zeros(6)
    for step, index in enumerate((torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3, 4, 5]))):
        batch = train.batch(index)
        with torch.no_grad():  # the losses both models have on the batch before it is taken
            ce_b = F.cross_entropy(method.biased_model(batch.x), batch.y, reduction="none")
            ce_d = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        for hand, ce in ((hand_b, ce_b), (hand_d, ce_d)):
            seen = (index == 2) | (index == 3) if step == 1 else torch.zeros(4, dtype=torch.bool)
            hand[index] = torch.where(seen, a * hand[index] + (1 - a) * ce, ce)
        max_b = torch.stack([hand_b[train.y == c].max() for c in (0, 1)])
        max_d = torch.stack([hand_d[train.y == c].max() for c in (0, 1)])
        lb, ld = hand_b[index] / max_b[batch.y], hand_d[index] / max_d[batch.y]
        expected_w = lb / (lb + ld)
        loss, logs = method.loss(model, batch)
        assert torch.allclose(method.ema_b.value, hand_b, rtol=1e-5)
        assert torch.allclose(method.ema_d.value, hand_d, rtol=1e-5)
        assert loss.item() == pytest.approx((expected_w * ce_d).mean().item(), rel=1e-5)
        assert logs["lff_weight"].item() == pytest.approx(expected_w.mean().item(), rel=1e-5)
    # the second batch's weights, spelled out: samples 2 and 3 mix two losses, 4 and 5 hold one
    assert method.weights(torch.tensor([4]), torch.tensor([hand_b[4].item()]),
                          torch.tensor([hand_d[4].item()])).item() == pytest.approx(
        (hand_b[4] / max_b[0] / (hand_b[4] / max_b[0] + hand_d[4] / max_d[0])).item(), rel=1e-5)


def test_loss_takes_the_biased_models_gce_step_and_leaves_the_run_models_gradient_to_the_runner():
    method, ctx = make_lff(grad_clip=0.0, q=0.7)  # unclipped, to compare gradients
    batch = ctx.dataset.splits["train"].batch(torch.arange(4))
    before = {k: v.clone() for k, v in method.biased_model.state_dict().items()}
    reference = build_run_model(ctx.config, ctx.dataset, torch.device("cpu"))  # same seed: the biased model's twin
    reference.load_state_dict(before)
    reference.train()
    gce = generalized_cross_entropy(reference(batch.x), batch.y, 0.7, scale=0.7)  # the authors' GCE
    gce.backward()
    loss, logs = method.loss(ctx.model, batch)
    assert logs["gce_biased"].item() == pytest.approx(gce.item(), rel=1e-5)
    assert not torch.equal(method.biased_model.state_dict()["net.fc.weight"], before["net.fc.weight"])
    grads = {name: p.grad for name, p in method.biased_model.named_parameters()}
    biased_grad, reference_grad = grads["net.fc.weight"], dict(reference.named_parameters())["net.fc.weight"].grad
    assert biased_grad is not None and reference_grad is not None
    assert torch.allclose(biased_grad, reference_grad, atol=1e-6)
    assert all(p.grad is None for p in ctx.model.parameters())  # the runner's backward comes next
    loss.backward()
    assert all(p.grad is not None for p in ctx.model.parameters())


def test_state_dict_round_trips_the_biased_model_its_optimiser_and_the_moving_averages():
    method, ctx = make_lff()
    train = ctx.dataset.splits["train"]
    for index in (torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3, 4, 5])):
        method.loss(ctx.model, train.batch(index))
    state = method.state_dict()
    fresh, _ = make_lff()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ema_b.value, method.ema_b.value) and torch.equal(fresh.ema_d.seen, method.ema_d.seen)
    for key, value in method.biased_model.state_dict().items():
        assert torch.equal(fresh.biased_model.state_dict()[key], value)
    fresh_step, step = fresh.biased_step, method.biased_step
    assert fresh_step.schedule is not None and step.schedule is not None
    assert fresh_step.optimizer.state_dict()["state"].keys() == step.optimizer.state_dict()["state"].keys()
    assert fresh_step.schedule.last_epoch == step.schedule.last_epoch == 2 and fresh_step.steps == 2


def test_lff_runs_from_the_command_line(tracking_uri):
    result = CliRunner().invoke(app, [
        "run", "--method", "lff", "--dataset", "colored_digits", "--tracking-uri", tracking_uri,
        "--set", "device=cpu", "--set", "epochs=1", "--set", "log_model=false",
        "--set", "dataset_params.image_size=8", "--set", "hparams.normalise=none"])
    assert result.exit_code == 0, result.output
    from debiasbench.track.store import Tracker

    tracker = Tracker(tracking_uri, "debiasbench")
    (stored,) = tracker.client.search_runs([tracker.experiment_id])
    assert stored.info.status == "FINISHED" and stored.data.params["hparams.normalise"] == "none"
    assert 0.0 < stored.data.metrics["epoch/train_lff_weight"] < 1.0
    assert 0.0 <= stored.data.metrics["test_conflicting_acc"] <= 1.0


@pytest.mark.parametrize("model", [
    "small_cnn",
    # torchvision / timm architectures: seconds each on a CPU, so `slow` (make test-fast skips them)
    *[pytest.param(m, marks=pytest.mark.slow) for m in ("resnet18", "efficientnet_b0", "timm:resnet18")],
    # vgg16 (138M parameters, minutes on a CPU): its latent layer and LRP rules are covered by
    # test_corrections_architectures; tests/test_gpu.py runs this method on it under make gpu-check.
])
def test_lff_runs_on_the_architecture(tracker, model):
    config = tiny_config(method="lff", model=model, epochs=1, batch_size=16, dataset_params=SMALL_IMAGES,
                         log_model=False)
    result = run(config, tracker, progress=False)
    assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0


@pytest.mark.parametrize("hparams,message", [
    ({"q": 0}, "hparams.q: expected a float in (0, 1], got 0"),
    ({"momentum": 1.0}, "hparams.momentum: expected a float in [0.0, 0.999], got 1.0"),
    ({"normalise": "batch"}, "hparams.normalise: expected one of 'class', 'none', got 'batch'"),
])
def test_bad_lff_hparams_are_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        resolve_config({"method": "lff", "hparams": hparams})
