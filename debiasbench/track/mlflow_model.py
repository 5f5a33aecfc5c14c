"""A run's trained network as an MLflow model (the UI's Models column), loadable with
``mlflow.pytorch.load_model(f"runs:/{run_id}/model")``.

The model is logged with its signature (a float32 image batch ``[-1, C, H, W]`` in [0, 1]
to logits ``[-1, classes]``), inferred from one forward pass of a couple of samples, and
with its pip requirements written out here: MLflow would otherwise infer them by loading
the model again in a subprocess, seconds per run. Nothing is validated by serving an input
example, and nothing reaches the network.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import os
import time
from typing import Any, Iterator

import torch
from torch import nn

#: Name of the MLflow model in a run (``runs:/<run id>/model``).
MODEL_NAME = "model"
#: ``mlflow.entities.LoggedModelStatus.READY``: its artifacts are all written.
LOGGED_MODEL_READY = "READY"


def pip_requirements() -> list[str]:
    """What loading the model needs: this package (whose classes the pickled model refers
    to) and the torch it was saved with, at their installed versions (no local build tag)."""
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        requirements.append(f"debiasbench=={importlib.metadata.version('debiasbench')}")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        requirements.append("debiasbench")
    return requirements


def log_torch_model(tracked: Any, model: nn.Module, example: torch.Tensor, name: str = MODEL_NAME) -> str:
    """Log a CPU copy of ``model`` (in eval mode) as the MLflow model ``name`` of the run
    ``tracked`` (a ``TrackedRun``); ``example`` is a small input batch the signature is
    inferred from. Returns the model's URI. ``model`` itself is left as it was.

    The run's pending params are written first: the model records them, as MLflow does."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    saved = copy.deepcopy(model).cpu().eval()
    inputs = example.detach().float().cpu()
    with torch.no_grad():
        logits = saved(inputs)
    signature = infer_signature(inputs.numpy(), logits.float().numpy())
    tracked.flush()
    began = time.perf_counter()
    client, run_id = tracked.client, tracked.run_id
    # MLflow's log_model writes through the process-wide tracking URI and files a model it
    # creates under the active (else the default) experiment: this run's store, and a
    # model made here in the run's experiment.
    with _use_tracking_uri(client.tracking_uri), _quiet("mlflow.pytorch"):
        if int(mlflow.__version__.split(".")[0]) >= 3:
            run = client.get_run(run_id)
            logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                                params=dict(run.data.params))
            try:
                # A pickle, not MLflow 3's default traced ``pt2`` (slower, and it refuses the
                # networks it cannot export); it loads as it was saved.
                mlflow.pytorch.log_model(saved, name=name, model_id=logged.model_id, run_id=run_id,
                                         serialization_format="pickle", signature=signature,
                                         pip_requirements=pip_requirements())
            except BaseException:
                client.finalize_logged_model(logged.model_id, "FAILED")
                raise
            if client.get_logged_model(logged.model_id).status != LOGGED_MODEL_READY:
                client.finalize_logged_model(logged.model_id, LOGGED_MODEL_READY)
        else:
            mlflow.pytorch.log_model(saved, artifact_path=name, run_id=run_id, signature=signature,
                                     pip_requirements=pip_requirements())
    tracked.seconds += time.perf_counter() - began
    return f"runs:/{run_id}/{name}"


@contextlib.contextmanager
def _use_tracking_uri(uri: str) -> Iterator[None]:
    """``uri`` as MLflow's process-wide tracking URI for the block, then what was set
    before, the ``MLFLOW_TRACKING_URI`` variable included (MLflow's ``set_tracking_uri``
    writes it, and unsets it when given None)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, variable = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: unset, as MLflow's own helper does
        if variable is not None:
            os.environ["MLFLOW_TRACKING_URI"] = variable


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` for the block (MLflow warns at every pickled model that
    pickles run code when loaded: load models from stores you trust)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
