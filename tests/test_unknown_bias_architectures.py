"""Gradient Alignment (mined bias labels) and PGD (both gradient paths) run with every
architecture of the registry and a timm model (tiny inputs, CPU)."""

from __future__ import annotations

import pytest

from debiasbench.run.runner import run
from debiasbench.testing import SMALL_IMAGES, tiny_config

METHODS = {
    "gradient_alignment": {"bias_source": "mined", "mining_epochs": 1},
    "pgd": {"bias_epochs": 1},
    "pgd-all-params": {"bias_epochs": 1, "grad_params": "all"},
}


@pytest.mark.parametrize("model", [
    "small_cnn", "mlp",
    # torchvision / timm architectures: seconds each on a CPU, so `slow` (make test-fast skips them)
    *[pytest.param(m, marks=pytest.mark.slow) for m in ("resnet18", "efficientnet_b0", "timm:resnet18")],
    # vgg16 (138M parameters, minutes on a CPU): its latent layer and LRP rules are covered by
    # test_corrections_architectures; tests/test_gpu.py runs this method on it under make gpu-check.
])
def test_gradient_alignment_and_pgd_run_on_the_architecture(tracker, model):
    for label, hparams in METHODS.items():
        config = tiny_config(method=label.split("-")[0], model=model, epochs=1, batch_size=16,
                             dataset_params=SMALL_IMAGES, hparams=hparams, log_model=False)
        result = run(config, tracker, progress=False)
        assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0, label
    stored = tracker.client.search_runs([tracker.experiment_id])
    assert {r.info.status for r in stored} == {"FINISHED"} and len(stored) == len(METHODS)
    assert all("mining_precision" in r.data.metrics or "pgd_conflicting_mass" in r.data.metrics for r in stored)
