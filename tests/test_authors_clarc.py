"""P-ClArC, RRR and RR-ClArC's ``logprobs`` as the RR-ClArC authors' code runs them
(frederikpahde/rrclarc@222d917), each checked against a hand computation of their formula.

Hand values are written with functional ops from the network's own parameters, in float64;
the tiny networks and helpers are those of ``test_clarc_maths``.
"""

from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiasbench.run import checkpoints
from debiasbench.run.base_model import base_config
from debiasbench.contract.config import resolve_config
from debiasbench.contract.method import Batch
from debiasbench.methods.pclarc import PClArC
from debiasbench.methods.rrclarc import RRClArC
from debiasbench.methods.rrr import RRR
from debiasbench.run.runner import run
from debiasbench.testing import tiny_config
from test_clarc_maths import (DTYPE, H, K, N, W, assert_close, assert_same_parameter_gradients, fake_dataset,
                              hand_head, hand_latent, hand_shift, ids, latent_model, linear_layer, make_batch, make_ctx,
                              unit)

# --------------------------------------------------------------------------- P-ClArC


def make_pclarc(model, finetune: str = "after_latent") -> PClArC:
    hp = {"cav_kind": "pattern", "finetune": finetune, "shift": "both"}
    method = PClArC(hp, make_ctx(model, "pclarc", dataset=fake_dataset((N, 3, H, W))))
    method.cav, method.clean_length = unit(), torch.tensor(0.4, dtype=DTYPE)
    return method


def test_pclarc_fine_tunes_ten_epochs_by_default_like_the_other_clarc_corrections():
    config = resolve_config({"method": "pclarc", "dataset": "synthetic_artifacts"})
    assert config.epochs == 10
    assert config.hparams["finetune"] == "after_latent"


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
def test_pclarc_trains_on_the_plain_cross_entropy_of_the_unprojected_model(nonlinear_head: bool):
    """clarc.py:126-130: the projection hook is removed for training."""
    model = latent_model(nonlinear_head)
    batch = make_batch()
    method = make_pclarc(model)
    loss, logs = method.loss(model, batch)

    a = hand_latent(model.net, batch.x)
    plain = F.cross_entropy(hand_head(model.net, a), batch.y)
    projected = F.cross_entropy(hand_head(model.net, hand_shift(a, method.cav, 0.4)), batch.y)
    assert not torch.allclose(plain, projected)  # the two readings of "P-ClArC's loss" differ here
    assert_close(loss, plain)
    assert_close(logs["ce"], plain)
    assert_same_parameter_gradients(loss, plain, model)


def test_pclarc_trains_the_finetune_scope_and_still_projects_at_test_time():
    single = latent_model().float()  # the after_latent probe runs a float32 example
    assert [id(p) for p in make_pclarc(single).trainable_parameters(single)] == ids(linear_layer(single.net))
    assert [id(p) for p in make_pclarc(single, "all").trainable_parameters(single)] == ids(single.net)
    model, batch = latent_model(), make_batch()
    with torch.no_grad():
        expected = hand_head(model.net, hand_shift(hand_latent(model.net, batch.x), unit(), 0.4))
        assert_close(make_pclarc(model).eval_model(model)(batch.x), expected)


def test_pclarc_with_zero_epochs_evaluates_the_base_weights_projected(tracker):
    """``epochs: 0`` is the paper's training-free P-ClArC (the runner builds no step)."""
    base = run(base_config(tiny_config(method="pclarc")), tracker, progress=False)
    untrained = run(tiny_config(method="pclarc", epochs=0), tracker, progress=False)
    assert tracker.get_run(untrained.run_id).data.tags["debiasbench.base_run_id"] == base.run_id

    def weights(result) -> dict[str, Tensor]:
        return checkpoints.load(tracker.download(result.run_id, "model.pt", tempfile.mkdtemp()))

    before, after = weights(base), weights(untrained)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert untrained.metrics["train_seconds"] == 0.0
    assert untrained.metrics["test_acc"] != base.metrics["test_acc"]  # the projection is applied


# --------------------------------------------------------------------------- RRR


def make_rrr(model, objective: str | None = None, lam: float | None = None) -> RRR:
    hparams = {k: v for k, v in (("objective", objective), ("lambda", lam)) if v is not None}
    config = resolve_config({"method": "rrr", "dataset": "synthetic_artifacts", "hparams": hparams})
    return RRR({**config.hparams, "finetune": "all"}, make_ctx(model, "rrr"))


