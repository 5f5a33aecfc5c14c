"""What the post-hoc corrections cost: one training step of RR-ClArC and RRR against a
vanilla step, and fitting a CAV with each ``CAV_KINDS`` against the ``pattern`` CAV.

``correction-step``: the same batch of 64 ``synthetic_artifacts`` images, ``small_cnn``
and Adam over exactly the parameters the method trains (``requires_grad`` set as the
runner sets it). The corrections fine-tune only the layers after the latent by default,
while vanilla trains everything, so the group also holds a vanilla step restricted to the
same head: RR-ClArC / RRR over ``baseline_vanilla`` mixes "fewer trained parameters" with
"double backward"; over ``vanilla_head_only`` it isolates the penalty's cost.

``cav-fit``: 10,000 Gaussian activations x 512 dims, 20% of them (label 1) shifted along
a planted unit direction; every kind must return a unit vector with cosine > 0.5 to it.
The scikit-learn kinds take up to seconds per fit, so the group runs at most 3 rounds.
"""

from __future__ import annotations

import functools

import pytest
import torch

from debiasbench.evaluation.cav import CAV_KINDS, fit_cav
from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import Loader
from debiasbench.contract.method import RunContext
from debiasbench.models.build import build_model
from debiasbench.core.registry import METHODS

BATCH = 64


# --------------------------------------------------------------------- correction-step


@pytest.fixture(scope="module")
def synthetic_artifacts():
    from debiasbench.core.hparams import resolve
    from debiasbench.core.registry import DATASETS

    cls = DATASETS.get("synthetic_artifacts")
    return cls(**resolve(cls.params, {"n_train": 256, "n_val": 20, "n_test": 20}, ""))


@pytest.fixture(scope="module")
def batch(synthetic_artifacts):
    loader = Loader(synthetic_artifacts.splits["train"], BATCH, torch.Generator().manual_seed(0))
    first = next(iter(loader))
    assert len(first) == BATCH and first.mask is not None
    return first


def make_step(name: str, dataset, batch, *, head_only: bool = False):
    """A closure running ``name``'s loss + backward + Adam step, set up as the runner does.

    ``head_only`` restricts training to the parameters after the latent layer (what the
    corrections train by default) whatever the method's own ``trainable_parameters``.
    """
    torch.manual_seed(0)
    config = resolve_config({"method": name, "dataset": "synthetic_artifacts", "device": "cpu"})
    model = build_model(config.model, dataset.num_classes, config.latent_layer)
    model.train()
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = METHODS.get(name)(config.hparams, ctx)
    method.prepare(ctx)  # RR-ClArC fits its CAV on the (untrained) model's latent; RRR needs none
    if head_only:
        trainable_list = model.parameters_after_latent(dataset.splits["train"].x[:2])
    else:
        trainable_list = list(method.trainable_parameters(model))
    trainable = {id(p) for p in trainable_list}
    params = [p for p in model.parameters() if id(p) in trainable]
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    assert params, f"{name}: nothing to train"
    optimizer = torch.optim.Adam(params, lr=config.lr)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = method.loss(model, batch)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, method, model, params


@pytest.mark.benchmark(group="correction-step")
def test_correction_steps_against_vanilla(compare, synthetic_artifacts, batch):
    """Then checks that every step's loss is finite and every trained parameter moved (the
    steps did real work; with the benchmark disabled, after a single step each)."""
    vanilla, _, model, vanilla_params = make_step("vanilla", synthetic_artifacts, batch)
    assert len(vanilla_params) == len(list(model.parameters()))  # vanilla trains everything
    head_only, _, model, head_params = make_step("vanilla", synthetic_artifacts, batch, head_only=True)
    assert 0 < len(head_params) < len(list(model.parameters()))
    rrclarc, method, model, rrclarc_params = make_step("rrclarc", synthetic_artifacts, batch)
    assert method.cav.shape == (model.latent(batch.x[:2]).shape[1],)
    assert abs(float(method.cav.norm()) - 1.0) < 1e-5
    assert 0 < len(rrclarc_params) < len(list(model.parameters()))  # head only by default
    rrr, _, model, rrr_params = make_step("rrr", synthetic_artifacts, batch)
    assert 0 < len(rrr_params) < len(list(model.parameters()))  # head only by default

    trained = {"baseline_vanilla": vanilla_params, "vanilla_head_only": head_params, "rrclarc": rrclarc_params,
               "rrr": rrr_params}
    before = {name: [p.detach().clone() for p in params] for name, params in trained.items()}
    result = compare(vanilla, {"vanilla_head_only": head_only, "rrclarc": rrclarc, "rrr": rrr},
                     baseline_name="baseline_vanilla", clock="cpu")
    for name, params in trained.items():
        assert torch.isfinite(result.results[name]), name
        assert all(not torch.equal(b, p) for b, p in zip(before[name], params)), name


# --------------------------------------------------------------------------- cav-fit

N_SAMPLES, DIMS, POSITIVE_SHARE, SHIFT = 10_000, 512, 0.2, 2.0
#: Rounds of the group: the scikit-learn kinds take seconds per fit (svm: 16 LinearSVC fits
#: for its C grid), and every round fits every kind.
ROUNDS = 3


@pytest.fixture(scope="module")
def cav_data():
    """(activations [N, D], labels [N] in {0, 1}, planted unit direction [D])."""
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(DIMS, generator=g)
    direction /= direction.norm()
    labels = torch.zeros(N_SAMPLES, dtype=torch.long)
    labels[torch.randperm(N_SAMPLES, generator=g)[: int(N_SAMPLES * POSITIVE_SHARE)]] = 1
    acts = torch.randn(N_SAMPLES, DIMS, generator=g) + SHIFT * labels[:, None].float() * direction
    return acts, labels, direction


def check_cav(cav: torch.Tensor, direction: torch.Tensor, kind: str) -> None:
    assert cav.shape == direction.shape and cav.dtype == torch.float32, kind
    assert abs(float(cav.norm()) - 1.0) < 1e-5, kind
    assert float(cav @ direction) > 0.5, kind


@pytest.mark.benchmark(group="cav-fit")
def test_cav_fits_against_pattern(compare, cav_data):
    acts, labels, direction = cav_data
    kinds = [k for k in CAV_KINDS if k != "pattern"]
    result = compare(lambda: fit_cav(acts, labels, "pattern"),
                     {kind: functools.partial(fit_cav, acts, labels, kind) for kind in kinds},
                     baseline_name="baseline_pattern", rounds=ROUNDS, clock="cpu")
    for kind, cav in result.results.items():
        check_cav(cav, direction, kind)
