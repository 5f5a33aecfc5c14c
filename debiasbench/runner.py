"""One run: seed, build, prepare the method, train, select, evaluate, log.

The runner owns everything methods should not re-solve: devices, seeds, the optimiser
and schedule, bf16 autocast on CUDA, gradient clipping, divergence checks, per-epoch
atomic checkpoints (a killed run resumes from its last epoch) and logging.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ContextManager, Mapping

import numpy as np
import torch
from torch import nn

from debiasbench import checkpoints
from debiasbench.base_model import MODEL_ARTIFACT, resolve_base_checkpoint
from debiasbench.class_weights import class_weights
from debiasbench.config import RunConfig
from debiasbench.data import BenchmarkDataset, DeviceLoader
from debiasbench.errors import RunFailed, UserError
from debiasbench.evaluate import eval_batch_for, evaluate
from debiasbench.method import RunContext
from debiasbench.models import LatentModel, build_model
from debiasbench.registry import DATASETS, METHODS
from debiasbench.tracking import TrackedRun, Tracker

#: Steps between host reads of the divergence flag (each read waits for the device).
NONFINITE_CHECK_EVERY = 50


@dataclass
class RunResult:
    run_id: str
    run_key: str
    metrics: dict[str, float]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def build_dataset(config: RunConfig) -> BenchmarkDataset:
    return DATASETS.get(config.dataset)(**config.dataset_params)


def build_run_model(config: RunConfig, dataset: BenchmarkDataset, device: torch.device) -> LatentModel:
    """The seeded model of a run (building it also validates the architecture and latent layer)."""
    seed_everything(config.seed, config.deterministic)
    model = build_model(config.model, dataset.num_classes, config.latent_layer, config.pretrained,
                        input_shape=dataset.sample_shape)
    model = model.to(device)
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(config: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    optimizer_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.schedule == "constant" or total_steps == 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def show_progress() -> bool:
    """A progress bar for a human at a terminal; silent in CI and when piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class Trainer:
    """The training loop of one run; built by ``run``."""

    def __init__(self, config: RunConfig, dataset: BenchmarkDataset, model: LatentModel,
                 tracked: TrackedRun, device: torch.device, progress: bool):
        self.config = config
        self.model = model
        self.dataset = dataset
        self.tracked = tracked
        self.device = device
        self.progress = progress
        self.use_amp = config.amp and device.type == "cuda"
        self.checkpoint_dir = Path(config.checkpoint_dir) / config.run_key()

    def autocast(self) -> ContextManager:
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def build(self) -> tuple[Any, RunContext]:
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        weights = class_weights(self.config.class_weights, self.dataset.splits["train"].y,
                                self.dataset.num_classes)
        ctx = RunContext(config=self.config, dataset=self.dataset, model=self.model, device=self.device,
                         generator=generator, log_metrics=self.tracked.log_metrics, note=_note,
                         class_weights=None if weights is None else weights.to(self.device))
        return METHODS.get(self.config.method)(self.config.hparams, ctx), ctx

    def train(self) -> dict[str, float]:
        config, model = self.config, self.model
        method, ctx = self.build()
        prepared: dict[str, float] = {}  # what prepare logs (mining precision ...) is a result too

        def log_prepared(values: Mapping[str, float]) -> None:
            prepared.update({k: float(v) for k, v in values.items()})
            self.tracked.log_metrics(values)

        ctx.log_metrics = log_prepared
        began = time.perf_counter()
        method.prepare(ctx)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        prepared["prepare_seconds"] = time.perf_counter() - began  # auxiliary models, mining, CAVs
        ctx.log_metrics = self.tracked.log_metrics
        trainable = {id(p) for p in method.trainable_parameters(model)}
        params = [p for p in model.parameters() if id(p) in trainable]
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        loader = DeviceLoader(self.dataset.splits["train"], config.batch_size, ctx.generator,
                              sampler=method.sampler(ctx), augment=self.dataset.augment if config.augment else None)
        optimizer = make_optimizer(config, params) if params else None
        schedule = make_schedule(config, optimizer, config.epochs * len(loader)) if optimizer else None
        start_epoch, best = self.resume(model, method, optimizer, schedule, ctx.generator)
        train_seconds, samples = 0.0, 0
        for epoch in range(start_epoch, config.epochs if optimizer else 0):
            began = time.perf_counter()
            train_logs = self.train_epoch(model, method, loader, optimizer, schedule, params, epoch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds += time.perf_counter() - began
            samples += train_logs.pop("samples")
            val = evaluate(method.eval_model(model), self.dataset, config.eval_batch_size,
                           prefixes=("val",), autocast=self.autocast, facts=False)
            self.tracked.log_metrics({**{f"epoch/{k}": v for k, v in {**train_logs, **val}.items()}},
                                     step=epoch + 1)
            if config.selection == "best" and config.selection_metric not in val:
                raise RunFailed(f"selection_metric {config.selection_metric!r} is undefined on "
                                f"{config.dataset}'s validation split; defined: {', '.join(sorted(val))}")
            score = val.get(config.selection_metric)
            improved = config.selection == "best" and (best is None or score > best)
            if improved:
                best = score
                checkpoints.save_atomic({"model": model.state_dict()}, self.checkpoint_dir / "best.pt")
            checkpoints.save_atomic(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "epoch": epoch + 1, "best": best,
                 "generator": ctx.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
                 "method": method.state_dict()},
                self.checkpoint_dir / "last.pt")
        if config.selection == "best" and (self.checkpoint_dir / "best.pt").exists():
            model.load_state_dict(checkpoints.load(self.checkpoint_dir / "best.pt", self.device)["model"])
        final_model = method.eval_model(model)
        metrics = {**prepared, **evaluate(final_model, self.dataset, config.eval_batch_size, autocast=self.autocast)}
        metrics.update(self.explain(final_model))
        if config.log_model:
            self.log_model(model)
        metrics["train_seconds"] = train_seconds
        metrics["samples_per_second"] = samples / train_seconds if train_seconds > 0 else 0.0
        return metrics

    def train_epoch(self, model, method, loader, optimizer, schedule, params, epoch) -> dict[str, float]:
        model.train()
        keep_frozen_norms_in_eval(model)
        totals: dict[str, torch.Tensor] = {}
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        samples = 0
        steps = 0
        with _progress(self.progress, len(loader), f"epoch {epoch + 1}/{self.config.epochs}") as advance:
            for steps, batch in enumerate(loader, start=1):
                with self.autocast():
                    loss, logs = method.loss(model, batch)
                nonfinite |= ~torch.isfinite(loss.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip, foreach=True)
                optimizer.step()
                schedule.step()
                for key, value in {"loss": loss, **logs}.items():
                    value = value.detach().float()
                    totals[key] = totals[key] + value if key in totals else value
                samples += len(batch)
                if steps % NONFINITE_CHECK_EVERY == 0 and bool(nonfinite):
                    raise RunFailed(f"non-finite loss in epoch {epoch + 1} (by step {steps})")
                advance()
        if bool(nonfinite):
            raise RunFailed(f"non-finite loss in epoch {epoch + 1}")
        values = torch.stack(list(totals.values())).cpu().tolist() if totals else []
        logs = {f"train_{k}": v / max(steps, 1) for k, v in zip(totals, values)}
        return {**logs, "samples": samples}

    def explain(self, model: nn.Module) -> dict[str, float]:
        """Artifact relevance, TCAV and CAV alignment where the dataset has artifact masks."""
        from debiasbench.evaluate import artifact_metrics

        if not isinstance(model, LatentModel):
            return {}
        with tempfile.TemporaryDirectory() as folder:
            heatmaps = Path(folder) / "heatmaps.png"
            cav_kind = self.config.hparams.get("cav_kind", "pattern")
            metrics, params = artifact_metrics(
                model, self.dataset, self.config.eval_batch_size, heatmaps, cav_kind,
                relevance_mask=self.config.relevance_mask, tcav_population=self.config.tcav_population,
                cav_samples=self.config.hparams.get("cav_samples", "predicted"))
            if heatmaps.exists():
                self.tracked.log_artifact(heatmaps)
        if params:
            self.tracked.log_params(params)
        return metrics

    def log_model(self, model: LatentModel) -> None:
        """The final weights as ``model.pt`` (corrections start from a vanilla run's)."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_ARTIFACT
            checkpoints.save_atomic(model.net.state_dict(), path)
            self.tracked.log_artifact(path)

    def resume(self, model, method, optimizer, schedule, generator) -> tuple[int, float | None]:
        """Continue from the last epoch a killed run of the same config checkpointed."""
        path = self.checkpoint_dir / "last.pt"
        if optimizer is None or not path.exists():
            return 0, None
        state = checkpoints.load(path, self.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"].cpu())
        method.load_state_dict(state.get("method", {}))
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:  # dropout on the GPU draws from it
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.tracked.set_tags({"debiasbench.resumed_from_epoch": state["epoch"]})
        return int(state["epoch"]), state["best"]


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Frozen normalisation layers keep their running statistics, as frozen layers should
    (corrections that fine-tune only the head must not drift the backbone's BatchNorm)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and not any(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str):
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield partial(bar.advance, task)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def run(config: RunConfig, tracker: Tracker, progress: bool | None = None) -> RunResult:
    """Train and evaluate one configuration; the outcome is recorded in ``tracker``.

    The dataset and the model are built before the tracked run starts, so a missing data
    file or an unknown latent layer is a plain error and leaves nothing in the store. A
    correction first finds (or trains) its vanilla base run.
    """
    device = resolve_device(config.device)
    dataset = build_dataset(config)
    placement = dataset.place(device, config.data_placement)
    config = replace(config, eval_batch_size=eval_batch_for(config.eval_batch_size, dataset.sample_shape))
    if device.type == "cuda" and config.channels_last:
        for split in (*dataset.splits.values(), *dataset.views.values()):
            split.channels_last = True
    progress = show_progress() if progress is None else progress
    model = build_run_model(config, dataset, device)
    base_folder, base_run_id = None, None
    try:
        if "pretrained_checkpoint" in METHODS.get(config.method).requires:
            initial_state, base_run_id = resolve_base_checkpoint(
                config, tracker, train=lambda base: run(base, tracker, progress), log=_note)
            base_folder = initial_state.parent
            model.net.load_state_dict(checkpoints.load(initial_state, device), strict=True)
            seed_everything(config.seed, config.deterministic)  # same state whether the base was trained now or not
        with tracker.start(config) as tracked:
            if base_run_id:
                tracked.set_tags({"debiasbench.base_run_id": base_run_id})
            tracked.set_tags({"debiasbench.data_placement": placement})
            trainer = Trainer(config, dataset, model, tracked, device, progress)
            metrics = trainer.train()
            tracked.log_metrics(metrics, step=config.epochs)
    finally:
        if base_folder is not None:
            shutil.rmtree(base_folder, ignore_errors=True)
    shutil.rmtree(trainer.checkpoint_dir, ignore_errors=True)
    return RunResult(run_id=tracked.run_id, run_key=config.run_key(), metrics=metrics)
