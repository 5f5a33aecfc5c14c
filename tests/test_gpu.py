"""The CUDA path: every method on the papers' architectures, bf16 autocast, channels_last,
both data placements, and resuming. Marked ``gpu``: skipped without CUDA; `make
gpu-check` runs them (with the GPU benchmarks) on a machine that has one.
"""

from __future__ import annotations

import pytest
import torch

import real_layouts
from debiasbench.contract.config import resolve_config
from debiasbench.core.registry import METHODS
from debiasbench.run.runner import run
from debiasbench.testing import crash_resume_and_rerun, crashing_once, without_timing

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ARCHITECTURES = ("resnet18", "vgg16", "efficientnet_b0")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return real_layouts.image_folder(tmp_path_factory.mktemp("gpu_folder"), per_class=16)


def gpu_config(folder, method: str, model: str, placement: str, **overrides):
    return resolve_config({
        "method": method, "dataset": "image_folder", "model": model, "device": "cuda", "epochs": 1,
        "batch_size": 8, "amp": True, "channels_last": True, "data_placement": placement,
        "experiment": "gpu", "log_model": method == "vanilla",
        "allow_unsuited": True,  # GPU mechanics: gradient alignment runs on the injected artifact too
        "dataset_params": {"root": str(folder), "image_size": 64, "artifact": "patch", "p": 0.8},
        **overrides,
    })


@pytest.mark.parametrize("placement", ["device", "stream"])
@pytest.mark.parametrize("model", ARCHITECTURES)
@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_trains_and_evaluates_on_cuda(folder, tracker, tmp_path, method, model, placement):
    config = gpu_config(folder, method, model, placement, checkpoint_dir=str(tmp_path / "ckpt"))
    result = run(config, tracker, progress=False)
    assert 0.0 <= result.metrics["test_acc"] <= 1.0
    assert result.metrics["samples_per_second"] > 0
    run_info = tracker.client.get_run(result.run_id)
    assert run_info.data.tags["debiasbench.data_placement"] == placement


@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
def test_a_resumed_cuda_run_ends_like_an_uninterrupted_one(folder, tracker, register, tmp_path, model):
    from debiasbench.methods.vanilla import Vanilla

    register(METHODS, crashing_once(Vanilla, "crashing_vanilla_gpu", at_step=9))
    config = gpu_config(folder, "crashing_vanilla_gpu", model, "device", epochs=3, deterministic=True,
                        checkpoint_dir=str(tmp_path / "ckpt"), log_model=False)
    resumed, uninterrupted = crash_resume_and_rerun(config, tracker)
    assert without_timing(resumed.metrics) == pytest.approx(without_timing(uninterrupted.metrics), abs=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_resumes_on_cuda_and_ends_like_an_uninterrupted_run(folder, tracker, register, tmp_path, method):
    """Named streams (CUDA generators included) and each method's state survive a crash."""
    crashing = register(METHODS, crashing_once(METHODS.get(method), f"crashing_{method}_gpu", at_step=5))
    config = gpu_config(folder, crashing.name, "resnet18", "device", epochs=2, deterministic=True,
                        checkpoint_dir=str(tmp_path / "ckpt"), log_model=False)
    if config.epochs == 0:
        pytest.skip(f"{method} trains nothing by default: nothing to resume")
    try:
        resumed, uninterrupted = crash_resume_and_rerun(config, tracker)
    except pytest.fail.Exception:
        pytest.skip(f"{method} trains no parameter with its defaults: nothing to resume")
    assert without_timing(resumed.metrics) == pytest.approx(without_timing(uninterrupted.metrics), abs=1e-6)
