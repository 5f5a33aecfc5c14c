"""What MLflow's UI shows of a run besides its params and metrics: its data set (the runs
table's Dataset column) and the experiment's kind (which page the experiment opens on).

A run's data set is logged as metadata only: its name, a digest, where it comes from (the
dataset plugin, its parameters and data version) and its profile (the size of every split
and test view, the number of classes, one image's shape). No image is read or held for it,
so logging it costs one write whatever the size of the data.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Mapping

from debiasbench.contract.config import RunConfig

if TYPE_CHECKING:  # the store imports this module: no torch at its import
    from debiasbench.data.dataset import BenchmarkDataset

#: The experiment tag MLflow 3's UI reads for the kind of an experiment (a GenAI app, or
#: the training of models): a GenAI experiment opens on its traces, a training one on its
#: runs. Set on every experiment this tool creates.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: MLflow's value for experiments of model training ("Machine learning" in its UI).
TRAINING_KIND = "custom_model_development"
#: The run input tag MLflow reads for the role a data set played in a run.
CONTEXT_TAG = "mlflow.data.context"
#: ``source_type`` of the data sets this tool logs: the source is a dataset plugin's name
#: and parameters, not a file or a table.
SOURCE_TYPE = "debiasbench"


def dataset_description(config: RunConfig, dataset: BenchmarkDataset) -> dict[str, Any]:
    """The facts logged about a run's data: ``source`` (what builds it) and ``profile``
    (what it holds), both JSON-able."""
    splits = {name: len(split) for name, split in dataset.splits.items()}
    views = {name: len(view) for name, view in dataset.views.items()}
    source = {"dataset": config.dataset, "dataset_params": dict(config.dataset_params),
              "dataset_version": config.dataset_version}
    profile = {"splits": splits, "views": views, "num_classes": int(dataset.num_classes),
               "sample_shape": list(dataset.sample_shape)}
    return {"source": source, "profile": profile}


def dataset_digest(description: Mapping[str, Any]) -> str:
    """A short stable hash of the description: the same for every run on the same data
    (same plugin, parameters, version and split sizes), whichever machine made it."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_input(config: RunConfig, dataset: BenchmarkDataset, context: str = "training") -> Any:
    """The ``mlflow.entities.DatasetInput`` of a run's data (``MlflowClient.log_inputs``):
    named after the dataset, with the digest, source, profile and a tensor schema of its
    images and labels, tagged with ``context``."""
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec
    import numpy as np

    description = dataset_description(config, dataset)
    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype(np.float32), (-1, *dataset.sample_shape), "image")]),
        targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "label")]),
    )
    entity = Dataset(
        name=config.dataset,
        digest=dataset_digest(description),
        source_type=SOURCE_TYPE,
        source=json.dumps(description["source"], sort_keys=True, default=str),
        schema=json.dumps(schema.to_dict()),
        profile=json.dumps(description["profile"], sort_keys=True),
    )
    return DatasetInput(dataset=entity, tags=[InputTag(key=CONTEXT_TAG, value=context)])