def hand_rrr_explogsum(net: nn.Module, batch: Batch, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, ce, penalty) of the authors' RRR_ExpLogSum (rrr.py:33-57, 65-75), written out:

    g = d/dx sum_i (1/K) sum_k log(p_ik + 1e-5);  s_i[h, w] = |sum_c g_i[c, h, w]|;
    penalty = (1/N) sum_i <s_i, m_i> / (||s_i|| ||m_i||), a sample with an empty mask adding 0.
    """
    x = batch.x.detach().requires_grad_(True)
    logits = hand_head(net, hand_latent(net, x))
    ce = F.cross_entropy(logits, batch.y)
    probs = torch.exp(logits - logits.logsumexp(1, keepdim=True))
    (g,) = torch.autograd.grad(torch.log(probs + 1e-5).sum() / K, x, create_graph=True)
    assert batch.mask is not None
    terms = []
    for i in range(len(x)):
        s = (g[i, 0] + g[i, 1] + g[i, 2]).abs().reshape(-1)
        m = batch.mask[i, 0].reshape(-1).to(DTYPE)
        terms.append((s * m).sum() / (s.norm() * m.norm()) if m.sum() > 0 else s.sum() * 0)
    penalty = torch.stack(terms).sum() / len(x)
    return ce + lam * penalty, ce, penalty


def batch_with_an_empty_mask() -> Batch:
    mask = torch.rand(N, 1, H, W, generator=torch.Generator().manual_seed(4)) < 0.3
    mask[1] = False  # a clean sample: counts as 0 in the batch mean
    return make_batch(mask=mask)


def test_rrr_defaults_to_the_authors_objective_with_its_own_lambda_default():
    model = latent_model()
    default = make_rrr(model)
    assert default.hp["objective"] == "rrclarc" and default.weight == 100.0
    assert make_rrr(model, "ross").weight == 10.0
    assert make_rrr(model, "ross", 3.0).weight == 3.0


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
def test_rrr_loss_and_gradients_equal_the_authors_explogsum_cosine_by_hand(nonlinear_head: bool):
    model = latent_model(nonlinear_head)
    batch = batch_with_an_empty_mask()
    _, ce, penalty = hand_rrr_explogsum(model.net, batch, 1.0)
    lam = float(ce.detach() / penalty.detach())  # lambda * penalty == CE: both terms count
    loss, logs = make_rrr(model, "rrclarc", lam).loss(model, batch)
    expected, ce, penalty = hand_rrr_explogsum(model.net, batch, lam)
    assert 0.0 < float(penalty.detach()) < 1.0
    assert_close(logs["penalty"], penalty)
    assert_close(logs["ce"], ce)
    assert_close(loss, expected)
    assert_same_parameter_gradients(loss, expected, model)


def test_rrr_authors_penalty_reads_a_mask_with_channels_as_marked_where_any_channel_is():
    model = latent_model(nonlinear_head=True)
    batch = batch_with_an_empty_mask()
    method = make_rrr(model, "rrclarc")
    in_one_channel = torch.zeros(N, 3, H, W, dtype=torch.bool)
    assert batch.mask is not None
    in_one_channel[:, 2] = batch.mask[:, 0]
    assert_close(method.loss(model, make_batch(mask=in_one_channel))[1]["penalty"],
                 method.loss(model, batch)[1]["penalty"])


def test_rrr_authors_penalty_is_zero_when_no_sample_has_an_artifact():
    model = latent_model(nonlinear_head=True)
    batch = make_batch(mask=torch.zeros(N, 1, H, W, dtype=torch.bool))
    loss, logs = make_rrr(model, "rrclarc", 1e6).loss(model, batch)
    assert float(logs["penalty"]) == 0.0
    assert_close(loss, logs["ce"], atol=0.0)


# --------------------------------------------------------------------------- RR-ClArC logprobs


def make_rrclarc(model, v: Tensor, target: str, lam: float) -> RRClArC:
    hp = {"lambda": lam, "target": target, "cav_kind": "pattern", "finetune": "all"}
    method = RRClArC(hp, make_ctx(model, "rrclarc"))
    method.cav = v
    return method


def hand_logprobs_penalty(net: nn.Module, batch: Batch, v: Tensor) -> Tensor:
    """The authors' logprobs penalty in closed form for the linear head (mean pool -> fc).

    T_i = (1/K) sum_k log(p_ik + e) gives dT_i/dz_ij = (1/K) (r_ij - p_ij sum_k r_ik) with
    r_ik = p_ik / (p_ik + e); every latent position gets W^T (dT_i/dz_i) / (H W), so the
    penalty (rrc.py:45-53, l2_mean) is mean_i ((W v) . dT_i/dz_i / (H W))^2.
    """
    logits = hand_head(net, hand_latent(net, batch.x))
    p = logits.softmax(1)
    r = p / (p + 1e-5)
    dt_dz = (r - p * r.sum(1, keepdim=True)) / K
    return ((dt_dz @ (linear_layer(net).weight @ v)) / (H * W)).pow(2).mean()


def confident(model) -> None:
    """A head that puts probability ~1 - 1e-25 on class 0 for every sample (a bias of 60)."""
    with torch.no_grad():
        model.net.fc.bias.copy_(torch.tensor([60.0, 0.0, 0.0], dtype=DTYPE))


def test_rrclarc_logprobs_penalty_equals_the_authors_formula_in_closed_form():
    model = latent_model()
    batch, v = make_batch(), unit()
    want = hand_logprobs_penalty(model.net, batch, v)
    _, logs = make_rrclarc(model, v, "logprobs", 1.0).loss(model, batch)
    assert float(want.detach()) > 1e-12
    assert_close(logs["penalty"], want, rtol=1e-9)


def test_rrclarc_logprobs_gradient_vanishes_on_a_confident_head_and_log_softmax_does_not():
    model = latent_model()
    confident(model)
    batch, v = make_batch(), unit()
    with torch.no_grad():
        assert float(hand_head(model.net, hand_latent(model.net, batch.x)).softmax(1)[:, 1:].max()) < 1e-20
    authors = make_rrclarc(model, v, "logprobs", 1.0).loss(model, batch)[1]["penalty"]
    former = make_rrclarc(model, v, "log_softmax", 1.0).loss(model, batch)[1]["penalty"]
    assert_close(authors, hand_logprobs_penalty(model.net, batch, v), rtol=1e-6, atol=1e-30)
    assert float(authors) < 1e-6 * float(former)
    logits = hand_head(model.net, hand_latent(model.net, batch.x))
    dt_dz = 1.0 / K - logits.softmax(1)  # d/dz mean_k log_softmax_k
    assert_close(former, ((dt_dz @ (linear_layer(model.net).weight @ v)) / (H * W)).pow(2).mean())
