"""The tracking store keeps what a run logs where the store is, not where the user stood, and
writes it in few batches without losing what a finished or failed run logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from debiasbench.run.runner import run
from debiasbench.testing import tiny_config
from debiasbench.track.log_buffer import (MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH,
                                    LogBuffer, ParamChanged)
from debiasbench.track.store import FAILURE_TAG, Tracker, artifact_location


def test_an_sqlite_stores_artifacts_lie_beside_the_database_whatever_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", "tests")
    result = run(tiny_config(epochs=1, log_model=True), tracker, progress=False)
    artifacts = store / "mlruns" / "tests" / result.run_id / "artifacts"
    assert (artifacts / "model.pt").exists()
    assert not (elsewhere / "mlruns").exists()


def test_a_relative_sqlite_uri_is_resolved_when_the_experiment_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = artifact_location("sqlite:///mlflow.db", "my_runs_2026")
    assert location == (tmp_path.resolve() / "mlruns" / "my_runs_2026").as_uri()
    # a name that is not a folder name gets a readable folder of its own (test_hostile_store.py)
    assert str(artifact_location("sqlite:///mlflow.db", "my runs/2026")).startswith(
        (tmp_path.resolve() / "mlruns" / "my_runs_2026~").as_uri())
    assert artifact_location("http://mlflow-server:5000", "x") is None


# --------------------------------------------------------------------------- buffered writes


def _stored(tracker: Tracker, run_id: str):
    return tracker.client.get_run(run_id)


def test_metrics_params_and_tags_wait_in_memory_and_all_arrive_when_the_run_finishes(tracker: Tracker):
    with tracker.start(tiny_config()) as tracked:
        tracked.log_metrics({"epoch/val_acc": 0.5}, step=1)
        tracked.log_metrics({"epoch/val_acc": 0.75}, step=2)
        tracked.log_params({"explanation": "lrp"})
        tracked.set_tags({"debiasbench.data_placement": "device"})
        assert tracker.client.get_metric_history(tracked.run_id, "epoch/val_acc") == []
    history = tracker.client.get_metric_history(tracked.run_id, "epoch/val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    stored = _stored(tracker, tracked.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params["explanation"] == "lrp" and stored.data.params["method"] == "vanilla"
    assert stored.data.tags["debiasbench.data_placement"] == "device"


def test_a_run_writes_what_it_logged_once_the_flush_interval_has_passed(tracker: Tracker):
    with tracker.start(tiny_config()) as tracked:
        tracked.flush_interval = 0.0  # a long run: every interval has passed at the next call
        tracked.log_metrics({"epoch/val_acc": 0.5}, step=1)
        assert [m.step for m in tracker.client.get_metric_history(tracked.run_id, "epoch/val_acc")] == [1]


def test_a_failing_run_writes_what_it_logged_before_it_ends_failed_with_the_reason(tracker: Tracker):
    with pytest.raises(RuntimeError, match="simulated crash"):
        with tracker.start(tiny_config()) as tracked:
            tracked.log_metrics({"epoch/val_acc": 0.5}, step=1)
            raise RuntimeError("simulated crash")
    stored = _stored(tracker, tracked.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags[FAILURE_TAG] == "RuntimeError: simulated crash"
    assert stored.data.metrics["epoch/val_acc"] == 0.5


def test_a_run_whose_buffered_metrics_are_refused_by_the_store_ends_failed(tracker: Tracker):
    with pytest.raises(Exception, match="(?i)metric"):
        with tracker.start(tiny_config()) as tracked:
            tracked.log_metrics({"x" * 1000: 0.5})  # longer than any store's metric name
    stored = _stored(tracker, tracked.run_id)
    assert stored.info.status == "FAILED" and "metric" in stored.data.tags[FAILURE_TAG].lower()


def test_a_param_logged_again_with_another_value_fails_at_the_call_that_changed_it(tracker: Tracker):
    with tracker.start(tiny_config()) as tracked:
        tracked.log_params({"explanation": "lrp"})
        tracked.log_params({"explanation": "lrp"})  # the same value again is fine
        with pytest.raises(ParamChanged, match="explanation"):
            tracked.log_params({"explanation": "input_x_gradient"})
    assert _stored(tracker, tracked.run_id).data.params["explanation"] == "lrp"


def test_a_large_buffer_is_cut_into_batches_within_mlflows_limits():
    buffer = LogBuffer()
    buffer.add_params({f"p{i}": i for i in range(250)})
    buffer.add_tags({f"t{i}": i for i in range(30)})
    buffer.add_metrics({f"m{i}": float(i) for i in range(2500)}, timestamp_ms=0, step=1)
    batches = buffer.take()
    for batch in batches:
        assert len(batch.metrics) <= MAX_METRICS_PER_BATCH
        assert len(batch.params) <= MAX_PARAMS_TAGS_PER_BATCH and len(batch.tags) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(batch.metrics) + len(batch.params) + len(batch.tags) <= MAX_ENTITIES_PER_BATCH
    assert sorted(m.key for b in batches for m in b.metrics) == sorted(f"m{i}" for i in range(2500))
    assert len({p.key for b in batches for p in b.params}) == 250
    assert len({t.key for b in batches for t in b.tags}) == 30
    assert not buffer and buffer.take() == []


def test_tags_known_at_the_start_are_stored_with_the_run_from_its_creation(tracker: Tracker):
    with tracker.start(tiny_config(), {"debiasbench.data_placement": "device"}) as tracked:
        stored = _stored(tracker, tracked.run_id)
        assert stored.data.tags["debiasbench.data_placement"] == "device"
        assert stored.data.tags["debiasbench.run_key"] == tiny_config().run_key()


# --------------------------------------------------------------------------- MLflow's UI


def test_the_experiment_is_of_the_training_kind_and_an_older_one_without_a_kind_gets_it(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    from debiasbench.track.inputs import EXPERIMENT_KIND_TAG, TRAINING_KIND

    client = MlflowClient(tracking_uri)
    assert client.get_experiment(Tracker(tracking_uri, "new").experiment_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    older = client.create_experiment("older")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert Tracker(tracking_uri, "older").experiment_id == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    assert Tracker(tracking_uri, "chosen").experiment_id == chosen
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a user's choice stays


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_a_run_lists_its_dataset_with_its_digest_parameters_and_split_sizes(
        tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch):
    import json

    from debiasbench.data.dataset import BenchmarkDataset
    from debiasbench.run.runner import build_dataset
    from debiasbench.track.inputs import CONTEXT_TAG, dataset_description, dataset_digest

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else str(tmp_path / "mlruns")
    tracker = Tracker(uri, "tests")
    config = tiny_config(epochs=1, log_model=False)
    result = run(config, tracker, progress=False)
    dataset: BenchmarkDataset = build_dataset(config)
    (logged,) = tracker.client.get_run(result.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "synthetic_artifacts"
    assert logged.dataset.digest == dataset_digest(dataset_description(config, dataset))
    assert {tag.key: tag.value for tag in logged.tags} == {CONTEXT_TAG: "training"}
    source, profile = json.loads(logged.dataset.source), json.loads(logged.dataset.profile)
    assert source["dataset_params"] == {k: v for k, v in config.dataset_params.items()}
    assert source["dataset_version"] == config.dataset_version
    assert profile["splits"] == {name: len(split) for name, split in dataset.splits.items()}
    assert profile["views"]["test_biased"] == len(dataset.views["test_biased"])
    other = tiny_config(epochs=1, log_model=False, dataset_params={"n_train": 100})
    assert dataset_digest(dataset_description(other, build_dataset(other))) != logged.dataset.digest


def test_log_model_logs_the_trained_network_as_an_mlflow_model_that_gives_the_same_logits(
        tracker: Tracker, tracking_uri: str, monkeypatch: pytest.MonkeyPatch):
    import mlflow
    import mlflow.pytorch
    import torch

    from debiasbench.models.build import build_model
    from debiasbench.models.latent import LatentModel
    from debiasbench.run import checkpoints
    from debiasbench.run.runner import build_dataset

    config = tiny_config(epochs=1)
    result = run(config, tracker, progress=False)
    (Path.cwd() / "downloaded").mkdir()
    weights = tracker.download(result.run_id, "model.pt", Path.cwd() / "downloaded")
    dataset = build_dataset(config)
    trained = build_model(config.model, dataset.num_classes)
    trained.net.load_state_dict(checkpoints.load(weights))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    loaded = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    assert isinstance(loaded, LatentModel)
    x = dataset.splits["test"].x[:8]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), trained.eval()(x))
    signature = mlflow.models.get_model_info(f"runs:/{result.run_id}/model").signature
    assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, *x.shape[1:])
    assert signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, dataset.num_classes)


def test_a_relative_sqlite_uri_is_the_file_in_the_working_directory(tmp_path, monkeypatch):
    """``sqlite:///runs.db`` (three slashes, a relative path) names runs.db here, as
    MLflow reads it; the store is created there and its artifacts beside it."""
    from debiasbench.track.store import Tracker

    monkeypatch.chdir(tmp_path)
    tracker = Tracker("sqlite:///runs.db", "relative")
    assert tracker.uri == f"sqlite:///{tmp_path / 'runs.db'}"
    assert tracker.experiment_id
    assert (tmp_path / "runs.db").is_file()


def test_two_runs_logging_the_same_new_dataset_at_once_both_list_it(tmp_path: Path):
    """Two runs starting together on the same data (a sweep's parallel workers) both find
    no dataset row and both insert it: the later insert breaks the store's unique key.
    The interleaving is forced: just before the first run inserts the row, the second run
    logs the same data set (and commits it)."""
    from sqlalchemy import event

    from debiasbench.run.runner import build_dataset
    from debiasbench.track.inputs import dataset_input

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tests")
    config = tiny_config(epochs=1, log_model=False)
    inputs = [dataset_input(config, build_dataset(config))]
    engine = tracker.client._tracking_client.store.engine
    with tracker.start(config) as first, tracker.start(tiny_config(epochs=1, log_model=False, seed=1)) as second:
        raced: list[bool] = []

        def second_run_inserts_first(conn, cursor, statement, *args) -> None:
            if statement.startswith("INSERT INTO datasets") and not raced:
                raced.append(True)
                second.log_inputs(inputs)

        event.listen(engine, "before_cursor_execute", second_run_inserts_first)
        try:
            first.log_inputs(inputs)
        finally:
            event.remove(engine, "before_cursor_execute", second_run_inserts_first)
        assert raced
    for tracked in (first, second):
        (logged,) = tracker.client.get_run(tracked.run_id).inputs.dataset_inputs
        assert logged.dataset.name == "synthetic_artifacts"


# --------------------------------------------------------------------------- store creation
def _synchronous(path: Path) -> int:
    """sqlite's ``synchronous`` setting of a new SQLAlchemy connection to ``path``."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())
    finally:
        engine.dispose()


def test_the_schema_file_alone_skips_sqlites_syncs_while_it_is_built(tmp_path: Path):
    from debiasbench.track.store import unsynced_connections

    building, other = tmp_path / ".mlflow.db.creating", tmp_path / "other.db"
    default = _synchronous(other)
    assert default != 0  # sqlite syncs commits unless told otherwise
    with unsynced_connections(str(building)):
        assert (_synchronous(building), _synchronous(other)) == (0, default)
    assert _synchronous(building) == default  # a setting of the connection, gone with the block
    with pytest.raises(RuntimeError), unsynced_connections(str(other)):
        raise RuntimeError("creation failed")
    assert _synchronous(other) == default


def test_a_store_made_without_syncs_opens_as_any_store(tmp_path: Path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tests")
    assert tracker.experiment_id is not None and not list(tmp_path.glob(".mlflow.db.*"))
    assert _synchronous(tmp_path / "mlflow.db") != 0
    assert Tracker(tracker.uri, "other").experiment_id != tracker.experiment_id  # the schema MLflow verifies
