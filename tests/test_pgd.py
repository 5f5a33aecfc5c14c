"""PGD: batched per-sample gradient norms equal a per-sample loop, the importance sampler
draws on the device in proportion to its probabilities, bad hyper-parameters are config
errors (the paper's claim: tests/test_unknown_bias_claims.py)."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import Loader
from debiasbench.core.errors import ConfigError
from debiasbench.contract.method import RunContext
from debiasbench.methods.pgd import PGD
from debiasbench.train.samplers import ImportanceSampler
from debiasbench.models.build import build_model
from debiasbench.train.per_sample_grad import loop_grad_norms, per_sample_grad_norms
from debiasbench.run.runner import build_dataset, build_run_model, run
from debiasbench.testing import tiny_config

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_model(arch: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A model whose BatchNorm statistics are not the initial ones, and a few tiny inputs."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5)
    size, n = (16, 12) if arch == "small_cnn" else (8, 4)
    x, y = torch.randn(n, 3, size, size), torch.randint(0, 5, (n,))
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, size, size) * 2 + 0.5)  # moves BN running statistics
    return model, x, y


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("params,method", [("last_layer", "closed_form"), ("last_layer", "vmap"), ("all", "vmap")])
@pytest.mark.parametrize("p", [0.7, 2.0, math.inf])
def test_batched_per_sample_grad_norms_equal_a_per_sample_loop(arch, params, method, p):
    model, x, y = tiny_model(arch)
    expected = loop_grad_norms(model, x, y, params=params, p=p)
    got = per_sample_grad_norms(model, x, y, params=params, p=p, method=method, batch_size=3)
    assert got.shape == (len(x),) and (expected > 0).all()
    assert ((got - expected).abs() / expected).max() < 1e-4
    assert model.training  # training flags are restored


def test_grad_norms_over_a_list_of_parameter_names_combine_their_p_norms():
    model, x, y = tiny_model("small_cnn")
    names = ["net.fc.weight", "net.fc.bias"]
    both = per_sample_grad_norms(model, x, y, params=names, p=0.7, method="vmap")
    weight = per_sample_grad_norms(model, x, y, params=names[:1], p=0.7, method="vmap")
    bias = per_sample_grad_norms(model, x, y, params=names[1:], p=0.7, method="vmap")
    assert torch.allclose(both, (weight ** 0.7 + bias ** 0.7) ** (1 / 0.7), rtol=1e-5)
    assert torch.allclose(both, loop_grad_norms(model, x, y, params=names, p=0.7), rtol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    ({"params": "all", "method": "closed_form"}, "closed_form' supports params='last_layer' only"),
    ({"params": ["net.fc.wieght"], "method": "vmap"}, "unknown parameter name"),
    ({"p": 0.0}, "must be > 0"),
    ({"method": "loop"}, "method: expected one of"),
])
def test_per_sample_grad_norms_refuse_bad_arguments(kwargs, message):
    model, x, y = tiny_model("small_cnn")
    with pytest.raises(ValueError, match=message):
        per_sample_grad_norms(model, x, y, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_importance_sampler_draws_n_indices_per_epoch_on_the_device_in_proportion_to_probs(device):
    probs = torch.linspace(1, 10, 40, device=device) ** 2
    probs = probs / probs.sum()
    sampler = ImportanceSampler(probs)
    generator = torch.Generator(device=device).manual_seed(0)
    epochs = [sampler.indices(epoch, generator) for epoch in range(250)]
    assert len(sampler) == 40 and all(e.shape == (40,) and e.device.type == device for e in epochs)
    counts = torch.bincount(torch.cat(epochs), minlength=40).double().cpu()
    expected = probs.double().cpu() * counts.sum()
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    dof = len(probs) - 1
    assert chi_square < dof + 4 * math.sqrt(2 * dof)  # about 4 standard deviations
    assert not torch.equal(epochs[0], epochs[1])  # a fresh draw every epoch


def make_pgd(**hparams) -> tuple[PGD, RunContext, dict[str, torch.Tensor]]:
    config = tiny_config(method="pgd", hparams={"bias_epochs": 1, **hparams})
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(config.seed), log_metrics=logged.update)
    logged.clear()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    return PGD(config.hparams, ctx), ctx, initial


logged: dict[str, float] = {}


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_prepare_makes_probabilities_proportional_to_the_biased_models_grad_norm_power(power):
    method, ctx, initial = make_pgd(power=power, norm_p=2.0)
    method.prepare(ctx)
    train = ctx.dataset.splits["train"]
    norms = loop_grad_norms(method.biased_model, train.x[:20], train.y[:20], p=2.0)
    ratio = method.probs[:20] / norms.clamp_min(1e-8) ** power
    assert torch.allclose(ratio, ratio.mean().expand(20), rtol=1e-3)
    assert method.probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert all(torch.equal(v, initial[k]) for k, v in ctx.model.state_dict().items())  # init=scratch
    assert 0.0 <= logged["pgd_conflicting_mass"] <= 1.0 and "pgd_effective_sample_share" in logged
    sampler = method.sampler(ctx)
    loader = Loader(train, 32, ctx.generator, sampler=sampler)
    assert len(sampler) == len(train) and sum(len(b) for b in loader) == len(train)


def test_init_biased_copies_the_biased_models_weights_into_the_run_model():
    method, ctx, initial = make_pgd(init="biased")
    method.prepare(ctx)
    biased = method.biased_model.state_dict()
    state = ctx.model.state_dict()
    assert all(torch.equal(state[k], biased[k]) for k in state)
    assert not torch.equal(state["net.fc.weight"], initial["net.fc.weight"])


@pytest.mark.parametrize("hparams", [{}, {"grad_params": "all", "norm_p": "inf", "init": "biased"}])
def test_pgd_run_finishes_and_logs_the_importance_statistics(tracker, hparams):
    config = tiny_config(method="pgd", hparams={"bias_epochs": 1, **hparams})
    result = run(config, tracker, progress=False)
    stored = tracker.client.get_run(result.run_id)
    assert stored.info.status == "FINISHED" and "test_conflicting_acc" in result.metrics
    assert 0.0 <= stored.data.metrics["pgd_conflicting_mass"] <= 1.0
    assert stored.data.params["hparams.init"] == config.hparams["init"]


@pytest.mark.parametrize("hparams,message", [
    ({"q": 0}, "hparams.q: expected a float in (0, 1]"),
    ({"q": 1.5}, "hparams.q: expected a float in (0, 1]"),
    ({"norm_p": 0}, "hparams.norm_p: expected a float > 0 or inf"),
    ({"norm_p": -2.0}, "hparams.norm_p"),
    ({"norm_p": "max"}, "hparams.norm_p"),
    ({"power": -1.0}, "hparams.power: expected a float >= 0.0"),
    ({"bias_epochs": 0}, "hparams.bias_epochs"),
    ({"grad_params": "first_layer"}, "hparams.grad_params: expected one of 'last_layer', 'all'"),
    ({"init": "pretrained"}, "hparams.init"),
])
def test_bad_pgd_hparams_are_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        resolve_config({"method": "pgd", "hparams": hparams})


def test_norm_p_accepts_inf_and_numbers():
    assert resolve_config({"method": "pgd", "hparams": {"norm_p": "inf"}}).hparams["norm_p"] == math.inf
    assert resolve_config({"method": "pgd", "hparams": {"norm_p": 2}}).hparams["norm_p"] == 2.0
    assert resolve_config({"method": "pgd"}).hparams == {
        "q": 0.7, "bias_epochs": None, "grad_params": "last_layer", "norm_p": 0.7, "power": 1.0,
        "init": "scratch"}


def test_bad_pgd_hparam_on_the_command_line_is_one_line_and_exit_code_2(tracking_uri):
    result = CliRunner().invoke(app, ["run", "--method", "pgd", "--set", "hparams.q=0"])
    assert result.exit_code == 2, result.output
    assert "hparams.q: expected a float in (0, 1], got 0" in result.output
    assert len(result.output.strip().splitlines()) == 1
