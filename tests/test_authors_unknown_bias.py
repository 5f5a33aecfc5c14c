"""Gradient Alignment's peer-picking, the GCE of LfF and PGD, JTT's upsampling and DFR's
standardisation and refits follow the authors' code (issue 16), each checked against a
hand computation of the rule on small tensors:

- bwbwzhao/Combating-Unknown-Bias@687309f: ``mining/det_peer.py:111`` (50 epochs),
  ``:182, 193-195`` and ``debiasing/main_ecsga.py:96, 105-107`` (epoch-averaged score, tau);
- alinlab/LfF@e66796e ``module/loss.py:20-24`` and sumyeongahn/PGD@0265520
  ``trainer/module/loss.py:20-23`` (GCE weighted by ``q p_y^q``), ``trainer/learner.py:64-93``
  (both stages with the same optimiser);
- anniesch/jtt@1de6cc5 ``run_expt.py:97-106`` (the training set plus ``up_weight`` copies
  of the error set);
- PolinaKirichenko/deep_feature_reweighting@9d8d5de ``dfr_evaluate_spurious.py:73-120``
  (one balanced fit set per tuning, standardised on itself) and ``:131-185`` (20 refits,
  standardised with the training split's features).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import cast

import numpy as np
import pytest
import torch

from debiasbench.train import mining as mining_module
from debiasbench.train.auxiliary import fresh_model
from debiasbench.contract.config import resolve_config
from debiasbench.datasets.colored_digits import ColoredDigits
from debiasbench.train.losses import generalized_cross_entropy
from debiasbench.contract.method import RunContext
from debiasbench.methods import dfr as dfr_module
from debiasbench.methods import gradient_alignment as ga_module
from debiasbench.methods.dfr import C_GRID, DFR, balanced_subset, feature_moments, last_layer_inputs, standardiser
from debiasbench.methods.gradient_alignment import GradientAlignment
from debiasbench.methods.jtt import JTT, UpsampleSampler, error_set_weights
from debiasbench.methods.lff import LfF
from debiasbench.methods.pgd import BIASED_INIT, PGD
from debiasbench.models.latent import LatentModel
from debiasbench.train.mining import MiningResult, mine_conflicting
from debiasbench.run.runner import build_dataset, build_run_model
from debiasbench.testing import one_thread, tiny_config


def context(config) -> RunContext:
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    return RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(config.seed), log_metrics=lambda metrics: None)


def last_layer_io(model) -> tuple[dict[str, torch.Tensor], torch.utils.hooks.RemovableHandle]:
    """Records the input and output of ``model``'s last linear layer on every forward."""
    seen: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        seen["h"], seen["logits"] = inputs[0].detach(), output.detach()

    return seen, model.net.fc.register_forward_hook(hook)


def head(model: LatentModel) -> torch.nn.Linear:
    """The last linear layer of ``model``: ``fc`` (the runs here use small_cnn)."""
    return cast(torch.nn.Linear, model.net.fc)


def authors_gce_weight_grad(logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """d/dW of the batch mean of the code's ``q p_y^q.detach() * CE``, spelled out:
    ``q p_y^q (softmax - onehot)`` per sample, times the layer's input."""
    p = logits.double().softmax(1)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    dz = q * p.gather(1, y[:, None]) ** q * (p - onehot)
    return dz.T @ h.double() / len(y)


# ---- 10. peer-picking: 50 epochs, the score averaged over every epoch ----

def digits_context(**config) -> RunContext:
    cfg = resolve_config({"dataset": "colored_digits", "device": "cpu", **config,
                          "dataset_params": {"bias_ratio": 0.99, "image_size": 8}})
    # no model: mining trains its own peers and never reads ctx.model
    return RunContext(config=cfg, dataset=ColoredDigits(**cfg.dataset_params), model=cast(LatentModel, None),
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))


def test_gradient_alignment_mines_with_fifty_peer_epochs_by_default_as_the_authors_code(monkeypatch):
    calls: list[int] = []

    def spy(ctx, epochs, *args):
        calls.append(epochs)
        conflicting = torch.zeros(len(ctx.dataset.splits["train"]), dtype=torch.bool)
        conflicting[:3] = True
        return MiningResult(conflicting=conflicting, scores=conflicting.float())

    monkeypatch.setattr(ga_module, "mine_conflicting", spy)
    ctx = digits_context(method="gradient_alignment", hparams={"bias_source": "mined"})
    GradientAlignment(ctx.config.hparams, ctx).prepare(ctx)
    assert calls == [50]


