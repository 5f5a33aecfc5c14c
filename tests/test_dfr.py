"""DFR: group-balanced subsets, only the last layer changes, the refitted weights are the
averaged logistic regressions mapped back from standardised features, runs end to end and
on every architecture (bad input: tests/test_groupdro.py; the paper's claim:
tests/test_groupdro_dfr_claims.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.method import RunContext
from debiasbench.core.errors import RunFailed
from debiasbench.methods import dfr as dfr_module
from debiasbench.methods.dfr import (C_GRID, DFR, balanced_subset, fit_l1_logistic, group_weights,
                                     last_layer_inputs)
from debiasbench.run.runner import build_dataset, build_run_model, run
from debiasbench.testing import SMALL_IMAGES, tiny_config


def test_balanced_subset_takes_the_smallest_present_groups_size_from_every_group():
    groups = torch.tensor([0] * 7 + [3] * 2 + [5] * 4 + [-1] * 3)
    chosen = balanced_subset(groups, torch.Generator().manual_seed(0))
    assert torch.bincount(groups[chosen], minlength=6).tolist() == [2, 0, 0, 2, 0, 2]
    assert len(set(chosen.tolist())) == len(chosen)  # no repeats
    other = balanced_subset(groups, torch.Generator().manual_seed(1))
    assert set(chosen.tolist()) != set(other.tolist())  # a fresh random subset per draw


def test_group_weights_give_every_group_the_same_total_weight():
    groups = torch.tensor([0, 0, 0, 2, 4, 4])
    weights = group_weights(groups)
    totals = torch.zeros(5, dtype=weights.dtype).index_add(0, groups, weights)
    assert totals[[0, 2, 4]].tolist() == pytest.approx([2.0, 2.0, 2.0]) and weights.mean() == pytest.approx(1.0)


def test_one_vs_rest_fit_gives_every_class_a_row_and_absent_classes_are_never_predicted():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2], 20)
    z = rng.normal(size=(40, 3)) + y[:, None]
    coef, intercept = fit_l1_logistic(z, y, 1.0, num_classes=3)
    assert coef.shape == (3, 3) and (coef[1] == 0).all() and intercept[1] < -1e3
    assert ((z @ coef.T + intercept).argmax(1) == y).mean() > 0.8


@pytest.mark.parametrize("weighted", [False, True])
def test_liblinear_called_directly_gives_the_estimators_fits_bit_for_bit(weighted, monkeypatch, capfd):
    # DFR calls scikit-learn's liblinear binding without LogisticRegression's input checks
    # (about 90% of a fit's time on its small fit sets): same coefficients, intercepts and
    # draws from numpy's global generator (liblinear's seed) as the estimator
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=60)
    z = rng.normal(size=(60, 16)) + y[:, None] * rng.normal(size=16)
    weights = rng.uniform(0.5, 2.0, size=60) if weighted else None
    liblinear = dfr_module.liblinear_binding()
    assert liblinear is not None  # else the comparison below is vacuous
    liblinear.set_verbosity_wrap(1)  # as a fresh process starts: DFR silences it
    fits, after = {}, {}
    for path in ("direct", "estimator"):
        if path == "estimator":
            monkeypatch.setattr(dfr_module, "liblinear_binding", lambda: None)
        np.random.seed(7)
        fits[path] = [fit_l1_logistic(z, y, c, num_classes=5, sample_weight=weights) for c in C_GRID]
        after[path] = np.random.randint(1 << 30)  # the global generator, where each left it
    for direct, estimator in zip(fits["direct"], fits["estimator"]):
        assert all(np.array_equal(a, b) for a, b in zip(direct, estimator))
    assert after["direct"] == after["estimator"]
    assert any((coef != 0).any() for coef, _ in fits["direct"])
    assert capfd.readouterr().out == ""


def test_non_finite_features_fail_the_run_with_one_line():
    z = np.ones((4, 2))
    z[1, 0] = np.nan
    with pytest.raises(RunFailed, match="NaN or infinite"):
        fit_l1_logistic(z, np.array([0, 1, 0, 1]), 1.0, num_classes=2)


def make_dfr(**hparams) -> tuple[DFR, RunContext]:
    config = tiny_config(method="dfr", hparams=hparams)
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        model(dataset.splits["train"].x[:64])
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0), log_metrics=logged.update)
    logged.clear()
    return DFR(config.hparams, ctx), ctx


logged: dict[str, float] = {}


def test_prepare_changes_only_the_last_linear_layer():
    method, ctx = make_dfr()
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    method.prepare(ctx)
    after = ctx.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}
    assert list(method.trainable_parameters(ctx.model)) == []
    assert logged["dfr_C"] in C_GRID and 0.0 <= logged["dfr_tune_worst_group_acc"] <= 1.0


def test_every_fit_uses_a_group_balanced_subset_of_validation(monkeypatch):
    seen = []

    def spy(groups, generator):
        chosen = balanced_subset(groups, generator)
        seen.append(torch.bincount(groups[chosen])[torch.bincount(groups) > 0])
        return chosen

    monkeypatch.setattr(dfr_module, "balanced_subset", spy)
    method, ctx = make_dfr(n_refits=4)
    method.prepare(ctx)
    assert len(seen) == 1 + 4  # one fit set for every tuned C (as the authors' code), then the refits
    assert all(len(set(counts.tolist())) == 1 for counts in seen)  # equal counts per group
    val_groups = ctx.dataset.splits["val"].groups(ctx.dataset.num_bias)
    present = torch.bincount(val_groups)
    assert seen[-1].tolist() == [int(present[present > 0].min())] * int((present > 0).sum())


@pytest.mark.parametrize("scaler", ["train", "val"])
def test_written_weights_are_the_averaged_fits_mapped_back_from_standardised_features(monkeypatch, scaler):
    rng = np.random.default_rng(0)
    fits = []

    def fake_fit(z, y, c, num_classes, sample_weight=None):
        fits.append((rng.normal(size=(num_classes, z.shape[1])), rng.normal(size=num_classes)))
        return fits[-1]

    monkeypatch.setattr(dfr_module, "fit_l1_logistic", fake_fit)
    method, ctx = make_dfr(C=0.3, n_refits=3, scaler=scaler)
    val = ctx.dataset.splits["val"]
    features, _ = last_layer_inputs(ctx.model, val.x)
    # the authors' scaler is fitted on the training split's features, ours on validation's
    fitted_on, _ = last_layer_inputs(ctx.model, ctx.dataset.splits[scaler].x)
    method.prepare(ctx)
    assert len(fits) == 3  # C given: no tuning
    coef, intercept = (np.mean([f[i] for f in fits], axis=0) for i in (0, 1))
    h, s = features.double().numpy(), fitted_on.double().numpy()
    z = (h - s.mean(0)) / np.where(s.std(0) > 1e-8, s.std(0), 1.0)
    with torch.no_grad():
        logits = ctx.model.eval()(val.x).double().numpy()
    assert np.allclose(logits, z @ coef.T + intercept, atol=1e-4)


def test_dfr_runs_end_to_end_through_the_command_line_from_a_vanilla_base(tracking_uri):
    result = CliRunner().invoke(app, [
        "run", "--method", "dfr", "--dataset", "colored_digits", "--set", "dataset_params.image_size=8",
        "--set", "device=cpu", "--set", "hparams.n_refits=2", "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "test_conflicting_acc" in result.output and "training it first" in result.output


@pytest.mark.parametrize("model", [
    "small_cnn",
    # torchvision / timm architectures: seconds each on a CPU, so `slow` (make test-fast skips them)
    *[pytest.param(m, marks=pytest.mark.slow) for m in ("resnet18", "efficientnet_b0", "timm:resnet18")],
    # vgg16 (138M parameters, minutes on a CPU): its latent layer and LRP rules are covered by
    # test_corrections_architectures; tests/test_gpu.py runs this method on it under make gpu-check.
])
def test_groupdro_and_dfr_run_on_the_architecture(tracker, model):
    small = {**SMALL_IMAGES, "n_val": 32}  # DFR's balanced halves need validation samples
    for method, hparams in (("groupdro", {"sampling": "balanced"}), ("dfr", {"n_refits": 2})):
        config = tiny_config(method=method, model=model, epochs=1, batch_size=16, dataset_params=small,
                             hparams=hparams)
        result = run(config, tracker, progress=False)
        assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0, method
    stored = tracker.client.search_runs([tracker.experiment_id])
    assert {r.info.status for r in stored} == {"FINISHED"}
    assert {r.data.params["method"] for r in stored} == {"vanilla", "groupdro", "dfr"}
