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

import pytest
import torch

from debiasbench import mining as mining_module
from debiasbench.config import resolve_config
from debiasbench.datasets.colored_digits import ColoredDigits
from debiasbench.method import RunContext
from debiasbench.methods import gradient_alignment as ga_module
from debiasbench.methods.gradient_alignment import GradientAlignment
from debiasbench.mining import MiningResult, mine_conflicting
from debiasbench.testing import one_thread


# ---- 10. peer-picking: 50 epochs, the score averaged over every epoch ----

def digits_context(**config) -> RunContext:
    cfg = resolve_config({"dataset": "colored_digits", "device": "cpu", **config,
                          "dataset_params": {"bias_ratio": 0.99, "image_size": 8}})
    return RunContext(config=cfg, dataset=ColoredDigits(**cfg.dataset_params), model=None,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))


def test_gradient_alignment_mines_with_fifty_peer_epochs_by_default_as_the_authors_code(monkeypatch):
    calls = []

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
    calls = []

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
