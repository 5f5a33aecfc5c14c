"""What a run spends besides training, against a bare training loop, in one process.

    python tools/measure_phases.py [--rounds 3] [--method vanilla]

The config is the one the docs' performance page quotes: ``synthetic_artifacts`` with
2,000 / 500 / 1,000 images of 32x32 pixels, ``small_cnn``, 5 epochs, on the CPU with one
torch thread. Each round times a bare PyTorch loop over the same training split and then
a full ``run`` (rounds alternate, so load on a shared machine hits both alike), and prints
the run's phase seconds (``train_seconds``, ``seconds/<phase>``), the non-training part
over training, and run / bare. Nothing here is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from debiasbench.contract.config import resolve_config
from debiasbench.run.runner import PHASE_SECONDS, build_dataset, run
from debiasbench.testing import bare_training_loop
from debiasbench.track.store import Tracker

PARAMS = {"n_train": 2000, "n_val": 500, "n_test": 1000, "image_size": 32}
PHASES = ("validate", "test", "explain", "tracking")


def bare_loop(config) -> float:
    """Seconds of the training alone (``bare_training_loop``) over the same data."""
    dataset = build_dataset(config)
    began = time.perf_counter()
    bare_training_loop(config, dataset)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="vanilla")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shares, overall = [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            config = resolve_config({"method": args.method, "dataset": "synthetic_artifacts", "epochs": 5,
                                     "device": "cpu", "checkpoint_dir": f"{folder}/checkpoints",
                                     "log_model": False, "dataset_params": PARAMS})
            bare = bare_loop(config)
            began = time.perf_counter()
            metrics = run(config, Tracker(f"sqlite:///{folder}/mlflow.db"), progress=False).metrics
            whole = time.perf_counter() - began
        other = sum(metrics[PHASE_SECONDS + phase] for phase in PHASES)
        shares.append(other / metrics["train_seconds"])
        overall.append(whole / bare)
        phases = ", ".join(f"{p} {metrics[PHASE_SECONDS + p]:.2f}" for p in PHASES)
        print(f"round {round_ + 1}: bare {bare:.2f} s, run {whole:.2f} s (train {metrics['train_seconds']:.2f}, "
              f"{phases}); non-training / training {shares[-1]:.3f}; run / bare {overall[-1]:.2f}")
    print(f"median non-training / training {statistics.median(shares):.3f}; "
          f"median run / bare {statistics.median(overall):.2f}")


if __name__ == "__main__":
    main()
