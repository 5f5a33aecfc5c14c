"""Evaluation time per image by batch size on the CPU, in interleaved rounds.

    python tools/measure_eval_batch.py [--rounds 9] [--threads 1 2] [--size 32] [--images 2048]

What ``eval_batch_for`` chooses on the CPU (``CPU_EVAL_PIXEL_BUDGET``: 64 images of 32x32
pixels) is checked against the alternatives here: ``small_cnn`` (10 classes, eval mode)
predicts ``--images`` random images of ``--size`` pixels through ``predict``, as a run's
evaluation does, at every batch size of ``--batches``, in both layouts a CPU run
evaluates in (NCHW: the validation split; channels_last: the test split and the views).
Each round times every batch size once, in the given order on even rounds and reversed on
odd ones, so load that comes and goes reaches all of them; a batch size's figure is the
median over rounds of its time per image divided by the chosen batch's in the same round,
with the 10th-90th percentile of those ratios. Times are the process's CPU time (all its
threads) and the wall clock; with several threads the wall clock is what one waits for.
Nothing here is asserted: it is a measurement (docs/performance.md quotes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from debiasbench.data.dataset import eval_batch_for
from debiasbench.evaluation.metrics import predict
from debiasbench.models.build import build_model

BATCHES = (16, 32, 64, 128, 256, 512)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile, interpolating linearly (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def measure(model: torch.nn.Module, x: torch.Tensor, batches: list[int],
            rounds: int) -> dict[str, dict[int, list[float]]]:
    """Seconds per image, per clock and batch size, one entry per round."""
    seconds: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in CLOCKS}
    for b in batches:  # warm-up: allocator, oneDNN primitives
        predict(model, x[: 2 * b], b)
    for round_ in range(rounds):
        for b in batches if round_ % 2 == 0 else reversed(batches):
            started = {name: clock() for name, clock in CLOCKS.items()}
            predict(model, x, b)
            for name, clock in CLOCKS.items():
                seconds[name][b].append((clock() - started[name]) / len(x))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    args = parser.parse_args()
    chosen = eval_batch_for(None, (3, args.size, args.size), "cpu")
    batches = sorted(set(args.batches) | {chosen})
    torch.manual_seed(0)
    model = build_model("small_cnn", 10).eval()
    images = torch.rand(args.images, 3, args.size, args.size)
    print(f"small_cnn, {args.images} images of {args.size}x{args.size}, {args.rounds} rounds, torch "
          f"{torch.__version__}; eval_batch_for chooses {chosen}; load {os.getloadavg()[0]:.1f} at the start")
    print("ratios: time per image / that at the chosen batch, median over rounds (10th-90th percentile)")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for layout, x in (("NCHW", images), ("channels_last", images.contiguous(memory_format=torch.channels_last))):
            seconds = measure(model, x, batches, args.rounds)
            for name in CLOCKS:
                cells = []
                for b in batches:
                    ratios = [s / c for s, c in zip(seconds[name][b], seconds[name][chosen])]
                    per_image = statistics.median(seconds[name][b]) * 1e6
                    cells.append(f"{b}: {per_image:.0f} us {statistics.median(ratios):.2f} "
                                 f"({percentile(ratios, 10):.2f}-{percentile(ratios, 90):.2f})")
                print(f"{threads} thread{'s' if threads > 1 else ''}, {layout}, {name}: " + "; ".join(cells))
        print(f"load {os.getloadavg()[0]:.1f} after {threads} thread{'s' if threads > 1 else ''}")


if __name__ == "__main__":
    main()
