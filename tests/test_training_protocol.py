"""The training protocol every method shares: class-weighted cross-entropy (run key
``class_weights``) and augmentation only where the authors' pipeline augments."""

from __future__ import annotations

import math

import pytest
import torch

from debiasbench.run.base_model import base_config
from debiasbench.train.class_weights import inverse_frequency
from debiasbench.contract.config import resolve_config
from debiasbench.core.registry import DATASETS, METHODS
from debiasbench.run.runner import run
from debiasbench.testing import tiny_config

from debiasbench.datasets.synthetic_artifacts import SyntheticArtifacts
from debiasbench.methods.vanilla import Vanilla


def test_inverse_frequency_weights_are_the_largest_count_over_each_count_and_zero_for_empty_classes():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    assert inverse_frequency(labels, 4).tolist() == [1.0, 2.0, 4.0, 0.0]


def _authors_weighted_ce(logits: torch.Tensor, y: torch.Tensor, weights: list[float]) -> float:
    """``CrossEntropyLoss(weight=w)`` written out: sum_i w_{y_i} * -log p_{y_i} / sum_i w_{y_i}."""
    total, norm = 0.0, 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        log_p = row[label] - math.log(sum(math.exp(v) for v in row))
        total += weights[label] * -log_p
        norm += weights[label]
    return total / norm


def test_a_methods_cross_entropy_is_the_authors_class_weighted_mean_when_the_run_key_asks():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    y = torch.tensor([0, 2, 1, 0])
    method = Vanilla({}, type("Ctx", (), {"class_weights": torch.tensor([1.0, 3.0, 6.0])})())
    assert float(method.cross_entropy(logits, y)) == pytest.approx(_authors_weighted_ce(logits, y, [1, 3, 6]))
    per_sample = method.cross_entropy(logits, y, reduction="none")
    plain = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(per_sample, plain * torch.tensor([1.0, 6.0, 3.0, 1.0]))
    unweighted = Vanilla({}, type("Ctx", (), {"class_weights": None})())
    assert float(unweighted.cross_entropy(logits, y)) == pytest.approx(_authors_weighted_ce(logits, y, [1, 1, 1]))


def test_datasets_of_the_rrclarc_protocol_default_to_class_weighted_ce_and_the_user_can_switch_it_off():
    for name in ("isic", "celeba", "bone_age"):
        assert resolve_config({"dataset": name}).class_weights == "inverse_frequency"
        assert resolve_config({"dataset": name, "class_weights": "none"}).class_weights == "none"
    for name in ("colored_digits", "synthetic_artifacts", "waterbirds"):
        assert resolve_config({"dataset": name}).class_weights == "none"


def test_a_corrections_vanilla_base_is_trained_with_the_corrections_class_weights():
    correction = tiny_config(method="rrclarc", class_weights="inverse_frequency")
    base = base_config(correction)
    assert base.method == "vanilla" and base.class_weights == "inverse_frequency"
    assert base_config(tiny_config(method="rrclarc")).class_weights == "none"


class RecordingVanilla(Vanilla):
    """Vanilla that keeps the class weights the runner gave it."""

    name = "test_recording_vanilla"
    seen: dict = {}

    def loss(self, model, batch):
        type(self).seen.setdefault("class_weights", self.ctx.class_weights)
        type(self).seen.setdefault("train_labels", self.ctx.dataset.splits["train"].y)
        return super().loss(model, batch)


class CountingAugmentation(SyntheticArtifacts):
    """synthetic_artifacts with an augmentation that counts the batches it transforms."""

    name = "test_counting_augmentation"
    calls = 0

    def augment(self, batch, generator):
        type(self).calls += 1
        return batch


def test_the_runner_hands_methods_inverse_frequency_weights_of_the_training_labels(tracker, register):
    register(METHODS, RecordingVanilla)
    RecordingVanilla.seen = {}
    config = tiny_config(method=RecordingVanilla.name, class_weights="inverse_frequency", epochs=1)
    run(config, tracker, progress=False)
    expected = inverse_frequency(RecordingVanilla.seen["train_labels"], 4)
    assert not torch.equal(expected, torch.ones(4))  # the tiny data are imbalanced enough to tell
    assert torch.equal(RecordingVanilla.seen["class_weights"], expected)


@pytest.mark.parametrize("method", ["rrclarc", "aclarc", "pclarc", "rrr"])
def test_corrections_fine_tune_without_augmentation_as_the_authors_do(method):
    config = resolve_config({"method": method, "dataset": "isic", "dataset_params": {"artifact": "timestamp"}})
    assert config.augment is False
    assert resolve_config({"method": method, "dataset": "isic", "augment": True,
                           "dataset_params": {"artifact": "timestamp"}}).augment is True


def test_the_runner_applies_the_datasets_augmentation_only_when_augment_is_on(tracker, register):
    register(DATASETS, CountingAugmentation)
    assert resolve_config({"dataset": "isic"}).augment is True  # vanilla training augments
    for augment, expect_calls in ((True, True), (False, False)):
        CountingAugmentation.calls = 0
        config = tiny_config(dataset=CountingAugmentation.name, augment=augment, epochs=1)
        run(config, tracker, progress=False)
        assert (CountingAugmentation.calls > 0) is expect_calls


def test_the_evaluation_run_keys_offer_exactly_the_rules_the_evaluation_implements():
    from debiasbench.contract.config import RUN_KEYS
    from debiasbench.evaluation.explanation import TCAV_POPULATIONS
    from debiasbench.evaluation.relevance import ARTIFACT_REGIONS

    assert RUN_KEYS["relevance_mask"].choices == ARTIFACT_REGIONS
    assert RUN_KEYS["tcav_population"].choices == TCAV_POPULATIONS


def test_a_run_scores_relevance_and_tcav_by_its_run_keys_and_its_cav_samples_rule(tracker):
    from debiasbench.run.runner import run as run_once

    default = run_once(tiny_config(method="rrclarc", epochs=1), tracker, progress=False)
    literal = run_once(tiny_config(method="rrclarc", epochs=1, relevance_mask="dilate",
                                   tcav_population="attacked_class", hparams={"cav_samples": "all"}),
                       tracker, progress=False)
    assert default.metrics["artifact_relevance"] != literal.metrics["artifact_relevance"]
    assert literal.metrics["tcav_samples"] < default.metrics["tcav_samples"]
    stored = tracker.client.get_run(literal.run_id).data.params
    assert stored["relevance_mask"] == "dilate" and stored["eval_cav_samples"] == "all"
