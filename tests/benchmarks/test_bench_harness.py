"""Per-run cost of the harness against the training it wraps, for a tiny run (2 epochs of
the small CNN on tiny ``synthetic_artifacts``): a bare PyTorch loop over the same data
is the baseline; ``debiasbench`` in this process adds building the data, tracking,
evaluation, explanation and checkpoints; a fresh process adds interpreter start and
imports, which is what a sweep job costs with ``--workers`` spawning a worker (once per
worker) or ``debiasbench run`` (every time)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from debiasbench.data import DeviceLoader
from debiasbench.models import build_model
from debiasbench.runner import build_dataset, run
from debiasbench.testing import TINY_SYNTHETIC, tiny_config


@pytest.fixture
def config():
    return tiny_config(log_model=False)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_baseline_bare_training_loop(benchmark, config):
    dataset = build_dataset(config)
    train = dataset.splits["train"]

    def train_only():
        torch.manual_seed(0)
        model = build_model(config.model, dataset.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            for batch in DeviceLoader(train, config.batch_size, torch.Generator().manual_seed(0)):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(batch.x), batch.y).backward()
                optimizer.step()

    benchmark.pedantic(train_only, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_in_this_process_with_tracking_and_evaluation(benchmark, config, tracker):
    benchmark.pedantic(lambda: run(config, tracker, progress=False), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="harness_per_run")
def test_run_in_a_fresh_process_through_the_cli(benchmark, config, tracking_uri):
    sets = [f"--set=dataset_params.{k}={v}" for k, v in TINY_SYNTHETIC.items()]
    command = [sys.executable, "-m", "debiasbench.cli", "run", "-m", "vanilla", "-d", "synthetic_artifacts",
               "--set=epochs=2", "--set=batch_size=32", "--set=device=cpu", "--set=log_model=false",
               *sets, "--tracking-uri", tracking_uri]

    def fresh_process():
        subprocess.run(command, check=True, capture_output=True)

    benchmark.pedantic(fresh_process, rounds=3, warmup_rounds=1)
