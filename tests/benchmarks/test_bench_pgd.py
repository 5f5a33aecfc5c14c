"""What PGD's scoring costs.

``per-sample-grad``: CE gradient norms (p = 0.7, the last Linear's weight, as PGD scores)
of 256 ``colored_digits`` training images under ``small_cnn``: a Python loop of one
forward and full ``backward()`` per sample (the baseline, as such loops are usually written
and as the PGD authors' code does) against a loop that differentiates only the last layer,
``vmap(grad)`` and the closed form (target: batched >= 20x faster than the loop).
``per-sample-grad-resnet18`` does the same for resnet18 on 64 random 32x32 images, where a
single-sample forward and backward wastes more of the CPU than small_cnn's does.
``per-sample-grad-all`` does the same for every parameter (vmap only; the closed form
covers the last layer alone).

``pgd-scoring``: scoring the whole training split into sampling probabilities, against
one vanilla training epoch over the same split at batch 64 (target: <= 2x).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import Loader
from debiasbench.contract.method import RunContext
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel
from debiasbench.train.per_sample_grad import loop_grad_norms, per_sample_grad_norms
from debiasbench.core.registry import METHODS

N, P = 256, 0.7

# What the `samples` and `resnet_and_samples` fixtures give: inputs and labels (after the model).
Samples = tuple[Tensor, Tensor]
ModelAndSamples = tuple[LatentModel, Tensor, Tensor]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("small_cnn", 10).eval()


@pytest.fixture(scope="module")
def samples(colored_digits):
    train = colored_digits.splits["train"]
    return train.x[:N], train.y[:N]


def pedantic(benchmark, fn, rounds):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ---------------------------------------------------------------------- per-sample-grad


@pytest.mark.benchmark(group="per-sample-grad")
def test_psg_baseline_loop(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: loop_grad_norms(model, *samples, p=P), rounds=3)
    assert norms.shape == (N,)


@pytest.mark.benchmark(group="per-sample-grad")
def test_psg_loop_last_layer_only(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: loop_grad_norms(model, *samples, p=P, full_backward=False), rounds=3)
    assert norms.shape == (N,)


@pytest.mark.benchmark(group="per-sample-grad")
def test_psg_vmap(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: per_sample_grad_norms(model, *samples, p=P, method="vmap"), rounds=5)
    assert norms.shape == (N,)


@pytest.mark.benchmark(group="per-sample-grad")
def test_psg_closed_form(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: per_sample_grad_norms(model, *samples, p=P, method="closed_form"),
                     rounds=5)
    assert norms.shape == (N,)


@pytest.mark.benchmark(group="per-sample-grad-all")
def test_psg_all_params_baseline_loop(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: loop_grad_norms(model, *samples, params="all", p=P), rounds=2)
    assert norms.shape == (N,)


@pytest.mark.benchmark(group="per-sample-grad-all")
def test_psg_all_params_vmap(benchmark, model, samples: Samples):
    norms = pedantic(benchmark, lambda: per_sample_grad_norms(model, *samples, params="all", p=P,
                                                              method="vmap"), rounds=2)
    assert norms.shape == (N,)


@pytest.fixture(scope="module")
def resnet_and_samples():
    torch.manual_seed(0)
    net = build_model("resnet18", 10).eval()
    return net, torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))


@pytest.mark.benchmark(group="per-sample-grad-resnet18")
def test_psg_resnet18_baseline_loop(benchmark, resnet_and_samples: ModelAndSamples):
    norms = pedantic(benchmark, lambda: loop_grad_norms(*resnet_and_samples, p=P), rounds=2)
    assert norms.shape == (64,)


@pytest.mark.benchmark(group="per-sample-grad-resnet18")
def test_psg_resnet18_vmap(benchmark, resnet_and_samples: ModelAndSamples):
    norms = pedantic(benchmark, lambda: per_sample_grad_norms(*resnet_and_samples, p=P, method="vmap"), rounds=3)
    assert norms.shape == (64,)


@pytest.mark.benchmark(group="per-sample-grad-resnet18")
def test_psg_resnet18_closed_form(benchmark, resnet_and_samples: ModelAndSamples):
    norms = pedantic(benchmark, lambda: per_sample_grad_norms(*resnet_and_samples, p=P, method="closed_form"),
                     rounds=3)
    assert norms.shape == (64,)


# -------------------------------------------------------------------------- pgd-scoring


@pytest.mark.benchmark(group="pgd-scoring")
def test_epoch_baseline_vanilla(benchmark, colored_digits):
    torch.manual_seed(0)
    net = build_model("small_cnn", 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    config = resolve_config({"device": "cpu"})
    ctx = RunContext(config=config, dataset=colored_digits, model=net, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = METHODS.get("vanilla")(config.hparams, ctx)
    loader = Loader(colored_digits.splits["train"], 64, ctx.generator)

    def epoch():
        net.train()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = method.loss(net, batch)
            loss.backward()
            optimizer.step()

    pedantic(benchmark, epoch, rounds=5)


def score(model, train, method):
    norms = per_sample_grad_norms(model, train.x, train.y, p=P, method=method)
    weights = norms.clamp_min(1e-8)
    return weights / weights.sum()


@pytest.mark.benchmark(group="pgd-scoring")
def test_pgd_scoring_train_split(benchmark, model, colored_digits):
    train = colored_digits.splits["train"]
    probs = pedantic(benchmark, lambda: score(model, train, "closed_form"), rounds=5)
    assert probs.shape == (len(train),)


@pytest.mark.benchmark(group="pgd-scoring")
def test_pgd_scoring_train_split_vmap(benchmark, model, colored_digits):
    train = colored_digits.splits["train"]
    probs = pedantic(benchmark, lambda: score(model, train, "vmap"), rounds=3)
    assert probs.shape == (len(train),)
