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


#: Rounds of per-sample-grad-resnet18, whose baseline loop takes about a second.
RESNET_ROUNDS = 10


def check_norms(result, n: int) -> None:
    for name, norms in result.results.items():
        assert norms.shape == (n,), name


# ---------------------------------------------------------------------- per-sample-grad


@pytest.mark.benchmark(group="per-sample-grad")
def test_per_sample_grad_norms_against_a_loop(compare, model, samples: Samples):
    result = compare(lambda: loop_grad_norms(model, *samples, p=P), {
        "loop_last_layer_only": lambda: loop_grad_norms(model, *samples, p=P, full_backward=False),
        "vmap": lambda: per_sample_grad_norms(model, *samples, p=P, method="vmap"),
        "closed_form": lambda: per_sample_grad_norms(model, *samples, p=P, method="closed_form"),
    }, baseline_name="baseline_loop", clock="cpu")
    check_norms(result, N)


@pytest.mark.benchmark(group="per-sample-grad-all")
def test_per_sample_grad_norms_of_all_parameters_against_a_loop(compare, model, samples: Samples):
    result = compare(lambda: loop_grad_norms(model, *samples, params="all", p=P), {
        "vmap": lambda: per_sample_grad_norms(model, *samples, params="all", p=P, method="vmap"),
    }, baseline_name="baseline_loop", clock="cpu")
    check_norms(result, N)


@pytest.fixture(scope="module")
def resnet_and_samples():
    torch.manual_seed(0)
    net = build_model("resnet18", 10).eval()
    return net, torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))


@pytest.mark.benchmark(group="per-sample-grad-resnet18")
def test_resnet18_per_sample_grad_norms_against_a_loop(compare, resnet_and_samples: ModelAndSamples):
    result = compare(lambda: loop_grad_norms(*resnet_and_samples, p=P), {
        "vmap": lambda: per_sample_grad_norms(*resnet_and_samples, p=P, method="vmap"),
        "closed_form": lambda: per_sample_grad_norms(*resnet_and_samples, p=P, method="closed_form"),
    }, baseline_name="baseline_loop", rounds=RESNET_ROUNDS, clock="cpu")
    check_norms(result, 64)


# -------------------------------------------------------------------------- pgd-scoring


def score(model, train, method):
    norms = per_sample_grad_norms(model, train.x, train.y, p=P, method=method)
    weights = norms.clamp_min(1e-8)
    return weights / weights.sum()


@pytest.mark.benchmark(group="pgd-scoring")
def test_pgd_scoring_against_a_vanilla_epoch(compare, model, colored_digits):
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

    train = colored_digits.splits["train"]
    result = compare(epoch, {"scoring_closed_form": lambda: score(model, train, "closed_form"),
                             "scoring_vmap": lambda: score(model, train, "vmap")},
                     baseline_name="baseline_vanilla_epoch", clock="cpu")
    for name in ("scoring_closed_form", "scoring_vmap"):
        assert result.results[name].shape == (len(train),), name
