"""Checks that a method or dataset plugin keeps the contracts the runner relies on.

A plugin author calls ``check_method`` / ``check_dataset`` (exported by
``debiasbench.testing``) in a plain pytest test. Each raises ``AssertionError`` with one
message naming the plugin and what is wrong, so a broken plugin fails its own tests in
seconds instead of someone's sweep an hour in. The project's tests run the same checks on
every built-in, so the checks and the built-ins keep each other honest.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NoReturn

import torch
from torch import Tensor

from debiasbench.data.dataset import CAPABILITIES, BenchmarkDataset, Split
from debiasbench.core.errors import ConfigError, UserError
from debiasbench.core.hparams import Choice, HParam, IntUniform, LogUniform, Uniform, resolve
from debiasbench.core.randomness import seeded
from debiasbench.contract.method import Method, RunContext
from debiasbench.core.registry import DATASETS, METHODS, Registry

if TYPE_CHECKING:
    from debiasbench.models.latent import LatentModel

#: Experiment of the end-to-end runs.
CHECK_EXPERIMENT = "contract_checks"
#: Metrics every finished run has, whatever the method (a dataset's views guarantee the rest).
RUN_METRICS = ("test_acc", "test_clean_acc", "test_biased_acc", "val_acc", "train_seconds")
#: Tiny parameters of the built-in datasets for checks on a CPU (a second per run or less).
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "synthetic_artifacts": {"n_train": 200, "n_val": 60, "n_test": 100, "image_size": 16, "patch_size": 3},
    "colored_digits": {"image_size": 8},
}

#: Samples per batch when a contract check reads a split's pixels.
CHECK_BATCH = 256


class ClassWeightsIgnoredWarning(UserWarning):
    """``check_method``: the method's loss is the same whatever the run's class weights, so a
    run whose ``class_weights`` asks for them (the real datasets' default) trains it unweighted."""


def _fail(where: str, message: str) -> NoReturn:
    raise AssertionError(f"{where}: {message}")


def check_declarations(declared: Any, prefix: str, where: str) -> None:
    """Every declared value is an ``HParam`` whose default is allowed by its own bounds
    and whose search space stays inside them (a sweep must never draw a value that
    validation then refuses)."""
    if not isinstance(declared, dict):
        _fail(where, f"{prefix.rstrip('.')} must be a dict of name -> HParam, got {type(declared).__name__}")
    for key, spec in declared.items():
        if not isinstance(spec, HParam):
            _fail(where, f"{prefix}{key} must be an HParam, got {spec!r}")
        if spec.default is None and spec.type is None:
            _fail(where, f"{prefix}{key}: a default of None needs HParam(type=...)")
        try:
            spec.validate(prefix + key, spec.default)
        except ConfigError as exc:
            _fail(where, f"default outside its declared range: {exc}")
        for value in _space_ends(spec.space):
            try:
                spec.validate(prefix + key, value)
            except ConfigError as exc:
                _fail(where, f"search space {spec.space!r} leaves the declared range: {exc}")


def _space_ends(space: Any) -> list[Any]:
    """Values a search space can reach at its extremes (all of them for a Choice)."""
    if space is None:
        return []
    if isinstance(space, Choice):
        return list(space.values)
    if isinstance(space, (Uniform, LogUniform, IntUniform)):
        return [space.low, space.high]
    raise AssertionError(f"unknown search space {space!r}: use Choice, Uniform, LogUniform or IntUniform")


def _check_names(cls: Any, where: str) -> None:
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        _fail(where, "class attribute `name` must be a non-empty string (the registry key)")
    if not isinstance(getattr(cls, "description", ""), str):
        _fail(where, "`description` must be a string")


def _check_train_defaults(cls: Any, where: str) -> None:
    from debiasbench.contract.config import RUN_KEYS

    for key, value in cls.train_defaults.items():
        if key not in RUN_KEYS:
            _fail(where, f"train_defaults has {key!r}, not a run key (known: {', '.join(RUN_KEYS)})")
        try:
            RUN_KEYS[key].validate(key, value)
        except ConfigError as exc:
            _fail(where, f"train_defaults: {exc}")


# -- datasets ---------------------------------------------------------------------------


def check_dataset(dataset_cls: type[BenchmarkDataset], **params: Any) -> BenchmarkDataset:
    """Build ``dataset_cls(**params)`` (defaults for the rest) and check its contract:
    declarations, the train / val / test splits and test_clean / test_biased views (unless
    it provides no bias information under ``params``), tensor
    shapes and dtypes, labels within ``num_classes``, bias -1 or within ``num_bias``, masks
    shaped like the images, ``provides`` honest, and the same data for the same params.
    Returns the dataset for further checks of the caller's own."""
    where = f"dataset {getattr(dataset_cls, 'name', dataset_cls)!r}"
    if not (isinstance(dataset_cls, type) and issubclass(dataset_cls, BenchmarkDataset)):
        _fail(where, "must be a subclass of debiasbench.data.dataset.BenchmarkDataset")
    _check_names(dataset_cls, where)
    check_declarations(dataset_cls.params, "dataset_params.", where)
    _check_train_defaults(dataset_cls, where)
    if not isinstance(dataset_cls.provides, (set, frozenset)) or not set(dataset_cls.provides) <= CAPABILITIES:
        _fail(where, f"provides must be a subset of {sorted(CAPABILITIES)}, got {dataset_cls.provides!r}")
    resolved = resolve(dataset_cls.params, params, "dataset_params.")
    provides = dataset_cls.provides_for(resolved)  # e.g. an injected artifact adds masks
    if not isinstance(provides, (set, frozenset)) or not set(provides) <= CAPABILITIES:
        _fail(where, f"provides_for({params!r}) must be a subset of {sorted(CAPABILITIES)}, got {provides!r}")
    data = dataset_cls(**resolved)
    _check_built(data, provides, where)
    again = dataset_cls(**resolved)
    for name, split in data.splits.items():
        other = again.splits[name]
        same_pixels = len(split) == len(other) and all(
            torch.equal(a.x, b.x) for a, b in zip(split.batches(CHECK_BATCH), other.batches(CHECK_BATCH)))
        if not same_pixels or not torch.equal(split.y, other.y):
            _fail(where, f"split {name!r} differs between two builds with the same params: "
                         "seed every random draw (run keys assume the same data)")
    return data


def _check_built(data: BenchmarkDataset, provides: frozenset[str], where: str) -> None:
    num_classes, num_bias = getattr(data, "num_classes", None), getattr(data, "num_bias", None)
    if not isinstance(num_classes, int) or num_classes < 2:
        _fail(where, f"num_classes must be an int >= 2, got {num_classes!r}")
    if not isinstance(num_bias, int) or num_bias < 1:
        _fail(where, f"num_bias must be an int >= 1, got {num_bias!r}")
    missing = {"train", "val", "test"} - set(getattr(data, "splits", {}))
    if missing:
        _fail(where, f"splits lack {sorted(missing)} (need train, val, test)")
    views = getattr(data, "views", None)
    if not isinstance(views, dict):
        _fail(where, f"views must be a dict of name -> Split, got {type(views).__name__}")
    # A dataset that knows nothing about its bias (no bias or artifact labels, e.g. ISIC
    # without an injected artifact) cannot build honest clean / biased views: its runs
    # report the natural splits only. Every other dataset must offer both.
    if provides and not {"test_clean", "test_biased"} <= set(views):
        _fail(where, f"views must hold test_clean and test_biased (it provides {sorted(provides)}), "
                     f"got {sorted(views)}")
    odd = [v for v in views if not v.startswith(("val_", "test_"))]
    if odd:
        _fail(where, f"view names are metric prefixes and start with val_ or test_: {odd}")
    shape = torch.Size(data.sample_shape)
    for name, split in {"train": data.splits["train"], **data.evaluation_views()}.items():
        _check_split(split, f"{where}, {name}", shape, num_classes, num_bias)
    if data.attacked_class is not None and not 0 <= data.attacked_class < num_classes:
        _fail(where, f"attacked_class {data.attacked_class} is not a class")
    if data.artifact_direction is not None and tuple(data.artifact_direction.shape) != tuple(shape):
        _fail(where, f"artifact_direction has shape {tuple(data.artifact_direction.shape)}, images {tuple(shape)}")
    train = data.splits["train"]
    if "bias_labels" in provides and not (train.bias >= 0).any():
        _fail(where, "provides bias_labels but every training bias is -1 (unknown)")
    if "artifact_labels" in provides and not train.artifact.any():
        _fail(where, "provides artifact_labels but no training sample has the artifact")
    if "artifact_masks" in provides:
        if not train.has_mask:
            _fail(where, "provides artifact_masks but the train split has mask=None")
        carriers = train.subset(train.artifact.nonzero().squeeze(1))
        if not all(b.mask is not None and bool(b.mask.flatten(1).any(1).all())
                   for b in carriers.batches(CHECK_BATCH)):
            _fail(where, "provides artifact_masks but some artifact sample has an empty mask")
    if data.to("cpu") is not data:
        _fail(where, "to(device) must return the dataset itself")


def _check_split(split: Split, where: str, shape: torch.Size, num_classes: int, num_bias: int) -> None:
    if not isinstance(split, Split):
        _fail(where, f"must be a debiasbench.data.dataset.Split, got {type(split).__name__}")
    n = len(split)
    if n == 0:
        _fail(where, "is empty")
    for batch in split.batches(CHECK_BATCH):  # pixels are read in batches, never all at once
        x = batch.x
        if x.ndim != 4 or x.shape[1:] != shape or not x.is_floating_point():
            _fail(where, f"x must be float [N, {', '.join(map(str, shape))}] like train, "
                         f"got {x.dtype} {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            _fail(where, "x has non-finite values")
        if batch.mask is not None:
            expected = {(len(x), 1, *shape[1:]), (len(x), *shape)}
            if tuple(batch.mask.shape) not in expected or batch.mask.dtype != torch.bool:
                _fail(where, f"mask must be bool [N, 1, H, W], got {batch.mask.dtype} "
                             f"{tuple(batch.mask.shape)}")
    for field, dtype in (("y", torch.long), ("bias", torch.long), ("artifact", torch.bool),
                         ("conflicting", torch.bool)):
        value = getattr(split, field)
        if value.dtype != dtype or tuple(value.shape) != (n,):
            _fail(where, f"{field} must be {dtype} [{n}], got {value.dtype} {tuple(value.shape)}")
    if split.y.min() < 0 or split.y.max() >= num_classes:
        _fail(where, f"y must lie in [0, {num_classes - 1}], got [{split.y.min()}, {split.y.max()}]")
    if split.bias.min() < -1 or split.bias.max() >= num_bias:
        _fail(where, f"bias must be -1 or lie in [0, {num_bias - 1}], got [{split.bias.min()}, {split.bias.max()}]")


# -- methods ----------------------------------------------------------------------------


@contextlib.contextmanager
def registered(registry: Registry, cls: type) -> Iterator[None]:
    """``cls`` under its name in ``registry`` for the block (config validation and the
    runner look names up), then whatever was there before."""
    with registry.override(cls):
        yield


def minimal_dataset(data: BenchmarkDataset, keep: frozenset[str]) -> BenchmarkDataset:
    """``data`` with only what ``keep`` names: unknown bias (-1) and no conflict flags
    without bias_labels, no artifact flags without artifact_labels, no masks without
    artifact_masks. A method that reads what it did not ``require`` fails on it."""

    def strip(split: Split) -> Split:
        changes: dict[str, Any] = {}
        if "bias_labels" not in keep:
            changes |= {"bias": torch.full_like(split.bias, -1), "conflicting": torch.zeros_like(split.conflicting)}
        if "artifact_labels" not in keep:
            changes["artifact"] = torch.zeros_like(split.artifact)
        return split.replace(masks="artifact_masks" in keep, **changes)

    stripped = object.__new__(type(data))
    stripped.__dict__.update(data.__dict__)
    stripped.splits = {k: strip(v) for k, v in data.splits.items()}
    stripped.views = {k: strip(v) for k, v in data.views.items()}
    stripped.provides = frozenset(type(data).provides & keep)
    return stripped


def check_method(method_cls: type[Method], dataset: str | type[BenchmarkDataset] = "synthetic_artifacts",
                 dataset_params: Mapping[str, Any] | None = None, hparams: Mapping[str, Any] | None = None,
                 model: str = "small_cnn", end_to_end: bool = True,
                 tracking_uri: str | None = None) -> dict[str, float]:
    """Check ``method_cls`` against the method contract on a tiny CPU dataset:

    - declarations: ``name``, ``hparams`` (HParam, defaults and search spaces inside
      their bounds), ``requires`` a subset of ``CAPABILITIES``, ``starts_from_vanilla``
      a bool, valid ``train_defaults``;
    - config validation refuses a dataset lacking each requirement;
    - on a copy of the dataset stripped to what it requires (``minimal_dataset``),
      ``prepare`` runs and ``loss`` is a finite scalar, differentiable with a finite
      gradient for every trainable parameter, its logs one-element tensors or Python
      numbers; ``eval_model`` gives logits;
    - class weights: the loss of the same batch (same random draws) under uniform and under
      strongly non-uniform class weights (``ctx.class_weights``) differs; where it does not,
      a ``ClassWeightsIgnoredWarning`` naming the method says the loss ignores the weights
      that the run key ``class_weights`` asks for (``self.cross_entropy`` applies them);
    - ``end_to_end``: one epoch through the runner into ``tracking_uri`` (default: a
      temporary sqlite store, ``shared_store``), the run FINISHED with ``RUN_METRICS``
      finite in the store.

    ``dataset`` is a registered name or a dataset class (tiny params of the built-ins are
    used unless ``dataset_params`` is given). Returns the run's metrics ({} without
    ``end_to_end``)."""
    where = f"method {getattr(method_cls, 'name', method_cls)!r}"
    if not (isinstance(method_cls, type) and issubclass(method_cls, Method)):
        _fail(where, "must be a subclass of debiasbench.contract.method.Method")
    _check_names(method_cls, where)
    check_declarations(method_cls.hparams, "hparams.", where)
    _check_train_defaults(method_cls, where)
    requires = method_cls.requires
    if not isinstance(requires, (set, frozenset)) or not set(requires) <= CAPABILITIES:
        _fail(where, f"requires must be a subset of {sorted(CAPABILITIES)}, got {requires!r}")
    if not isinstance(method_cls.starts_from_vanilla, bool):
        _fail(where, f"starts_from_vanilla must be a bool, got {method_cls.starts_from_vanilla!r}")
    _check_refusals(method_cls, where)
    dataset_cls = DATASETS.get(dataset) if isinstance(dataset, str) else dataset
    params = dict(TINY_PARAMS.get(dataset_cls.name, {}) if dataset_params is None else dataset_params)
    lacking = set(requires) - set(dataset_cls.provides)
    if lacking:
        raise AssertionError(f"{where}: check it on a dataset that provides {sorted(lacking)}; "
                             f"{dataset_cls.name!r} provides {sorted(dataset_cls.provides)}")
    with registered(METHODS, method_cls), registered(DATASETS, dataset_cls):
        from debiasbench.contract.config import resolve_config

        raw = {"method": method_cls.name, "dataset": dataset_cls.name, "model": model, "epochs": 1,
               "batch_size": 32, "device": "cpu", "dataset_params": params, "hparams": dict(hparams or {}),
               # The contract is about the plugin's mechanics, not whether the pairing suits it.
               "experiment": CHECK_EXPERIMENT, "allow_unsuited": True}
        try:
            config = resolve_config(raw)
        except UserError as exc:
            raise AssertionError(f"{where}: its defaults do not validate on {dataset_cls.name!r}: {exc}") from None
        _check_loss(method_cls, config, dataset_cls, where)
        return _run_end_to_end(config, tracking_uri, where) if end_to_end else {}


def _check_refusals(method_cls: type[Method], where: str) -> None:
    from debiasbench.contract.config import check_requirements

    for need in sorted(method_cls.requires):
        lacking = type("Lacking", (BenchmarkDataset,), {"name": f"lacking_{need}", "provides": CAPABILITIES - {need}})
        try:
            check_requirements(method_cls, lacking)
        except ConfigError as exc:
            if need not in str(exc):
                _fail(where, f"refusing a dataset without {need}, the error does not name it: {exc}")
        else:
            _fail(where, f"config validation accepted a dataset without {need}, which it requires")


def _check_loss(method_cls: type[Method], config: Any, dataset_cls: type[BenchmarkDataset], where: str) -> None:
    from debiasbench.models.build import build_model
    from debiasbench.run.runner import seed_everything

    full = dataset_cls(**config.dataset_params)
    data = minimal_dataset(full, frozenset(method_cls.requires))
    seed_everything(config.seed, False)
    train = data.splits["train"]
    model = build_model(config.model, data.num_classes, config.latent_layer, None, input_shape=train.sample_shape)
    generator = torch.Generator().manual_seed(config.seed)
    ctx = RunContext(config=config, dataset=data, model=model, device=torch.device("cpu"), generator=generator)
    batch = train.batch(torch.randperm(len(train), generator=generator)[:config.batch_size])
    stripped = sorted(CAPABILITIES - set(method_cls.requires))
    try:
        method = method_cls(config.hparams, ctx)
        method.prepare(ctx)
        params = list(method.trainable_parameters(model))
        if params and config.epochs > 0:
            _check_gradients(method, model, batch, params, where)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"{where}: {type(exc).__name__}: {exc} -- on {dataset_cls.name!r} without {stripped} "
            "(what it does not require): does it read something missing from `requires`?") from exc
    if params and config.epochs > 0:
        _check_class_weights(method, ctx, model, batch, config, where)
    model.eval()
    with torch.no_grad():
        logits = method.eval_model(model)(batch.x)
    if tuple(logits.shape) != (len(batch), data.num_classes):
        _fail(where, f"eval_model(model)(x) must give logits [{len(batch)}, {data.num_classes}], "
                     f"got {tuple(logits.shape)}")


def _check_gradients(method: Method, model: LatentModel, batch: Any, params: list, where: str) -> None:
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.train()
    result = method.loss(model, batch)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        _fail(where, "loss must return (scalar tensor, dict of name -> scalar tensor or number)")
    loss, logs = result
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        _fail(where, f"loss must be a scalar tensor, got {getattr(loss, 'shape', loss)!r}")
    if not torch.isfinite(loss):
        _fail(where, f"loss is not finite ({loss.item()}) on a tiny batch of the defaults")
    for key, value in logs.items():
        if isinstance(value, Tensor):
            if value.numel() != 1:
                _fail(where, f"logged value {key!r} must have one element, got shape {tuple(value.shape)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, f"logged value {key!r} must be a tensor or a Python number, "
                         f"got {type(value).__name__}")
    if not loss.requires_grad:
        _fail(where, "loss is not differentiable w.r.t. the trainable parameters (detached?)")
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [names.get(id(p), "?") for p in params if p.grad is None]
    if missing:
        _fail(where, f"no gradient reaches trainable parameters {missing[:5]}: train only what the loss uses "
                     "(trainable_parameters)")
    bad = [names.get(id(p), "?") for p in params if not torch.isfinite(p.grad).all()]
    if bad:
        _fail(where, f"non-finite gradients in {bad[:5]}")


def _check_class_weights(method: Method, ctx: RunContext, model: LatentModel, batch: Any, config: Any,
                         where: str) -> None:
    """Warn (``ClassWeightsIgnoredWarning``) when the loss does not change with the class
    weights: the same batch, model, streams and global random state, under weights 1 for
    every class and under weights from 1 to 100."""
    num_classes = ctx.dataset.num_classes
    if num_classes < 2 or batch.y.unique().numel() < 2:
        return
    assert ctx.streams is not None
    streams = ctx.streams.state_dict()
    kept = ctx.class_weights
    losses = []
    try:
        for weights in (torch.ones(num_classes), torch.logspace(0, 2, num_classes)):
            ctx.class_weights = weights.to(ctx.device)
            ctx.streams.load_state_dict(streams)
            with seeded(config.seed, ctx.device):
                losses.append(method.loss(model, batch)[0].detach().double())
    except Exception as exc:
        raise AssertionError(f"{where}: loss failed with class weights set (ctx.class_weights): "
                             f"{type(exc).__name__}: {exc}") from exc
    finally:
        ctx.class_weights = kept
        ctx.streams.load_state_dict(streams)
    if torch.allclose(losses[0], losses[1], rtol=1e-6, atol=1e-9):
        asks = (f"{config.dataset!r} asks for class_weights={config.class_weights!r}"
                if config.class_weights != "none" else "e.g. isic, celeba and bone_age ask for inverse_frequency")
        warnings.warn(f"{where}: its loss ignores the run's class weights (the same loss with class weights "
                      f"1 and 1..100, ctx.class_weights), so a run whose class_weights asks for them ({asks}) "
                      "trains it unweighted, unlike the other methods: compute the CE with "
                      "self.cross_entropy(logits, y) or reduce per-sample terms with "
                      "self.class_weighted_mean(terms, y)", ClassWeightsIgnoredWarning, stacklevel=4)


_SHARED_STORE: list[str] = []


def shared_store() -> str:
    """A temporary sqlite store for the checks of this process, removed at exit. Creating
    a store runs MLflow's migrations (seconds on a small CPU), so checks share one; a
    correction's vanilla base run is then trained once, as in a sweep."""
    if not _SHARED_STORE:
        from mlflow.tracking import MlflowClient

        for noisy in ("alembic", "mlflow"):  # store creation logs at INFO, as in Tracker
            logging.getLogger(noisy).setLevel(logging.WARNING)
        root = Path(tempfile.mkdtemp(prefix="debiasbench-check-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        # Artifacts next to the store, not in an mlruns/ of the caller's working directory.
        MlflowClient(uri).create_experiment(CHECK_EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
        _SHARED_STORE.append(uri)
    return _SHARED_STORE[0]


def _run_end_to_end(config: Any, tracking_uri: str | None, where: str) -> dict[str, float]:
    from debiasbench.run.runner import run
    from debiasbench.track.store import Tracker

    tracker = Tracker(tracking_uri or shared_store(), config.experiment)
    with tempfile.TemporaryDirectory(prefix="debiasbench-check-") as folder:
        config = replace(config, checkpoint_dir=folder)
        try:
            result = run(config, tracker, progress=False)
        except Exception as exc:
            raise AssertionError(f"{where}: a 1-epoch run on {config.dataset!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    stored = tracker.client.get_run(result.run_id)
    if stored.info.status != "FINISHED":
        _fail(where, f"the run ended {stored.info.status}")
    if stored.data.params.get("method") != config.method:
        _fail(where, f"the stored run's param method is {stored.data.params.get('method')!r}")
    missing = [m for m in RUN_METRICS if not math.isfinite(stored.data.metrics.get(m, math.nan))]
    if missing:
        _fail(where, f"the stored run lacks finite metrics {missing}")
    return dict(result.metrics)
