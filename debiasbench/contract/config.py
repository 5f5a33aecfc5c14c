"""Run configuration: keys, defaults, validation and the run key.

Values come, lowest priority first, from the declared defaults below, the dataset's
``train_defaults``, the method's ``train_defaults``, a YAML file and ``--set key=value``
overrides. Every value is validated against its declaration, so a typo or a wrong type
is one readable ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from debiasbench.core.errors import ConfigError, Unsuited, UserError, shown, unknown_name_message
from debiasbench.core.files import CONFIG_LIMIT, read_regular_bytes
from debiasbench.core.hparams import HParam, LogUniform, resolve
from debiasbench.core.registry import DATASETS, METHODS


#: Validation metrics a run can select its checkpoint by (names of ``evaluate``).
VALIDATION_METRICS = ("val_acc", "val_worst_group_acc", "val_unbiased_acc", "val_conflicting_acc",
                      "val_clean_acc", "val_biased_acc")


#: Values of the run key ``class_weights``.
CLASS_WEIGHTS = ("none", "inverse_frequency")


def _key(default: Any, space: Any = None, **spec: Any) -> Any:
    """A run key; ``space`` is what a random-search sweep draws it from (DomainBed
    searches learning rate and weight decay for every method alike)."""
    return field(default=default, metadata={"spec": HParam(default, space, **spec)})


@dataclass(frozen=True)
class RunConfig:
    """One fully resolved run. Build it with ``resolve_config``, not by hand."""

    method: str = _key("vanilla", help="method name (see `debiasbench methods`)")
    dataset: str = _key("colored_digits", help="dataset name (see `debiasbench datasets`)")
    model: str = _key("small_cnn", help="architecture: small_cnn, mlp, resnet18, vgg16, efficientnet_b0, timm:<name>")
    seed: int = _key(0, low=0, high=2**32 - 1, help="seed of initialisation, shuffling and the method's randomness")
    epochs: int = _key(10, low=0, high=100_000, help="training epochs of the run's model (0: none, e.g. a post-hoc "
                                                     "correction that only refits or projects)")
    batch_size: int = _key(64, low=1, high=1_000_000, help="training batch size")
    eval_batch_size: int | None = _key(None, type=int, low=1, high=1_000_000,
                                       help="evaluation batch; null: 512 images of 32x32 pixels (64 on the CPU), "
                                            "proportionally fewer for larger images (10 at 224 px)")
    lr: float = _key(1e-3, LogUniform(1e-4, 1e-2), low=0.0, help="learning rate (the schedule's peak)")
    optimizer: str = _key("adam", choices=("sgd", "adam", "adamw"), help="optimiser of the run's model")
    momentum: float = _key(0.9, low=0.0, high=1.0, help="SGD momentum")
    weight_decay: float = _key(0.0, LogUniform(1e-6, 1e-2), low=0.0, help="the optimiser's weight decay")
    schedule: str = _key("cosine", choices=("constant", "cosine"),
                         help="learning-rate schedule, stepped per step over the whole run")
    grad_clip: float = _key(1.0, low=0.0, help="max gradient norm; 0 disables clipping")
    class_weights: str = _key("none", choices=CLASS_WEIGHTS,
                              help="cross-entropy class weights of every method: none, or "
                                   "inverse_frequency (max_c n_c / n_c over the training split, the "
                                   "RR-ClArC protocol; isic, bone_age and celeba default to it)")
    augment: bool = _key(True, help="the dataset's training augmentation (e.g. hflip); corrections "
                                    "default to false, as the RR-ClArC authors fine-tune without it")
    allow_unsuited: bool = _key(False, help="run a method on a dataset its own assumptions exclude (e.g. "
                                            "gradient_alignment where one class holds every conflicting "
                                            "sample); refused otherwise, and left out of sweeps")
    device: str = _key("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present, else the CPU")
    amp: bool = _key(True, help="bf16 autocast on CUDA (ignored on the CPU)")
    channels_last: bool = _key(True, help="channels_last memory format on CUDA")
    data_placement: str = _key("auto", choices=("auto", "device", "stream"),
                               help="image-file datasets: uint8 images kept on the device, or each batch "
                                    "read from the image cache; auto: on the device when they take at most "
                                    "a quarter of the GPU's free memory (512 MiB on the CPU)")
    deterministic: bool = _key(False, help="deterministic kernels (slower on CUDA)")
    latent_layer: str | None = _key(None, type=str,
                                    help="module name of the latent layer CAVs read and edit; null: the "
                                         "architecture's (layer4 for resnet18, features.28 for vgg16, features.8 "
                                         "for efficientnet_b0, block3 for small_cnn, feature for mlp)")
    pretrained: str | None = _key(None, type=str, help="imagenet (the library's ImageNet weights from its local "
                                                       "cache; see the docs' Models page) or a local path of "
                                                       "initial weights")
    relevance_mask: str = _key("blur", choices=("blur", "blur_fixed", "dilate"),
                               help="artifact_relevance's region: the mask blurred (Gaussian 41 px, sigma 8 "
                                    "at 224 px, scaled with the image side; blur_fixed: unscaled) and kept "
                                    "above 0.3, as the RR-ClArC authors score it, or dilated by one pixel")
    tcav_population: str = _key("all_classes", choices=("all_classes", "attacked_class"),
                                help="tcav_score's samples: the biased test samples of every class (the "
                                     "RR-ClArC authors') or of the attacked class only")
    explain_samples: int = _key(512, low=1, high=1_000_000,
                                help="test images the explanation phase explains (a seeded sample, the same for "
                                     "every method): artifact_relevance (with its standard error "
                                     "artifact_relevance_se), tcav_score and cav_alignment")
    base_run: str | None = _key(None, type=str, help="MLflow run id of the vanilla model a correction starts "
                                                     "from; default: found or trained")
    log_model: bool = _key(True, help="log the final weights as the artifact model.pt and the heatmap "
                                      "picture heatmaps.png")
    selection: str = _key("last", choices=("last", "best"), help="checkpoint evaluated at the end")
    val_curves: bool = _key(False, help="validate after every epoch for the curves (epoch/val_*); else only "
                                        "where selection needs it: every epoch with selection=best, the last "
                                        "epoch with selection=last")
    selection_metric: str = _key("val_acc", choices=VALIDATION_METRICS,
                                 help="validation metric maximised when selection=best")
    experiment: str = _key("debiasbench", help="MLflow experiment name")
    checkpoint_dir: str = _key(".debiasbench/checkpoints", help="where per-epoch checkpoints go (the environment "
                                                                "variable DEBIASBENCH_CHECKPOINT_DIR, where set, "
                                                                "replaces it: a node's own scratch folder)")
    store_checkpoints: str = _key("auto", choices=("auto", "always", "never"),
                                  help="also keep each checkpoint as an artifact of its run (checkpoint/), so a "
                                       "killed job resumes on any node that reaches the store; auto: where the "
                                       "tracking URI is a server (http/https)")
    dataset_params: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    #: The dataset class's ``version`` (``BenchmarkDataset.version``), recorded, not chosen:
    #: ``resolve_config`` sets it, so runs on data a newer version of the dataset generates
    #: differently get other run keys and leaderboard rows. A logged ``config.yaml`` holds
    #: it; read back, it must be the installed dataset's.
    dataset_version: int = 1

    #: Keys that change where or how fast a run happens, not its result.
    NON_SEMANTIC = ("device", "experiment", "checkpoint_dir", "store_checkpoints", "eval_batch_size", "log_model",
                    "data_placement", "allow_unsuited", "val_curves")
    #: Keys added after runs were stored, left out of the run key at their default so that
    #: those runs keep their keys (a sweep still finds them finished).
    ADDED_LATER = {"explain_samples": 512, "dataset_version": 1}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (``hparams.lambda``) as MLflow params and tables show them."""
        return flatten(self.to_dict())

    def run_key(self) -> str:
        """Hash of everything that determines the result; sweeps use it to skip finished runs."""
        semantic = {k: v for k, v in self.to_dict().items()
                    if k not in self.NON_SEMANTIC and not (k in self.ADDED_LATER and v == self.ADDED_LATER[k])}
        text = json.dumps(semantic, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(nested: Mapping[str, Any]) -> dict[str, Any]:
    """``{"hparams": {"q": 1}}`` -> ``{"hparams.q": 1}``: one level, as run configs nest
    (the inverse of ``assign``)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


RUN_KEYS: dict[str, HParam] = {f.name: f.metadata["spec"] for f in fields(RunConfig) if "spec" in f.metadata}
NESTED_KEYS = ("dataset_params", "hparams")
#: The key a config records its dataset's version under (not a run key: not chosen).
RECORDED_VERSION = "dataset_version"


def _dataset_version(dataset_cls: Any, recorded: Any) -> int:
    """The installed dataset's ``version``; a config read back from a run (``config.yaml``)
    that recorded another version is refused: this code cannot make that run's data."""
    version = int(getattr(dataset_cls, "version", 1))
    if recorded is not None and recorded != version:
        raise ConfigError(f"{RECORDED_VERSION}: the config was recorded with version {shown(recorded)} of dataset "
                          f"{dataset_cls.name!r}, whose data differs from the installed version {version}; "
                          f"leave {RECORDED_VERSION} out to run on version {version}")
    return version


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.01", "hparams.lambda=1e3"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        assign(out, key, parse_scalar(text))
    return out


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it, except that ``1e-4`` is a float (YAML 1.1
    would keep it a string, and learning rates are written that way)."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c.isdigit() for c in value) else value
        except ValueError:
            return value
    return value


def assign(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``target[dotted]``, nesting ``dataset_params.x`` / ``hparams.x``; unknown heads are errors."""
    head, _, rest = dotted.partition(".")
    if rest and head in NESTED_KEYS:
        nested = target.setdefault(head, {})
        if not isinstance(nested, dict):  # ``hparams: 5`` given before ``hparams.x``
            raise ConfigError(f"{head}: expected a mapping of names to values, got {shown(nested)}, "
                              f"so {dotted} cannot be set in it")
        nested[rest] = value
    elif rest:
        raise ConfigError(unknown_name_message("key", dotted, [*RUN_KEYS, *(k + ".<name>" for k in NESTED_KEYS)]))
    else:
        target[head] = value


#: Largest config or sweep file read: run keys take a few hundred bytes, and reading a
#: huge file whole would cost memory before any error could be said.
CONFIG_FILE_LIMIT = CONFIG_LIMIT


class _NotAName(yaml.YAMLError):
    """A mapping key that YAML read as something other than a string, or one given twice."""


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that ``1e-4`` and ``1e30`` are floats (YAML 1.1
    wants ``1.0e-4``; learning rates are written the short way), and that a key given twice
    in one mapping or a key that is not a string (``1: 2``) is an error: PyYAML lets the
    last of two keys win silently, and every key of a run or sweep file is a name."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *defaults`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _NotAName(f"key {shown(key)} on line {line} is not a name (write it in quotes)")
            if key in first_line:
                raise _NotAName(f"key {key!r} is given twice, on line {first_line[key]} and line {line}")
            first_line[key] = line
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of run keys; a missing, unreadable, oversized, non-UTF-8 or malformed
    file, a duplicate key or a key that is not a name is a one-line error."""
    path = Path(path)
    try:  # a folder, pipe or device is named as such, not waited on or read forever
        text = read_regular_bytes(path, "config file", CONFIG_FILE_LIMIT).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise UserError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}, line {line})") from None
    try:
        data = yaml.load(text, Loader=_YamlLoader) or {}
    except _NotAName as exc:
        raise UserError(f"config file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of run keys")
    return data


