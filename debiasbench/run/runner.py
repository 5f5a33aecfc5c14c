"""One run: seed, build, prepare the method, train, select, evaluate, log.

The runner owns everything methods should not re-solve: devices, seeds, the optimiser
and schedule, bf16 autocast on CUDA, gradient clipping, divergence checks, per-epoch
atomic checkpoints (a killed run resumes from its last epoch) and logging.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from debiasbench.run import checkpoints, store_checkpoints
from debiasbench.run.claims import Claim, JobBusy, RunHeld
from debiasbench.run.base_model import MODEL_ARTIFACT, check_base_run, load_base_weights, resolve_base_checkpoint
from debiasbench.train.class_weights import class_weights
from debiasbench.contract.config import RunConfig
from debiasbench.data.dataset import BenchmarkDataset, Loader, eval_batch_for
from debiasbench.core.errors import RunFailed, RunInterrupted, UserError, one_line, sentence
from debiasbench.evaluation.explanation import ArtifactCav, artifact_metrics
from debiasbench.evaluation.metrics import evaluate, validation_views
from debiasbench.contract.method import Batch, Method, RunContext
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel
from debiasbench.core.registry import DATASETS, METHODS
from debiasbench.track import heartbeat
from debiasbench.track.inputs import dataset_input
from debiasbench.track.mlflow_model import log_torch_model
from debiasbench.track.store import TrackedRun, Tracker, store_problem
from debiasbench.train.loop import Epoch, keep_frozen_norms_in_eval, lay_out, run_loader, run_steps, train_epochs
from debiasbench.train.progress import ProgressReporter, announce, current, decided, reporting
from debiasbench.train.step import TrainingStep, autocast_for


#: Prefix of the metrics that time a run's phases besides training and preparation (not
#: ``validate_seconds``: names starting with ``val_`` / ``test_`` are validation and test
#: metrics to the leaderboard).
PHASE_SECONDS = "seconds/"
#: Tag of a run whose trained network could not be logged as an MLflow model: the reason.
MODEL_NOT_LOGGED_TAG = "debiasbench.model_not_logged"
#: Folder of ``checkpoint_dir`` where checkpoints that could not be resumed from are kept.
UNUSABLE_FOLDER = "unusable"
#: Where set, the folder of this process's checkpoints and claims whatever a config's
#: ``checkpoint_dir`` says: a cluster node's own scratch folder, set in its environment.
CHECKPOINT_DIR_VARIABLE = "DEBIASBENCH_CHECKPOINT_DIR"


@dataclass
class RunResult:
    run_id: str
    run_key: str
    metrics: dict[str, float]
    #: False where ``run(skip_finished=True)`` found the job finished by another process.
    ran: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


#: The run's torch threads (``--threads``): CPU results can differ in the last digits
#: between thread counts, so the count is recorded with every run (not in its run key).
THREADS_TAG = "debiasbench.torch_threads"


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python's, numpy's and torch's global generators; deterministic kernels on or off.

    ``torch.use_deterministic_algorithms`` imports ``torch._inductor`` to set inductor's
    flag too (a run that compiles nothing has no use for it), so it is called only where it
    changes something: to turn determinism on, or off after an earlier run of this process
    turned it on."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def build_dataset(config: RunConfig) -> BenchmarkDataset:
    return DATASETS.get(config.dataset)(**config.dataset_params)


def build_run_model(config: RunConfig, dataset: BenchmarkDataset, device: torch.device) -> LatentModel:
    """The seeded model of a run (building it also validates the architecture and latent layer)."""
    seed_everything(config.seed, config.deterministic)
    model = build_model(config.model, dataset.num_classes, config.latent_layer, config.pretrained,
                        input_shape=dataset.sample_shape)
    return lay_out(model.to(device), config, device)


def show_progress() -> bool:
    """A progress bar for a human at a terminal; silent in CI and when piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def progress_for(progress: bool | ProgressReporter | None) -> Iterator[ProgressReporter | None]:
    """Where a run's progress goes (``debiasbench.train.progress``): a reporter given, the
    current one (``reporting``, a sweep worker's) where ``progress`` is None and one is set,
    a bar (or lines, when piped) on stderr for True, or for None at a terminal
    (``show_progress``); nowhere for False."""
    if progress is None:
        progress = current() if decided() else show_progress()
    if isinstance(progress, bool):
        from rich.console import Console

        from debiasbench.run.display import console_progress

        with console_progress(Console(stderr=True), progress) as reporter:
            yield reporter
    else:
        yield progress