def test_mined_score_is_one_minus_the_peers_true_class_probability_averaged_over_every_epoch(monkeypatch):
    ctx = digits_context()
    train = ctx.dataset.splits["train"]
    y0, y1 = int(train.y[0]), int(train.y[1])
    # p_y of samples 0 and 1 per (epoch, peer), in the order mine_conflicting scores them
    p_y = {0: [(0.9, 0.7), (0.5, 0.3), (0.2, 0.4)], 1: [(0.1, 0.1), (0.1, 0.1), (0.1, 0.3)]}
    calls: list[None] = []

    def scripted(model, split, batch_size=None):
        epoch, peer = divmod(len(calls), 2)
        calls.append(None)
        probs = torch.full((len(split), 10), 0.1)
        for i, y in ((0, y0), (1, y1)):
            probs[i] = (1 - p_y[i][epoch][peer]) / 9
            probs[i, y] = p_y[i][epoch][peer]
        return probs

    monkeypatch.setattr(mining_module, "predict_proba", scripted)
    with one_thread():
        result = mine_conflicting(ctx, epochs=3, tau=0.8)
    # by hand: 1 - mean over epochs of the peers' mean p_y (det_peer.py:182, 193-195)
    assert result.scores[0].item() == pytest.approx(1 - (0.8 + 0.4 + 0.3) / 3)  # 0.5; the last epoch alone: 0.7
    assert result.scores[1].item() == pytest.approx(1 - (0.1 + 0.1 + 0.2) / 3)  # 0.867
    assert result.conflicting[:2].tolist() == [False, True]  # score >= tau (main_ecsga.py:105-107)
    assert len(calls) == 6


# ---- 11. GCE: the code's q p_y^q weighting, in PGD and LfF ----

def test_gce_scaled_by_q_has_the_gradient_of_the_authors_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    y, q = torch.tensor([0, 2]), 0.7
    (grad,) = torch.autograd.grad(generalized_cross_entropy(logits, y, q, "sum", scale=q), logits)
    expected = []
    for row, label in zip(logits.tolist(), y.tolist()):
        exp = [math.exp(v) for v in row]
        p = [e / sum(exp) for e in exp]
        weight = q * p[label] ** q  # loss.py:20 (LfF and PGD)
        expected.append([weight * (p[k] - (k == label)) for k in range(3)])
    assert torch.allclose(grad, torch.tensor(expected), atol=1e-6)
    (paper,) = torch.autograd.grad(generalized_cross_entropy(logits, y, q, "sum"), logits)
    assert torch.allclose(paper * q, grad, atol=1e-6)  # the paper's loss: the same direction, 1/q larger


def test_pgd_biased_model_takes_the_authors_sgd_step_on_the_authors_gce():
    # one batch, one step; the run's clipping is not the code's and does not touch the biased model
    config = tiny_config(method="pgd", optimizer="sgd", lr=0.5, momentum=0.0, grad_clip=0.01,
                         batch_size=10_000, hparams={"bias_epochs": 1, "q": 0.7})
    ctx = context(config)
    twin = fresh_model(ctx, BIASED_INIT).train()  # the biased model before its step
    train = ctx.dataset.splits["train"]
    seen, handle = last_layer_io(twin)
    twin(train.x)
    handle.remove()
    expected = head(twin).weight.double() - 0.5 * authors_gce_weight_grad(seen["logits"], seen["h"], train.y, 0.7)
    method = PGD(config.hparams, ctx)
    method.prepare(ctx)
    stepped = head(method.biased_model).weight.double()
    assert torch.allclose(stepped, expected, atol=1e-6)
    assert not torch.allclose(stepped, head(twin).weight.double(), atol=1e-4)  # it moved


def test_lff_biased_model_gets_the_authors_gce_gradient():
    config = tiny_config(method="lff", grad_clip=0.0, hparams={"q": 0.7})
    ctx = context(config)
    method = LfF(config.hparams, ctx)
    method.prepare(ctx)
    batch = ctx.dataset.splits["train"].batch(torch.arange(8))
    seen, handle = last_layer_io(method.biased_model)
    method.loss(ctx.model, batch)
    handle.remove()
    expected = authors_gce_weight_grad(seen["logits"], seen["h"], batch.y, 0.7)
    grad = head(method.biased_model).weight.grad
    assert grad is not None
    assert torch.allclose(grad.double(), expected, atol=1e-6)