def check_nested(layer: Mapping[str, Any], where: str = "") -> None:
    """A ``ConfigError`` naming the key (after ``where``, e.g. ``overrides.``) where ``layer``
    gives ``dataset_params`` or ``hparams`` a value that is not a mapping (``~``, ``5``,
    ``[1]``): nothing could be merged into it."""
    for key in NESTED_KEYS:
        if key in layer and not isinstance(layer[key], dict):
            raise ConfigError(f"{where}{key}: expected a mapping of names to values, got {shown(layer[key])}")


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; the nested ``dataset_params`` / ``hparams`` merge key by key. A
    nested key whose value is not a mapping is a ``ConfigError`` naming it (``check_nested``)."""
    out: dict[str, Any] = {}
    for layer in layers:
        check_nested(layer)
        for key, value in layer.items():
            if key in NESTED_KEYS:
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def resolve_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate user values (file + overrides merged) into a ``RunConfig``."""
    unknown = sorted(set(raw) - set(RUN_KEYS) - set(NESTED_KEYS) - {RECORDED_VERSION})
    if unknown:
        raise ConfigError(unknown_name_message("key", unknown[0], [*RUN_KEYS, *NESTED_KEYS]))
    for nested in NESTED_KEYS:
        if not isinstance(raw.get(nested, {}), dict):
            raise ConfigError(f"{nested}: expected a mapping of names to values, got {shown(raw[nested])}")
    method_name = RUN_KEYS["method"].validate("method", raw.get("method", RUN_KEYS["method"].default))
    dataset_name = RUN_KEYS["dataset"].validate("dataset", raw.get("dataset", RUN_KEYS["dataset"].default))
    method_cls, dataset_cls = METHODS.get(method_name), DATASETS.get(dataset_name)
    layered = merge(dataset_cls.train_defaults, method_cls.train_defaults, raw)
    values = {key: spec.validate(key, layered.get(key, spec.default)) for key, spec in RUN_KEYS.items()}
    values["hparams"] = resolve(method_cls.hparams, layered.get("hparams", {}), "hparams.")
    values["dataset_params"] = resolve(dataset_cls.params, layered.get("dataset_params", {}), "dataset_params.")
    values[RECORDED_VERSION] = _dataset_version(dataset_cls, raw.get(RECORDED_VERSION))
    if values["base_run"] is not None and not method_cls.starts_from_vanilla:  # would be ignored silently
        raise ConfigError(f"base_run applies only to corrections (methods that start from a vanilla model): "
                          f"method {method_name!r} trains its model from scratch; leave base_run out")
    dataset_cls.check_params(values["dataset_params"])
    check_requirements(method_cls, dataset_cls, values["dataset_params"])
    method_cls.check_config(values["hparams"], dataset_cls, dataset_cls.provides_for(values["dataset_params"]))
    reason = method_cls.unsuited(values["hparams"], dataset_cls, values["dataset_params"])
    if reason and not values["allow_unsuited"]:
        raise Unsuited(f"method {method_name!r} is unsuited to dataset {dataset_name!r}: {reason}; "
                       "set allow_unsuited: true to run it anyway")
    from debiasbench.models.architectures import check_model_name

    check_model_name(values["model"])
    check_experiment_name(values["experiment"])
    if values["pretrained"] == "imagenet":  # missing weights refuse the job before any job of a sweep starts
        from debiasbench.models.pretrained import check_imagenet_weights

        check_imagenet_weights(values["model"])
    return RunConfig(**values)


