"""Every registered method and dataset keeps the plugin contracts (``debiasbench.testing``
checks), and the checks catch the mistakes a plugin author makes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import real_layouts
from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.hparams import HParam, Uniform
from debiasbench.contract.method import Method
from debiasbench.core.registry import DATASETS, METHODS
from debiasbench.testing.contracts import CHECK_EXPERIMENT
from debiasbench.testing import TINY_PARAMS, check_dataset, check_method

#: Methods whose check takes more than a few seconds on a 2-core CPU.
SLOW_METHODS = {"gradient_alignment", "jtt"}  # GA mines with two peers for 10 epochs; JTT trains twice


@pytest.mark.parametrize("name", DATASETS.names())
def test_registered_dataset_keeps_the_contract(name, tmp_path):
    # datasets of downloaded files run on tiny fixtures in their layouts (tests/real_layouts.py)
    params = real_layouts.fixture_params(name, tmp_path / "data")
    if params is None:
        assert name in TINY_PARAMS, (f"{name} reads files but has no fixture: add one to "
                                     "tests/real_layouts.py (fixture_params)")
        params = TINY_PARAMS[name]
    data = check_dataset(DATASETS.get(name), **params)
    assert len(data.splits["train"]) > 0


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_METHODS else n
                                  for n in METHODS.names()])
@pytest.mark.filterwarnings("error::debiasbench.testing.ClassWeightsIgnoredWarning")  # every built-in weighs alike
def test_registered_method_keeps_the_contract(name):
    method_cls = METHODS.get(name)
    dataset = next((d for d in TINY_PARAMS
                    if set(method_cls.requires) <= DATASETS.get(d).provides), None)
    if dataset is None:
        pytest.skip(f"no tiny dataset provides {sorted(method_cls.requires)}")
    metrics = check_method(method_cls, dataset=dataset)
    assert 0.0 <= metrics["test_acc"] <= 1.0


class Good(Method):
    name = "test_contract_good"
    hparams = {"scale": HParam(1.0, Uniform(0.5, 2.0), low=0.0)}

    def loss(self, model, batch):
        loss = self.hp["scale"] * self.cross_entropy(model(batch.x), batch.y)
        return loss, {"ce": loss.detach()}


def variant(**attributes):
    return type("Variant", (Good,), {"name": "test_contract_variant", **attributes})


def test_a_correct_method_passes_end_to_end():
    metrics = check_method(Good)
    assert "test_acc" in metrics and "test_contract_good" not in METHODS  # registered only while checked


def test_a_method_may_log_python_numbers_and_the_run_averages_them(tmp_path):
    def loss(self, model, batch):
        value = self.cross_entropy(model(batch.x), batch.y)
        return value, {"focal": float(value.detach()), "steps": 1}

    metrics = check_method(variant(loss=loss), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "test_acc" in metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(CHECK_EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["epoch/train_steps"] == 1.0  # the mean over the epoch's steps
    assert 0.0 < run.data.metrics["epoch/train_focal"] < 10.0


def test_requiring_a_pretrained_checkpoint_names_the_class_attribute_instead():
    with pytest.raises(TypeError, match="declare starts_from_vanilla = True"):
        type("Old", (Method,), {"name": "old", "requires": frozenset({"pretrained_checkpoint"})})


@pytest.mark.parametrize("attributes,message", [
    ({"hparams": {"scale": HParam(-1.0, low=0.0)}}, "default outside its declared range"),
    ({"hparams": {"scale": HParam(1.0, Uniform(0.0, 5.0), low=0.0, high=2.0)}}, "search space"),
    ({"hparams": {"scale": 1.0}}, "must be an HParam"),
    ({"requires": frozenset({"bias_label"})}, "requires must be a subset"),
    ({"train_defaults": {"epoch": 3}}, "not a run key"),
    ({"loss": lambda self, model, batch: (model(batch.x).sum() * float("nan"), {})}, "not finite"),
    ({"loss": lambda self, model, batch: (F.cross_entropy(model(batch.x), batch.y).detach(), {})},
     "not differentiable"),
    ({"loss": lambda self, model, batch: (model(batch.x).mean(1), {})}, "scalar tensor"),
    ({"loss": lambda self, model, batch: (model(batch.x).sum(), {"n": "3"})},
     "logged value 'n' must be a tensor or a Python number, got str"),
    ({"loss": lambda self, model, batch: (model(batch.x).sum(), {"n": torch.ones(2)})},
     "logged value 'n' must have one element"),
    ({"starts_from_vanilla": "yes"}, "starts_from_vanilla must be a bool"),
    ({"trainable_parameters": lambda self, model: [*model.parameters(), torch.nn.Parameter(torch.ones(1))]},
     "no gradient reaches"),
    # reads masks without requiring them: fails on the dataset stripped to its requirements
    ({"loss": lambda self, model, batch: ((model(batch.x).sum() * batch.mask.float().mean()), {})},
     "does it read something missing from `requires`"),
])
def test_the_method_check_names_what_is_wrong(attributes, message):
    with pytest.raises(AssertionError, match="method 'test_contract_variant'") as info:
        check_method(variant(**attributes), end_to_end=False)
    assert message in str(info.value)


def test_a_required_input_is_given_and_a_dataset_lacking_it_is_named():
    reads_masks = variant(requires=frozenset({"artifact_masks"}),
                          loss=lambda self, model, batch: (model(batch.x).sum() * batch.mask.float().mean(), {}))
    check_method(reads_masks, end_to_end=False)
    with pytest.raises(AssertionError, match=r"provides \['artifact_masks'\]"):
        check_method(reads_masks, dataset="colored_digits", end_to_end=False)


class TinyData(BenchmarkDataset):
    """Two classes, bias = label for most samples; ``fault`` breaks one rule."""

    name = "test_contract_data"
    provides = frozenset({"bias_labels"})
    params = {"n": HParam(40, low=8), "fault": HParam("", type=str)}

    def __init__(self, **params):
        super().__init__(**params)
        self.num_classes, self.num_bias = 2, 2
        fault = self.p["fault"]
        generator = torch.Generator().manual_seed(0 if fault != "unseeded" else torch.seed())

        def split() -> Split:
            n = self.p["n"]
            y = torch.arange(n) % 2
            bias = torch.full_like(y, -1) if fault == "no_bias" else (y + (fault == "bias_range") * 5)
            x = torch.rand(n, 3, 8, 8, generator=generator)
            return Split(x=x, y=y, bias=bias, artifact=torch.zeros(n, dtype=torch.bool),
                         conflicting=torch.zeros(n, dtype=torch.bool),
                         mask=torch.zeros(n, 3, 4, 4, dtype=torch.bool) if fault == "mask" else None)

        self.splits = {s: split() for s in ("train", "val", "test")}
        self.views = {"test_clean": split(), "test_biased": split()}
        if fault == "no_view":
            del self.views["test_biased"]


def test_a_correct_dataset_passes():
    assert check_dataset(TinyData).num_classes == 2


@pytest.mark.parametrize("fault,message", [
    ("no_bias", "provides bias_labels but every training bias is -1"),
    ("bias_range", "bias must be -1 or lie in [0, 1]"),
    ("mask", "mask must be bool [N, 1, H, W]"),
    ("no_view", "views must hold test_clean and test_biased"),
    ("unseeded", "differs between two builds with the same params"),
])
def test_the_dataset_check_names_what_is_wrong(fault, message):
    with pytest.raises(AssertionError, match="dataset 'test_contract_data'") as info:
        check_dataset(TinyData, fault=fault)
    assert message in str(info.value)
