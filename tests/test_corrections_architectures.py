"""Every correction runs with every architecture of the registry (tiny inputs, CPU)."""

from __future__ import annotations

import pytest

from debiasbench.run.runner import run
from debiasbench.testing import SMALL_IMAGES, tiny_config

CORRECTIONS = ("rrclarc", "aclarc", "pclarc", "rrr")


def tiny_run(tracker, method: str, model: str):
    config = tiny_config(method=method, model=model, epochs=1, batch_size=16,
                         dataset_params=SMALL_IMAGES)
    return run(config, tracker, progress=False)


@pytest.mark.parametrize("model,explanation,corrections", [
    ("small_cnn", "lrp", CORRECTIONS),
    ("mlp", "lrp", CORRECTIONS),  # a 2-D [N, 100] latent
    ("resnet18", "lrp", CORRECTIONS),  # the one torchvision architecture of make test-fast
    pytest.param("efficientnet_b0", "input_x_gradient", CORRECTIONS, marks=pytest.mark.slow),
    # vgg16 (138M parameters, minutes on a CPU): RR-ClArC alone covers its latent layer, the
    # latent gradient and its LRP rules here; tests/test_gpu.py runs every correction on it
    # under make gpu-check.
    pytest.param("vgg16", "lrp", ("rrclarc",), marks=pytest.mark.slow),
])
def test_every_correction_runs_on_the_architecture(tracker, model, explanation, corrections):
    for method in corrections:
        result = tiny_run(tracker, method, model)
        assert 0.0 <= result.metrics["artifact_relevance"] <= 1.0
        assert "test_biased_acc" in result.metrics and "tcav_score" in result.metrics
        params = tracker.get_run(result.run_id).data.params
        assert params["explanation"] == explanation
    statuses = {r.info.status for r in tracker.client.search_runs([tracker.experiment_id])}
    assert statuses == {"FINISHED"}
