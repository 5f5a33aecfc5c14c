"""The vanilla checkpoint a post-hoc correction starts from.

Corrections (the ClArC family, RRR) fine-tune a model trained with plain ERM on the same
dataset, dataset parameters, architecture and seed. That model is looked up in the
tracking store by the run key of its config, trained first when it is missing, or taken
from ``base_run`` (an MLflow run id) after checking that it matches — a correction never
starts silently from a model of another dataset, architecture or seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from debiasbench.contract.config import RunConfig, resolve_config
from debiasbench.contract.method import BASE_METHOD
from debiasbench.core.errors import UserError

MODEL_ARTIFACT = "model.pt"

#: Config keys the base model must share with the correction that starts from it.
MATCHING_KEYS = ("dataset", "model", "seed", "pretrained", "class_weights")


def base_config(config: RunConfig) -> RunConfig:
    """The vanilla run a correction of ``config`` starts from (training keys at their defaults,
    except the cross-entropy's ``class_weights``, which the base shares with its correction)."""
    return resolve_config({
        "method": BASE_METHOD, "dataset": config.dataset, "dataset_params": dict(config.dataset_params),
        "model": config.model, "seed": config.seed, "device": config.device,
        "experiment": config.experiment, "checkpoint_dir": config.checkpoint_dir,
        "pretrained": config.pretrained, "data_placement": config.data_placement,
        "class_weights": config.class_weights,
    })


def check_matches(config: RunConfig, run: Any) -> None:
    """Refuse a base run whose dataset, parameters, data version, model or seed differ from
    ``config``'s (a run stored without ``dataset_version`` was made on version 1)."""
    params = {"dataset_version": "1", **run.data.params}
    expected = {key: str(getattr(config, key)) for key in MATCHING_KEYS}
    expected.update({f"dataset_params.{k}": str(v) for k, v in config.dataset_params.items()})
    expected["dataset_version"] = str(config.dataset_version)
    for key, value in expected.items():
        if params.get(key) != value:
            raise UserError(f"base_run {run.info.run_id}: {key} is {params.get(key)!r}, "
                            f"this run needs {value!r}")


def check_base_run(config: RunConfig, tracker: Any) -> Any:
    """The run ``config.base_run`` names, once it is found FINISHED in the store, matching
    ``config`` (``check_matches``) and holding the model; else a ``UserError``. Only reads:
    ``runner.run`` checks it before anything is written (no store, no claim, no run)."""
    run = tracker.get_run(config.base_run, what="base_run")
    if run.info.status != "FINISHED":
        raise UserError(f"base_run {config.base_run}: status is {run.info.status}, not FINISHED")
    check_matches(config, run)
    if MODEL_ARTIFACT not in {artifact.path for artifact in tracker.client_for_reading().list_artifacts(
            run.info.run_id)}:
        raise UserError(f"base_run {config.base_run} has no {MODEL_ARTIFACT} artifact "
                        "(was it run with log_model=false?)")
    return run


def resolve_base_checkpoint(config: RunConfig, tracker: Any,
                            train: Callable[[RunConfig], Any], log: Callable[[str], None]) -> tuple[Path, str]:
    """Local path of the base model's weights and the id of the run that produced them."""
    if config.base_run:
        run = check_base_run(config, tracker)
    else:
        vanilla = base_config(config)
        run = tracker.finished_run(vanilla.run_key())
        if run is None:
            log(f"no vanilla {config.model} on {config.dataset} (seed {config.seed}) in the store: training it first")
            train(vanilla)
            run = tracker.finished_run(vanilla.run_key())
    folder = Path(tempfile.mkdtemp(prefix="debiasbench-base-"))
    try:
        path = tracker.download(run.info.run_id, MODEL_ARTIFACT, folder)
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(_missing_model(run, exc)) from None
    return Path(path), run.info.run_id


def _missing_model(run: Any, exc: BaseException) -> str:
    """Why ``model.pt`` of ``run`` could not be downloaded, in one line: where the run's
    artifacts lie in a local folder and something is there by that name (a named pipe, a
    link to a device), what it is; where nothing is, that the run has no model (run with
    ``log_model=false``); else the download's error."""
    from urllib.parse import unquote, urlsplit

    from debiasbench.core.errors import one_line
    from debiasbench.core.files import FileRefused, check_regular_file

    where = f"base model {MODEL_ARTIFACT} of run {run.info.run_id}"
    location = urlsplit(str(run.info.artifact_uri or ""))
    if location.scheme in ("", "file"):
        local = Path(unquote(location.path)) / MODEL_ARTIFACT
        if not os.path.lexists(local):
            return f"run {run.info.run_id} has no {MODEL_ARTIFACT} artifact (was it run with log_model=false?)"
        if local.is_symlink() and not local.exists():
            return f"{where} refused: it is a link to '{os.readlink(local)}', which does not exist"
        try:
            check_regular_file(local, MODEL_ARTIFACT, None)
        except FileRefused as refused:
            return f"{where} refused: it {refused.problem}"
    return f"{where} cannot be downloaded: {type(exc).__name__}: {one_line(str(exc), 300)}"


def load_base_weights(model: Any, path: Path, run_id: str, device: Any) -> None:
    """Load the base model's weights at ``path`` (``model.pt`` of run ``run_id``) into
    ``model.net``. A file ``torch.load(weights_only=True)`` refuses (a pickle that would run
    code, another object than a state dict) or whose tensors do not fit the network is
    ``RunFailed`` with a one-line reason: called inside the correction's tracked run, it
    is recorded FAILED with that reason."""
    import pickle
    import warnings

    from debiasbench.core.errors import RunFailed, one_line
    from debiasbench.core.files import FileRefused
    from debiasbench.run import checkpoints

    where = f"base model {MODEL_ARTIFACT} of run {run_id}"
    try:
        with warnings.catch_warnings():  # torch warns of a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore")
            state = checkpoints.load(path, device)
    except FileRefused as exc:  # a folder, pipe or oversized file where the weights should be
        raise RunFailed(f"{where} refused: it {exc.problem}") from None
    except UserError:
        raise
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = one_line(text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0], 200)
        raise RunFailed(f"{where} refused: not plain weights (torch.load with weights_only=True: {detail}); "
                        "it is never unpickled in full, as that could run code") from None
    except Exception as exc:
        detail = one_line(str(exc), 300) or "the file ends early (empty or truncated)"
        raise RunFailed(f"{where} cannot be read: {type(exc).__name__}: {detail}") from None
    if not isinstance(state, dict):
        raise RunFailed(f"{where} is a {type(state).__name__}, not a state dict of weights")
    try:
        model.net.load_state_dict(state, strict=True)
    except Exception as exc:
        raise RunFailed(f"{where} does not fit the network: {one_line(str(exc), 300)}") from None