@dataclass
class Training:
    """What the epoch loop works with: the method, its context, the loader and the step
    (None where the method trains nothing, e.g. a projection applied at test time)."""

    method: Method
    ctx: RunContext
    loader: Loader
    step: TrainingStep | None


class Trainer:
    """The training loop of one run; built by ``run``. ``train`` reads as its steps."""

    def __init__(self, config: RunConfig, dataset: BenchmarkDataset, model: LatentModel,
                 tracked: TrackedRun, device: torch.device, progress: ProgressReporter | None,
                 keep_in_store: bool = False):
        """With ``keep_in_store``, each checkpoint is also logged as an artifact of the run
        (``debiasbench.run.store_checkpoints``)."""
        self.config = config
        self.keep_in_store = keep_in_store
        self.model = model
        self.dataset = dataset
        self.tracked = tracked
        self.device = device
        self.progress = progress
        self.checkpoint_dir = Path(config.checkpoint_dir) / config.run_key()
        #: What ``prepare`` logs (mining precision, ...) is a result of the run too.
        self.prepared: dict[str, float] = {}
        self.train_seconds = 0.0
        #: Seconds of each phase besides training and preparation (``seconds/<phase>``).
        self.seconds = {"validate": 0.0, "test": 0.0, "explain": 0.0}  # PHASE_SECONDS + name
        self.samples = 0
        #: The per-epoch curves logged so far, ``(step, {metric: value})``: a resumed run
        #: logs the earlier epochs' points again, from the checkpoint.
        self.history: list[tuple[int, dict[str, float]]] = []
        self.best: float | None = None
        #: Epochs trained and checkpointed so far (what a rerun resumes after).
        self.epochs_done = 0
        #: The validation metrics of the weights ``select`` keeps, where this process
        #: measured them: the final evaluation does not predict those views again.
        self.selected_validation: dict[str, float] | None = None

    def autocast(self) -> ContextManager:
        return autocast_for(self.device, self.config.amp)

    def train(self) -> dict[str, float]:
        """Prepare the method, freeze what it does not train, run the epochs, select the
        checkpoint, evaluate, explain and log; the final metrics, with the seconds of each
        phase: ``prepare_seconds``, ``train_seconds`` and ``seconds/validate``,
        ``seconds/test``, ``seconds/explain``, ``seconds/tracking`` (the store's writes
        until then)."""
        method, ctx = self.build()
        self.prepare(method, ctx)
        params = self.freeze(method)
        training = self.training(method, ctx, params)
        start_epoch = self.resume(training)
        if training.step is not None:
            self.train_epochs(training, start_epoch)
        self.select()
        final_model = method.eval_model(self.model)
        with self.phase("test"):
            metrics = {**self.prepared, **self.final_evaluation(final_model)}
        with self.phase("explain"):
            metrics.update(self.explain(final_model, method.artifact_cav()))
        if self.config.log_model:
            self.log_model(self.model)
        metrics["train_seconds"] = self.train_seconds
        metrics["samples_per_second"] = self.samples / self.train_seconds if self.train_seconds > 0 else 0.0
        metrics.update({f"{PHASE_SECONDS}{name}": seconds for name, seconds in self.seconds.items()})
        metrics[f"{PHASE_SECONDS}tracking"] = self.tracked.seconds
        return metrics

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall-clock seconds of the block (the device synchronised) to ``name``'s;
        the phase is reported as progress, but for ``validate`` (inside an epoch)."""
        if name != "validate":
            announce(name, self.progress)
        began = time.perf_counter()
        yield
        self.synchronize()
        self.seconds[name] += time.perf_counter() - began

    def build(self) -> tuple[Method, RunContext]:
        """The method and its context: the run's streams, class weights and logging."""
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        weights = class_weights(self.config.class_weights, self.dataset.splits["train"].y,
                                self.dataset.num_classes)
        ctx = RunContext(config=self.config, dataset=self.dataset, model=self.model, device=self.device,
                         generator=generator, log_metrics=self.tracked.log_metrics, note=_note,
                         class_weights=None if weights is None else weights.to(self.device))
        return METHODS.get(self.config.method)(self.config.hparams, ctx), ctx

    def prepare(self, method: Method, ctx: RunContext) -> None:
        """The method's preparation (CAVs, auxiliary models, mining), timed; what it logs is
        kept as final metrics too."""
        def log_prepared(values: Mapping[str, float]) -> None:
            self.prepared.update({k: float(v) for k, v in values.items()})
            self.tracked.log_metrics(values)

        ctx.log_metrics = log_prepared
        announce("prepare", self.progress)
        began = time.perf_counter()
        try:
            method.prepare(ctx)
        except KeyboardInterrupt:
            resumes = (self.checkpoint_dir / "last.pt").exists()
            raise RunInterrupted(
                f"interrupted while {self.config.method} prepared (not checkpointed); run the same command again to "
                + ("prepare again and resume training from its checkpoint" if resumes else "start it again")
            ) from None
        self.synchronize()
        self.prepared["prepare_seconds"] = time.perf_counter() - began
        ctx.log_metrics = self.tracked.log_metrics

    def freeze(self, method: Method) -> list[nn.Parameter]:
        """Switch off gradients of what the method does not train; the trained parameters."""
        trainable = {id(p) for p in method.trainable_parameters(self.model)}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        return [p for p in self.model.parameters() if id(p) in trainable]

    def training(self, method: Method, ctx: RunContext, params: list[nn.Parameter]) -> Training:
        """The loader of the method's sampling (and the dataset's augmentation) and the step."""
        loader = run_loader(self.config, self.dataset, ctx.generator, method.sampler(ctx))
        step = (TrainingStep.from_config(self.config, params, run_steps(self.config, loader), self.device)
                if params else None)
        return Training(method, ctx, loader, step)

    def train_epochs(self, training: Training, start_epoch: int) -> None:
        """The epochs from ``start_epoch`` on through the shared loop
        (``debiasbench.train.loop``): the method's loss per batch, ``end_epoch`` after each."""
        model, method = self.model, training.method
        assert training.step is not None

        def batch_loss(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
            loss, logs = method.loss(model, batch)
            return loss, {"loss": loss, **logs}

        self.epochs_done = start_epoch
        assert training.ctx.streams is not None
        try:
            with training.ctx.streams.stepping():  # ctx.init entered again per step raises
                train_epochs(training.loader, training.step, batch_loss, self.config.epochs, start=start_epoch,
                             models=[model], train_mode=keep_frozen_norms_in_eval,
                             after_epoch=partial(self.end_epoch, training), progress=self.progress)
        except KeyboardInterrupt:
            done = self.epochs_done
            raise RunInterrupted(
                f"interrupted in epoch {done + 1} of {self.config.epochs}; run the same command again to resume "
                + (f"after epoch {done} (checkpointed)" if done else "(no epoch had finished: from the start)")
            ) from None

    def end_epoch(self, training: Training, epoch: Epoch) -> None:
        """After an epoch's training: validate, log the curves, keep the best and the last
        checkpoint.

        An epoch is validated where model selection needs it (every epoch with
        ``selection=best``, the last one with ``last``) or ``val_curves`` asks for every
        epoch, on the views selection reads (``validation_views``): the natural validation
        split, plus the clean or biased view where ``selection_metric`` is measured on one.
        The final evaluation predicts the other views once, for the weights it evaluates.
        ``epoch.logs`` (the mean of each value the method logged over the epoch's steps)
        are logged with a ``train_`` prefix."""
        self.train_seconds += epoch.seconds
        self.samples += epoch.samples
        index = epoch.index
        train_logs = {f"train_{k}": v for k, v in epoch.logs.items()}
        val: dict[str, float] = {}
        if self.config.val_curves or self.config.selection == "best" or index + 1 == self.config.epochs:
            with self.phase("validate"):
                val = evaluate(training.method.eval_model(self.model), self.dataset, self.config.eval_batch_size,
                               views=validation_views(self.config.selection_metric), autocast=self.autocast,
                               facts=False)
        curves = {f"epoch/{k}": float(v) for k, v in {**train_logs, **val}.items()}
        self.history.append((index + 1, curves))
        self.tracked.log_metrics(curves, step=index + 1)
        if self.config.selection == "best":
            self.keep_if_best(val)
        else:
            self.selected_validation = val
        self.save_last(training, index)

    def keep_if_best(self, val: Mapping[str, float]) -> None:
        """Save the model as ``best.pt`` when the selection metric improved."""
        metric = self.config.selection_metric
        if metric not in val:
            raise RunFailed(f"selection_metric {metric!r} is undefined on "
                            f"{self.config.dataset}'s validation split; defined: {', '.join(sorted(val))}")
        if self.best is None or val[metric] > self.best:
            self.best = val[metric]
            self.selected_validation = dict(val)
            self.checkpoint({"model": self.model.state_dict()}, "best.pt")

    def save_last(self, training: Training, epoch: int) -> None:
        """Everything a resumed run needs to end as an uninterrupted one: weights, optimiser
        and schedule, every random stream (CUDA generators included), the method's state, and
        the run's record so far (``accounting``: training and validation seconds, samples
        seen, the per-epoch curves)."""
        assert training.step is not None and training.ctx.streams is not None
        state = {"model": self.model.state_dict(), "step": training.step.state_dict(), "epoch": epoch + 1,
                 "best": self.best, "streams": training.ctx.streams.state_dict(),
                 "torch_rng": torch.get_rng_state(),
                 **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
                 "method": training.method.state_dict(), "accounting": self.accounting()}
        path = self.checkpoint_dir / "last.pt"
        before = _file_identity(path)
        try:
            self.checkpoint(state, "last.pt")
        finally:  # the epoch is what a rerun resumes after once its file is written, even where
            if _file_identity(path) != before:  # Ctrl-C came during the write (raised after it)
                self.epochs_done = epoch + 1

    def checkpoint(self, state: dict[str, Any], name: str) -> None:
        """Write ``state`` as checkpoint ``name`` of the run's folder (and of the store, where
        the run keeps its checkpoints there)."""
        path = self.checkpoint_dir / name
        checkpoints.save_atomic(state, path)
        if self.keep_in_store:
            store_checkpoints.keep(self.tracked, path)

    def accounting(self) -> dict[str, Any]:
        """What the run has measured and logged so far that a resumed run carries on from:
        ``train_seconds``, ``samples``, ``validate_seconds`` and the per-epoch ``history``."""
        return {"train_seconds": float(self.train_seconds), "samples": int(self.samples),
                "validate_seconds": float(self.seconds["validate"]),
                "history": [(step, dict(values)) for step, values in self.history]}

    def carry_on(self, accounting: Any) -> None:
        """Take over a checkpoint's ``accounting`` and log its curves again into this run
        (with their steps), so a resumed run's record equals an uninterrupted one's; a
        checkpoint of an earlier version without it carries nothing. A malformed one is
        ``ValueError`` (the checkpoint is set aside)."""
        if accounting is None:
            return
        seconds, samples = accounting["train_seconds"], accounting["samples"]
        validate, history = accounting["validate_seconds"], accounting["history"]
        if not (isinstance(seconds, float) and seconds >= 0 and isinstance(samples, int) and samples >= 0
                and isinstance(validate, float) and validate >= 0 and isinstance(history, list)):
            raise ValueError("malformed accounting")
        points = []
        for step, values in history:
            if not (isinstance(step, int) and isinstance(values, dict)
                    and all(isinstance(k, str) and isinstance(v, float) for k, v in values.items())):
                raise ValueError("malformed curve history")
            points.append((step, values))
        self.train_seconds, self.samples, self.seconds["validate"] = seconds, samples, validate
        self.history = points
        for step, values in points:
            self.tracked.log_metrics(values, step=step)

    def resume(self, training: Training) -> int:
        """Continue from the last epoch a killed run of the same config checkpointed; the
        epoch to start from.

        A checkpoint that cannot be resumed from (truncated, empty, another run's or another
        version's) is set aside, renamed beside itself, and the run starts from scratch with
        a one-line note: left in place it would fail this run and every rerun after it."""
        path = self.checkpoint_dir / "last.pt"
        if training.step is None or not path.exists():
            return 0
        assert training.ctx.streams is not None
        before: dict[str, Any] = {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                  "step": copy.deepcopy(training.step.state_dict()),
                  "streams": training.ctx.streams.state_dict(), "method": training.method.state_dict(),
                  "torch_rng": torch.get_rng_state()}
        try:
            state = checkpoints.load(path, self.device)
            self.model.load_state_dict(state["model"])
            training.step.load_state_dict(state["step"])
            training.ctx.streams.load_state_dict(state["streams"])
            training.method.load_state_dict(state.get("method", {}))
            torch.set_rng_state(state["torch_rng"].cpu())
            if self.device.type == "cuda" and "cuda_rng" in state:  # dropout on the GPU draws from it
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
            epoch, best = int(state["epoch"]), state["best"]
            if not 0 < epoch <= self.config.epochs or not (best is None or isinstance(best, float)):
                raise ValueError(f"epoch {epoch} of {self.config.epochs}")
            accounting = state.get("accounting")
            if accounting is not None and not isinstance(accounting, dict):
                raise ValueError("malformed accounting")
            self.carry_on(accounting)
        except Exception as exc:  # whatever the bytes are, the run must not depend on them
            self.model.load_state_dict(before["model"])
            training.step.load_state_dict(before["step"])
            training.ctx.streams.load_state_dict(before["streams"])
            training.method.load_state_dict(before["method"])
            torch.set_rng_state(before["torch_rng"])
            kept = checkpoints.set_aside(path, Path(self.config.checkpoint_dir) / UNUSABLE_FOLDER,
                                         self.config.run_key())
            (self.checkpoint_dir / "best.pt").unlink(missing_ok=True)
            _note(f"checkpoint {path} cannot be resumed from ({type(exc).__name__}: "
                  f"{one_line(str(exc), 200)}); kept as {kept}; the run starts from scratch")
            return 0
        self.best = best
        self.tracked.set_tags({"debiasbench.resumed_from_epoch": epoch})
        return epoch

    def select(self) -> None:
        """Load the best checkpoint where selection is ``best``; else keep the last weights."""
        best = self.checkpoint_dir / "best.pt"
        if self.config.selection == "best" and best.exists():
            self.model.load_state_dict(checkpoints.load(best, self.device)["model"])

    def final_evaluation(self, model: nn.Module) -> dict[str, float]:
        """Every split and view of the dataset, with the group facts (the validation views
        from the selected epoch's validation, where this process ran it)."""
        return evaluate(model, self.dataset, self.config.eval_batch_size, autocast=self.autocast,
                        validation=self.selected_validation)

    def synchronize(self) -> None:
        """Wait for the device, so that wall-clock timings cover the work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def explain(self, model: nn.Module, cav: ArtifactCav) -> dict[str, float]:
        """Artifact relevance, TCAV and CAV alignment where the dataset has artifact masks
        (``debiasbench.evaluation.explanation``, the CAV the method asks for); the heatmap
        picture as an artifact where the run logs artifacts (``log_model``)."""
        if not isinstance(model, LatentModel):
            return {}
        with tempfile.TemporaryDirectory() as folder:
            heatmaps = Path(folder) / "heatmaps.png" if self.config.log_model else None
            metrics, params = artifact_metrics(
                model, self.dataset, self.config.eval_batch_size, heatmaps, cav.kind,
                sample_size=self.config.explain_samples, relevance_mask=self.config.relevance_mask,
                tcav_population=self.config.tcav_population, cav_samples=cav.samples)
            if heatmaps is not None and heatmaps.exists():
                self.tracked.log_artifact(heatmaps)
        if params:
            self.tracked.log_params(params)
        return metrics

    def log_model(self, model: LatentModel) -> None:
        """The final weights as ``model.pt`` (corrections start from a vanilla run's), and
        the trained network (its input normalisation included: images in [0, 1] to logits)
        as the MLflow model ``model`` (``debiasbench.track.mlflow_model``), its signature
        from two test images."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_ARTIFACT
            checkpoints.save_atomic(model.net.state_dict(), path)
            self.tracked.log_artifact(path)
        test = self.dataset.splits["test"]
        example = test.batch(torch.arange(min(2, len(test)))).x
        try:
            log_torch_model(self.tracked, model, example)
        except UserError:
            raise
        except Exception as exc:  # a network that cannot be pickled: the run's results stand
            problem = store_problem(exc, getattr(self.tracked.client, "tracking_uri", ""), 0.0)
            if problem is not None:  # but a full disk under the store is the store's failure
                raise problem from exc
            reason = one_line(f"{type(exc).__name__}: {exc}")
            _note(f"the trained model was not logged as an MLflow model: {reason}")
            self.tracked.set_tags({MODEL_NOT_LOGGED_TAG: reason[:5000]})


def _file_identity(path: Path) -> tuple[int, int] | None:
    """Inode and modification time of ``path`` (None where it does not exist): a file
    written anew in its place (``atomic_file`` renames a new one there) has another."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _note(message: str) -> None:
    """One line on stderr for the person running it (the runner's, a method's ``ctx.note``),
    as a sentence."""
    print(sentence(message), file=sys.stderr)


def run(config: RunConfig, tracker: Tracker, progress: bool | ProgressReporter | None = None, *,
        wait: bool = False, skip_finished: bool = False) -> RunResult:
    """Train and evaluate one configuration; the outcome is recorded in ``tracker``.

    The dataset and the model are built first, and a ``base_run`` is checked, so a missing
    data file, an unknown latent layer or base run is a plain error that leaves nothing
    behind: no store, no claim, no run.
    Then the job is claimed (``debiasbench.run.claims``): where another process holds the
    claim, ``JobBusy`` is raised, or with ``wait`` the call waits for it. With
    ``skip_finished``, a job that has a FINISHED run once the claim is held is not run
    again: that run's result is returned, with ``ran`` False. A RUNNING run of the job in
    the store whose holder may be alive (``debiasbench.track.heartbeat``: a process that
    uses another claim folder, from another working directory or machine) makes the job
    busy as a claim does: ``RunHeld``, or with ``wait`` the call polls until it ends.
    RUNNING runs whose holder is provably gone were killed before they could say so: they
    are marked KILLED. ``progress`` says where
    the run's progress goes (``progress_for``): a ``ProgressReporter``, True for a bar
    on stderr, False for nowhere, None for the current reporter (a sweep's) or a bar at
    a terminal.
    """
    if os.environ.get(CHECKPOINT_DIR_VARIABLE):
        config = replace(config, checkpoint_dir=os.environ[CHECKPOINT_DIR_VARIABLE])
    device = resolve_device(config.device)
    dataset = build_dataset(config)
    placement = dataset.place(device, config.data_placement)
    config = replace(config, eval_batch_size=eval_batch_for(config.eval_batch_size, dataset.sample_shape, device))
    if device.type == "cuda" and config.channels_last:
        for split in (*dataset.splits.values(), *dataset.views.values()):
            split.channels_last = True
    elif device.type == "cpu":
        # Test data only: CPU max-pooling of an NCHW batch ran ~10x slower than of the same
        # batch in channels_last (torch 2.14, 1 thread), most of small_cnn's prediction time.
        # The train and val splits keep their layout (methods train on them: DFR on val),
        # so trained weights are as before.
        for split in (dataset.splits["test"], *dataset.views.values()):
            split.channels_last = True
    model = build_run_model(config, dataset, device)
    if config.base_run and METHODS.get(config.method).starts_from_vanilla:
        check_base_run(config, tracker)  # read only: a base_run refused leaves no store and no claim
    beat = heartbeat.interval()  # DEBIASBENCH_HEARTBEAT_SECONDS refused before anything is written
    key = config.run_key()
    claim = Claim(config.checkpoint_dir, key)
    if not claim.acquire(wait):
        raise JobBusy(f"another process (pid {claim.holder() or 'unknown'}) is running this job "
                      f"(run key {key}) with checkpoints in {config.checkpoint_dir!r}: wait for it to end")
    pauses = random.Random()  # not the seeded global generator
    try:
        while True:
            done = tracker.finished_run(key) if skip_finished else None
            if done is not None:
                return RunResult(run_id=done.info.run_id, run_key=key, metrics=dict(done.data.metrics), ran=False)
            held = tracker.live_run(key)
            if held is None:
                try:
                    with progress_for(progress) as reporter:
                        return _train_claimed(config, tracker, reporter, device, dataset, placement, model)
                except RunHeld:  # another process created its run of the job first
                    if not wait:
                        raise
            elif not wait:
                raise RunHeld(f"another process ({heartbeat.describe(held)}) is running this job (run key {key}, "
                              f"run {held.info.run_id}): wait for it to end")
            time.sleep(pauses.uniform(0.5, 1.0) * min(beat, 5.0))
    finally:
        claim.release()


def fetch_kept_checkpoint(tracker: Tracker, tracked: TrackedRun, run_key: str, folder: Path) -> None:
    """Where ``folder`` holds no checkpoint of the job, fetch the newest one an earlier,
    unfinished run of it kept in the store (killed on another node), and tag the run with
    where it came from."""
    if (folder / "last.pt").exists():
        return
    origin = store_checkpoints.fetch_latest(tracker, run_key, tracked.run_id, folder)
    if origin is not None:
        tracked.set_tags({store_checkpoints.RESUMED_FROM_RUN_TAG: origin})
        _note(f"resuming from the checkpoint run {origin} kept in the tracking store")


def _train_claimed(config: RunConfig, tracker: Tracker, progress: ProgressReporter | None, device: torch.device,
                   dataset: BenchmarkDataset, placement: str, model: LatentModel) -> RunResult:
    """``run`` once the job is claimed: a correction first finds (or trains) its vanilla
    base run; stale runs of the job are ended; the tracked run trains and evaluates."""
    base_folder, base_run_id = None, None
    try:
        if METHODS.get(config.method).starts_from_vanilla:
            initial_state, base_run_id = resolve_base_checkpoint(
                config, tracker, log=_note,
                train=lambda base: run(base, tracker, progress or False, wait=True, skip_finished=True))
            base_folder = initial_state.parent
        tags = {"debiasbench.data_placement": placement, THREADS_TAG: torch.get_num_threads(),
                **({"debiasbench.base_run_id": base_run_id} if base_run_id else {})}
        stale = tracker.end_stale_runs(config.run_key())  # this process holds the job's claim
        if stale:
            _note(f"{stale} earlier run{'s' if stale > 1 else ''} of this job stayed RUNNING after "
                  "its process was killed: marked KILLED")
        with tracker.start(config, tags) as tracked, reporting(progress, config.method) as reporter:
            if base_folder is not None:  # in the run: a base model refused is its recorded failure
                load_base_weights(model, initial_state, str(base_run_id), device)
                seed_everything(config.seed, config.deterministic)  # the same whether the base was trained now
            tracked.log_inputs([dataset_input(config, dataset)])
            in_store = store_checkpoints.wanted(config, tracker.uri)
            trainer = Trainer(config, dataset, model, tracked, device, reporter, keep_in_store=in_store)
            if in_store:
                fetch_kept_checkpoint(tracker, tracked, config.run_key(), trainer.checkpoint_dir)
            metrics = trainer.train()
            tracked.log_metrics(metrics, step=config.epochs)
    finally:
        if base_folder is not None:
            shutil.rmtree(base_folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # no checkpoint was written (a full disk, an early failure)
            (Path(config.checkpoint_dir) / config.run_key()).rmdir()  # empty only; the claim's folders go with it
    shutil.rmtree(trainer.checkpoint_dir, ignore_errors=True)
    if in_store:
        store_checkpoints.discard(tracker, config.run_key())
    return RunResult(run_id=tracked.run_id, run_key=config.run_key(), metrics=metrics)
