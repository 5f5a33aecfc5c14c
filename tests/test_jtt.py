"""JTT: the error set is the identification model's mistakes, the sampler draws it exactly
``upweight + 1`` times an epoch (the authors' up_weight copies plus the training set's
own), loss weighting is the same objective, bad input is one line, and runs finish from
the CLI and on every architecture (the paper's claim: tests/test_unknown_bias_claims.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import Loader
from debiasbench.core.errors import ConfigError
from debiasbench.contract.method import Batch, RunContext
from debiasbench.methods.jtt import JTT, UpsampleSampler, error_set_weights, misclassified
from debiasbench.train.mining import precision_recall
from debiasbench.run.runner import build_dataset, build_run_model, run
from debiasbench.testing import SMALL_IMAGES, tiny_config

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_misclassified_marks_exactly_the_samples_whose_largest_logit_is_not_the_label():
    model = nn.Flatten()  # logits = the three input values
    x = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 5, 1], [1, 0, 4], [2, 0, 1]]).view(5, 1, 1, 3)
    y = torch.tensor([0, 2, 1, 0, 0])
    assert misclassified(model, x, y, batch_size=2).tolist() == [False, True, False, True, False]


@pytest.mark.parametrize("device", DEVICES)
def test_sampler_draws_every_error_sample_upweight_plus_one_times_and_the_rest_once_per_epoch(device):
    error_set = torch.zeros(10, dtype=torch.bool, device=device)
    error_set[[1, 4, 7]] = True
    sampler = UpsampleSampler(10, error_set, upweight=5)
    generator = torch.Generator(device=device).manual_seed(0)
    epochs = [sampler.indices(epoch, generator) for epoch in range(3)]
    assert len(sampler) == 10 + 3 * 5 == 25
    for order in epochs:
        assert order.device.type == device and order.shape == (25,)
        assert torch.bincount(order, minlength=10).tolist() == [1, 6, 1, 1, 6, 1, 1, 6, 1, 1]
    assert not torch.equal(epochs[0], epochs[1])  # a fresh shuffle every epoch


def test_upweight_zero_or_an_empty_error_set_is_a_plain_shuffle():
    for error_set, upweight in ((torch.tensor([True, False, True]), 0), (torch.zeros(3, dtype=torch.bool), 20)):
        order = UpsampleSampler(3, error_set, upweight).indices(0, torch.Generator().manual_seed(0))
        assert sorted(order.tolist()) == [0, 1, 2]


def test_loss_weights_are_upweight_plus_one_on_the_error_set_with_mean_one_and_match_upsampling_in_expectation():
    error_set = torch.tensor([False, True, False, False, True])
    weights = error_set_weights(error_set, 20)
    assert torch.allclose(weights, torch.tensor([1.0, 21, 1, 1, 21]) * 5 / 45)
    ce = torch.tensor([0.3, 2.0, 0.1, 0.5, 1.5])
    pool = UpsampleSampler(5, error_set, 20).pool
    # the mean weighted loss over the split equals the mean loss over the upsampled epoch
    assert (weights * ce).mean().item() == pytest.approx(ce[pool].mean().item(), rel=1e-6)


def make_jtt(**hparams) -> tuple[JTT, RunContext, dict[str, float]]:
    config = resolve_config({"method": "jtt", "dataset": "colored_digits", "device": "cpu",
                             "dataset_params": {"image_size": 8}, "hparams": {"id_epochs": 1, **hparams}})
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    logged: dict[str, float] = {}
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(config.seed), log_metrics=logged.update)
    return JTT(config.hparams, ctx), ctx, logged


def test_prepare_takes_the_identification_models_mistakes_as_the_error_set_and_logs_their_quality():
    method, ctx, logged = make_jtt(upweight=7)
    initial = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    method.prepare(ctx)
    train = ctx.dataset.splits["train"]
    predicted = method.identifier(train.x).argmax(1)  # identifier is in eval mode after training
    assert torch.equal(method.error_set, predicted != train.y)
    assert 0 < method.error_set.sum() < len(train)
    assert logged["jtt_error_set_size"] == method.error_set.sum().item()
    expected = precision_recall(method.error_set, train.conflicting)
    assert logged["mining_precision"] == expected["mining_precision"]
    assert logged["mining_recall"] == expected["mining_recall"]
    assert all(torch.equal(v, initial[k]) for k, v in ctx.model.state_dict().items())  # run model untouched
    sampler = method.sampler(ctx)
    assert sampler is not None
    counts = torch.bincount(sampler.indices(0, ctx.generator), minlength=len(train))
    assert torch.equal(counts, torch.where(method.error_set, 8, 1))
    loader = Loader(train, 64, ctx.generator, sampler=sampler)
    assert sum(len(b) for b in loader) == len(train) + 7 * int(method.error_set.sum())


def test_loss_mode_weights_each_samples_cross_entropy_and_keeps_the_uniform_shuffle():
    method, ctx, _ = make_jtt(mode="loss", upweight=10)
    method.prepare(ctx)
    assert method.sampler(ctx) is None
    train = ctx.dataset.splits["train"]
    index = torch.cat([method.error_set.nonzero().squeeze(1)[:3], (~method.error_set).nonzero().squeeze(1)[:5]])
    batch: Batch = train.batch(index)
    loss, _ = method.loss(ctx.model, batch)
    ce = nn.functional.cross_entropy(ctx.model(batch.x), batch.y, reduction="none")
    scale = len(train) / (len(train) + 10 * method.error_set.sum())
    expected = (torch.tensor([11.0] * 3 + [1.0] * 5) * scale * ce).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["sample", "loss"])
def test_jtt_runs_from_the_command_line_and_logs_the_error_set(tracking_uri, mode):
    result = CliRunner().invoke(app, [
        "run", "--method", "jtt", "--dataset", "colored_digits", "--tracking-uri", tracking_uri,
        "--set", "device=cpu", "--set", "epochs=1", "--set", "log_model=false",
        "--set", "dataset_params.image_size=8", "--set", "hparams.id_epochs=1", "--set", f"hparams.mode={mode}"])
    assert result.exit_code == 0, result.output
    from debiasbench.track.store import Tracker

    tracker = Tracker(tracking_uri, "debiasbench")
    (stored,) = tracker.client.search_runs([tracker.experiment_id])
    assert stored.info.status == "FINISHED" and stored.data.params["hparams.mode"] == mode
    assert stored.data.metrics["jtt_error_set_size"] > 0
    assert 0.0 <= stored.data.metrics["mining_precision"] <= 1.0
    assert 0.0 <= stored.data.metrics["test_conflicting_acc"] <= 1.0


@pytest.mark.parametrize("model", [
    "small_cnn",
    # torchvision / timm architectures: seconds each on a CPU, so `slow` (make test-fast skips them)
    *[pytest.param(m, marks=pytest.mark.slow) for m in ("resnet18", "efficientnet_b0", "timm:resnet18")],
    # vgg16 (138M parameters, minutes on a CPU): its latent layer and LRP rules are covered by
    # test_corrections_architectures; tests/test_gpu.py runs this method on it under make gpu-check.
])
def test_jtt_runs_on_the_architecture(tracker, model):
    config = tiny_config(method="jtt", model=model, epochs=1, batch_size=16, dataset_params=SMALL_IMAGES,
                         hparams={"id_epochs": 1}, log_model=False)
    result = run(config, tracker, progress=False)
    assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0
    assert result.metrics["jtt_error_set_size"] >= 0


@pytest.mark.parametrize("hparams,message", [
    ({"upweight": 0}, "hparams.upweight: expected an integer >= 1, got 0"),
    ({"upweight": 2.5}, "hparams.upweight: expected an integer >= 1, got 2.5"),
    ({"id_epochs": 0}, "hparams.id_epochs: expected an integer >= 1, got 0"),
    ({"mode": "weights"}, "hparams.mode: expected one of 'sample', 'loss', got 'weights'"),
])
def test_bad_jtt_hparams_are_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        resolve_config({"method": "jtt", "hparams": hparams})


def test_bad_jtt_hparam_on_the_command_line_is_one_line_and_exit_code_2(tracking_uri):
    result = CliRunner().invoke(app, ["run", "--method", "jtt", "--set", "hparams.upweight=0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == ["error: hparams.upweight: expected an integer >= 1, got 0."]


def test_an_empty_error_set_trains_as_vanilla_and_says_so(monkeypatch):
    method, ctx, logged = make_jtt()
    notes: list[str] = []
    ctx.note = notes.append
    monkeypatch.setattr("debiasbench.methods.jtt.misclassified",
                        lambda model, x, y, batch_size: torch.zeros_like(y, dtype=torch.bool))
    method.prepare(ctx)
    assert logged["jtt_error_set_size"] == 0.0 and len(notes) == 1 and "error set is empty" in notes[0]
    sampler = method.sampler(ctx)
    assert sampler is not None
    assert len(sampler) == len(ctx.dataset.splits["train"])
