"""Benchmarks report ratios, not seconds: each group is one test whose ``compare`` times a
baseline and its candidates in interleaved rounds (``interleave.py``, imported as
``benchmarks.interleave`` since pytest puts ``tests/`` on the path), and the summary prints
every candidate's median ratio over the baseline with its spread, the rounds, torch's
threads and the load average while it was measured."""

from __future__ import annotations

import functools

import pytest

from benchmarks.interleave import compare as interleaved_compare
from benchmarks.interleave import summary_lines


def pytest_terminal_summary(terminalreporter, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    lines = []
    for bench in getattr(session, "benchmarks", None) or []:
        lines += summary_lines(bench.group or bench.name, bench.extra_info)
    if lines:
        terminalreporter.write_sep("=", "ratios against the baseline of each group (median, 10th-90th percentile)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def compare(benchmark):
    """``compare(baseline, {name: candidate, ...}, baseline_name=..., rounds=..., clock=...)``: this
    test's group measured by ``interleave.compare``; returns its ``Comparison``."""
    return functools.partial(interleaved_compare, benchmark)


@pytest.fixture(scope="session")
def random_jpegs():
    """Factory: ``(folder, n, size) -> paths`` of ``n`` JPEGs of random pixels, seeded."""
    import numpy as np
    from PIL import Image

    def write(folder, n: int, size: int):
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n):
            path = folder / f"{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
            paths.append(path)
        return paths

    return write


@pytest.fixture(scope="session")
def colored_digits():
    from debiasbench.core.hparams import resolve
    from debiasbench.core.registry import DATASETS

    cls = DATASETS.get("colored_digits")
    return cls(**resolve(cls.params, {}, ""))


BATCH = 64


@pytest.fixture
def method_on_digits(colored_digits):
    """Factory: ``(method, ctx)`` of a registered method on coloured digits with a fresh
    small_cnn seeded 0, not yet prepared."""
    import torch

    from debiasbench.contract.config import resolve_config
    from debiasbench.contract.method import RunContext
    from debiasbench.models.build import build_model
    from debiasbench.core.registry import METHODS

    def make(method_name: str, hparams: dict | None = None):
        torch.manual_seed(0)
        model = build_model("small_cnn", 10)
        config = resolve_config({"device": "cpu", "method": method_name, "hparams": hparams or {}})
        ctx = RunContext(config=config, dataset=colored_digits, model=model, device=torch.device("cpu"),
                         generator=torch.Generator().manual_seed(0))
        return METHODS.get(method_name)(config.hparams, ctx), ctx

    return make


@pytest.fixture
def method_step(colored_digits, method_on_digits):
    """Factory: one training step (zero_grad, the method's loss, backward, Adam step) of a
    prepared method on the same first batch of 64 coloured digits, for step-time ratios."""
    import torch

    from debiasbench.data.dataset import Loader

    def make(method_name: str, hparams: dict | None = None):
        method, ctx = method_on_digits(method_name, hparams)
        method.prepare(ctx)
        model = ctx.model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = next(iter(Loader(colored_digits.splits["train"], BATCH, torch.Generator().manual_seed(0))))

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss, _ = method.loss(model, batch)
            loss.backward()
            optimizer.step()

        return step

    return make
