"""The correction protocol and the RR-ClArC paper's claims, end to end through the runner."""

from __future__ import annotations

import pytest
import torch
from mlflow.entities import Run

from debiasbench.run.base_model import base_config
from debiasbench.evaluation.cav import cav_alignment, fit_artifact_cav, latent_activations
from debiasbench.contract.config import resolve_config
from debiasbench.core.errors import RunFailed, UserError
from debiasbench.run.runner import build_dataset, run
from debiasbench.testing import tiny_config
from debiasbench.track.store import FAILURE_TAG, Tracker

BASE_TAG = "debiasbench.base_run_id"


def runs_by_method(tracker):
    found: dict[str, list[Run]] = {}
    for r in tracker.client.search_runs([tracker.experiment_id]):
        found.setdefault(r.data.params["method"], []).append(r)
    return found


def test_correction_trains_its_vanilla_base_first_and_reuses_it(tracker):
    first = run(tiny_config(method="rrclarc", epochs=1), tracker, progress=False)
    second = run(tiny_config(method="rrclarc", epochs=1, hparams={"lambda": 1.0}), tracker, progress=False)
    runs = runs_by_method(tracker)
    (vanilla,) = runs["vanilla"]
    assert vanilla.info.status == "FINISHED"
    assert vanilla.info.run_id == tracker.get_run(first.run_id).data.tags[BASE_TAG]
    assert vanilla.info.run_id == tracker.get_run(second.run_id).data.tags[BASE_TAG]
    assert vanilla.data.tags["debiasbench.run_key"] == base_config(tiny_config(method="rrclarc")).run_key()


def test_correction_starts_from_the_base_weights(tracker):
    """Zero fine-tuning epochs with frozen features: the correction evaluates the base model."""
    base = run(base_config(tiny_config(method="pclarc")), tracker, progress=False)
    corrected = run(tiny_config(method="aclarc", epochs=0), tracker, progress=False)
    assert corrected.metrics["test_acc"] == base.metrics["test_acc"]
    assert corrected.metrics["test_clean_acc"] == base.metrics["test_clean_acc"]


def test_explicit_base_run_of_another_seed_is_refused(tracker):
    other = run(base_config(tiny_config(seed=1)), tracker, progress=False)
    with pytest.raises(UserError, match=r"seed is '1', this run needs '0'"):
        run(tiny_config(method="rrclarc", base_run=other.run_id), tracker, progress=False)
    matching = run(tiny_config(method="rrclarc", epochs=1, seed=1, base_run=other.run_id), tracker, progress=False)
    assert tracker.get_run(matching.run_id).data.tags[BASE_TAG] == other.run_id


def test_head_only_correction_keeps_frozen_batchnorm_statistics(tracker):
    from debiasbench.run import checkpoints

    config = tiny_config(method="rrclarc", epochs=2)
    corrected = run(config, tracker, progress=False)
    base_id = tracker.get_run(corrected.run_id).data.tags[BASE_TAG]
    before = checkpoints.load(tracker.download(base_id, "model.pt", tracker_tmp(tracker, "b")))
    after = checkpoints.load(tracker.download(corrected.run_id, "model.pt", tracker_tmp(tracker, "a")))
    assert torch.equal(before["block1.1.running_mean"], after["block1.1.running_mean"])
    assert torch.equal(before["block3.0.weight"], after["block3.0.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def tracker_tmp(tracker, name):
    import tempfile

    return tempfile.mkdtemp(prefix=f"dl-{name}-")


def test_huge_lambda_fails_that_run_with_the_reason_and_nothing_else(tracker):
    run(base_config(tiny_config()), tracker, progress=False)
    with pytest.raises(RunFailed, match="non-finite loss"):
        run(tiny_config(method="rrclarc", hparams={"lambda": 1e300}), tracker, progress=False)
    runs = runs_by_method(tracker)
    (failed,) = runs["rrclarc"]
    assert failed.info.status == "FAILED" and "non-finite loss" in failed.data.tags[FAILURE_TAG]
    assert [r.info.status for r in runs["vanilla"]] == ["FINISHED"]
    assert run(tiny_config(method="rrclarc", epochs=1), tracker, progress=False).metrics["test_acc"] > 0


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    """Vanilla and RR-ClArC (defaults) on the default synthetic_artifacts, seed 0."""
    folder = tmp_path_factory.mktemp("paper")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", "paper")
    common = {"dataset": "synthetic_artifacts", "device": "cpu", "experiment": "paper",
              "checkpoint_dir": str(folder / "ckpt")}
    vanilla = run(resolve_config({**common, "method": "vanilla"}), tracker, progress=False)
    corrected = run(resolve_config({**common, "method": "rrclarc"}), tracker, progress=False)
    return vanilla.metrics, corrected.metrics, tracker


@pytest.mark.slow
def test_rrclarc_moves_relevance_off_the_artifact_and_keeps_clean_accuracy(paper_runs):
    vanilla, corrected, _ = paper_runs
    assert vanilla["test_biased_acc"] < vanilla["test_clean_acc"] - 0.2  # the shortcut exists
    assert corrected["artifact_relevance"] < vanilla["artifact_relevance"] - 0.05
    assert corrected["test_biased_acc"] > vanilla["test_biased_acc"] + 0.15
    assert corrected["test_clean_acc"] >= vanilla["test_clean_acc"] - 0.02


@pytest.mark.slow
def test_pattern_cav_is_closer_to_the_true_artifact_direction_than_every_solver(paper_runs):
    """The paper's point: regression / SVM directions diverge from the artifact's. The CAVs
    are fitted as the authors fit them (their samples, their svm / ridge / lasso / logistic)."""
    from debiasbench.run import checkpoints
    from debiasbench.models.build import build_model

    _, _, tracker = paper_runs
    (vanilla,) = runs_by_method(tracker)["vanilla"]
    config = resolve_config({"dataset": "synthetic_artifacts"})
    dataset = build_dataset(config)
    model = build_model("small_cnn", dataset.num_classes)
    model.net.load_state_dict(checkpoints.load(tracker.download(vanilla.info.run_id, "model.pt",
                                                                tracker_tmp(tracker, "v"))))
    biased, clean = dataset.views["test_biased"], dataset.views["test_clean"]
    attacked = biased.y == dataset.attacked_class
    truth = (latent_activations(model, biased.x[attacked], pool=True)
             - latent_activations(model, clean.x[attacked], pool=True)).mean(0)
    solvers = ("svm", "ridge", "lasso", "logistic")
    alignment = {kind: cav_alignment(fit_artifact_cav(model, dataset.splits["train"], 0, kind), truth)
                 for kind in ("pattern", *solvers)}
    assert alignment["pattern"] > 0.9
    for kind in solvers:
        assert alignment["pattern"] > alignment[kind] + 0.05, kind
