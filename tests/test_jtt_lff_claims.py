"""The claims of JTT and LfF on coloured digits at bias ratio 0.99, 8x8 (as in
``benchmarks/unknown_bias_digits.yaml``): each raises accuracy on bias-conflicting test
digits over vanilla trained with the same settings, averaged over 3 seeds.

JTT runs the sweep's protocol (5 epochs, batch 64) with a 3-epoch identification model.
LfF needs more updates for its biased twin to pull ahead of the debiased model on the
colour-aligned digits (at 5 epochs, batch 64, it ties vanilla: 0.037 vs 0.045), so its
comparison runs 10 epochs at batch 16, for vanilla too. Measured numbers: README."""

from __future__ import annotations

import statistics

import pytest
import torch

from debiasbench.config import resolve_config
from debiasbench.runner import run
from debiasbench.tracking import Tracker

SEEDS = (0, 1, 2)
#: (method, training keys, hparams) compared with vanilla under the same training keys.
CLAIMS = {
    "jtt": ({"epochs": 5, "batch_size": 64}, {"id_epochs": 3, "upweight": 20}),
    "lff": ({"epochs": 10, "batch_size": 16}, {}),
}


def mean_metrics(tmp_path, method: str, training: dict, hparams: dict) -> dict[str, float]:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "claims")
    runs = []
    for seed in SEEDS:
        config = resolve_config({"method": method, "dataset": "colored_digits", "device": "cpu", "seed": seed,
                                 "log_model": False, "experiment": "claims", **training,
                                 "checkpoint_dir": str(tmp_path / "ckpt"), "hparams": hparams,
                                 "dataset_params": {"bias_ratio": 0.99, "image_size": 8}})
        runs.append(run(config, tracker, progress=False).metrics)
    return {name: statistics.mean(m[name] for m in runs) for name in runs[0]}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CLAIMS))
def test_method_raises_conflicting_accuracy_over_vanilla(tmp_path, method):
    training, hparams = CLAIMS[method]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x8 digits: intra-op threads only add contention
    try:
        vanilla = mean_metrics(tmp_path, "vanilla", training, {})
        debiased = mean_metrics(tmp_path, method, training, hparams)
    finally:
        torch.set_num_threads(threads)
    # measured (3 seeds): JTT 0.242 vs 0.045; LfF 0.229 vs 0.195 (+0.025, +0.053, +0.022 per seed)
    margin = {"jtt": 0.10, "lff": 0.02}[method]
    assert debiased["test_conflicting_acc"] >= vanilla["test_conflicting_acc"] + margin
    assert debiased["test_unbiased_acc"] > vanilla["test_unbiased_acc"]
    if method == "jtt":
        assert debiased["mining_precision"] >= 0.8  # the error set is the conflicting digits
