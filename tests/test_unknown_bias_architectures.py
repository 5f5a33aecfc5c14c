"""Gradient Alignment (mined bias labels) and PGD (both gradient paths) run with every
architecture of the registry and a timm model (tiny inputs, CPU)."""

from __future__ import annotations

import pytest

from debiasbench.runner import run
from debiasbench.testing import SMALL_IMAGES, tiny_config

METHODS = {
    "gradient_alignment": {"bias_source": "mined", "mining_epochs": 1},
    "pgd": {"bias_epochs": 1},
    "pgd-all-params": {"bias_epochs": 1, "grad_params": "all"},
}


@pytest.mark.parametrize("model", [
    "small_cnn", "mlp", "resnet18", "efficientnet_b0", "timm:resnet18",
    pytest.param("vgg16", marks=pytest.mark.slow),
])
def test_gradient_alignment_and_pgd_run_on_the_architecture(tracker, model):
    # vgg16's 138M parameters make the every-parameter vmap path one sample per chunk:
    # a minute on a CPU for nothing the other architectures do not already show.
    methods = {k: v for k, v in METHODS.items() if not (model == "vgg16" and k == "pgd-all-params")}
    for label, hparams in methods.items():
        config = tiny_config(method=label.split("-")[0], model=model, epochs=1, batch_size=16,
                             dataset_params=SMALL_IMAGES, hparams=hparams, log_model=False)
        result = run(config, tracker, progress=False)
        assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0, label
    stored = tracker.client.search_runs([tracker.experiment_id])
    assert {r.info.status for r in stored} == {"FINISHED"} and len(stored) == len(methods)
    assert all("mining_precision" in r.data.metrics or "pgd_conflicting_mass" in r.data.metrics for r in stored)