#: Longest experiment name accepted (MLflow's sqlite store keeps 256 characters).
EXPERIMENT_NAME_LIMIT = 200


def check_experiment_name(name: str) -> None:
    """A ``ConfigError`` naming the key ``experiment`` for a name MLflow would refuse with
    a message of its own, or one a listing would mangle: empty, longer than
    ``EXPERIMENT_NAME_LIMIT`` characters, or holding control characters."""
    if not name.strip():
        raise ConfigError("experiment: expected a non-empty name")
    if len(name) > EXPERIMENT_NAME_LIMIT:
        raise ConfigError(f"experiment: expected a name of at most {EXPERIMENT_NAME_LIMIT} characters, "
                          f"got {len(name)}")
    if any(not c.isprintable() for c in name):
        raise ConfigError(f"experiment: expected printable characters, got {name!r}")


def check_requirements(method_cls: Any, dataset_cls: Any, dataset_params: Mapping[str, Any] | None = None) -> None:
    """Refuse a dataset that lacks what the method needs (a vanilla base model, for methods
    that start from one, is found or trained at run time).

    With ``dataset_params``, what the dataset provides under them (an injected artifact
    adds artifact labels and masks to a real dataset)."""
    provides = dataset_cls.provides if dataset_params is None else dataset_cls.provides_for(dataset_params)
    missing = sorted(set(method_cls.requires) - set(provides))
    if missing:
        provided = ", ".join(sorted(provides)) or "nothing"
        raise ConfigError(f"method {method_cls.name!r} requires {', '.join(missing)}, which dataset "
                          f"{dataset_cls.name!r} does not provide (it provides: {provided})"
                          f"{_injection_hint(dataset_cls, dataset_params, missing)}")


def _injection_hint(dataset_cls: Any, dataset_params: Mapping[str, Any] | None, missing: list[str]) -> str:
    """Where an injected artifact would provide what is missing, say how to inject one."""
    spec = getattr(dataset_cls, "params", {}).get("artifact")
    kinds = [k for k in (getattr(spec, "choices", None) or ()) if k != "none"]
    if not kinds or dataset_params is None:
        return ""
    if set(missing) - set(dataset_cls.provides_for({**dataset_params, "artifact": kinds[0]})):
        return ""
    return f"; set dataset_params.artifact to inject one ({', '.join(kinds)})"