# ---- 12. JTT: the training set plus up_weight copies of the error set ----

def test_error_samples_are_drawn_up_weight_plus_one_times_as_the_authors_concatenation():
    error_set = torch.tensor([False, True, False, True, True, False])
    up_weight = JTT.hparams["upweight"].default
    assert up_weight == 20
    # run_expt.py:97-106: ConcatDataset([train, Subset(train, aug_indices * up_weight)])
    authors = Counter(list(range(6)) + [1, 3, 4] * up_weight)
    order = UpsampleSampler(6, error_set, up_weight).indices(0, torch.Generator().manual_seed(0))
    assert Counter(order.tolist()) == authors  # 21 draws of each error sample, 6 + 60 in all
    weights = error_set_weights(error_set, up_weight)  # mode=loss: the same counts as loss weights
    assert torch.allclose(weights / weights[0], torch.tensor([float(authors[i]) for i in range(6)]))


# ---- 13. DFR: the authors' standardisation and 20 refits ----

def dfr_with_recorded_fits(monkeypatch, **hparams) -> tuple[DFR, RunContext, list, list]:
    fits, draws = [], []

    def fake_fit(z, y, c, num_classes, sample_weight=None):
        fits.append(z.copy())
        return np.zeros((num_classes, z.shape[1])), np.zeros(num_classes)

    def recorded_subset(groups, generator):
        draws.append(balanced_subset(groups, generator))
        return draws[-1]

    monkeypatch.setattr(dfr_module, "fit_l1_logistic", fake_fit)
    monkeypatch.setattr(dfr_module, "balanced_subset", recorded_subset)
    config = tiny_config(method="dfr", hparams=hparams)
    ctx = context(config)
    ctx.model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        ctx.model(ctx.dataset.splits["train"].x[:64])
    return DFR(config.hparams, ctx), ctx, fits, draws


def test_dfr_tunes_every_c_on_one_balanced_subset_standardised_on_itself(monkeypatch):
    method, ctx, fits, draws = dfr_with_recorded_fits(monkeypatch)
    method.prepare(ctx)
    tuning = fits[:len(C_GRID)]
    assert all(np.array_equal(z, tuning[0]) for z in tuning)  # dfr_evaluate_spurious.py:82-89, 111-115
    varying = tuning[0].std(0) > 1e-6
    # StandardScaler.fit_transform on the regressions' own inputs (lines 101-104): mean 0, std 1
    assert np.allclose(tuning[0].mean(0), 0.0, atol=1e-9)
    assert np.allclose(tuning[0].std(0)[varying], 1.0, atol=1e-9) and varying.sum() > 0


def test_dfr_averages_twenty_refits_standardised_with_the_training_splits_features(monkeypatch):
    method, ctx, fits, draws = dfr_with_recorded_fits(monkeypatch)
    method.prepare(ctx)
    assert len(fits) == len(C_GRID) + 20  # dfr_evaluate_spurious.py:132
    val_h, _ = last_layer_inputs(ctx.model, ctx.dataset.splits["val"].x)
    train_h, _ = last_layer_inputs(ctx.model, ctx.dataset.splits["train"].x)
    h, t = val_h.double().numpy(), train_h.double().numpy()
    mean, std = t.mean(0), np.where(t.std(0) > 1e-8, t.std(0), 1.0)  # scaler.fit(train), lines 135-137
    for z, chosen in zip(fits[len(C_GRID):], draws[1:]):
        assert np.allclose(z, (h[chosen.numpy()] - mean) / std, atol=1e-9)  # lines 163-164


def test_feature_moments_of_batches_equal_the_standardiser_of_the_whole():
    generator = torch.Generator().manual_seed(0)
    whole = torch.randn(23, 4, generator=generator, dtype=torch.float64) * 3 + 5
    whole[:, 2] = 1.5  # a constant feature is left as it is
    mean, std = feature_moments(whole.split([7, 1, 10, 5]))
    expected_mean, expected_std = standardiser(whole)
    assert torch.allclose(mean, expected_mean) and torch.allclose(std, expected_std)
    assert torch.allclose(std[[0, 1, 3]], torch.from_numpy(whole.numpy().std(0))[[0, 1, 3]]) and std[2] == 1
