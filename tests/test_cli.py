"""The command line: tables for good input, one line and exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.method import Method
from debiasbench.core.registry import METHODS

TINY = ["--set", "dataset_params.n_train=100", "--set", "dataset_params.n_val=40",
        "--set", "dataset_params.n_test=40", "--set", "dataset_params.image_size=16",
        "--set", "dataset_params.patch_size=3", "--set", "epochs=1", "--set", "device=cpu"]


def invoke(args):
    return CliRunner().invoke(app, args)


def test_run_prints_a_metrics_table_and_logs_to_the_given_store(tracking_uri):
    result = invoke(["run", "--method", "vanilla", "--dataset", "synthetic_artifacts", "--seed", "1",
                     "--tracking-uri", tracking_uri, *TINY])
    assert result.exit_code == 0, result.output
    assert "test_biased_acc" in result.output and "test_conflicting_acc" in result.output
    assert tracking_uri in result.output


def test_run_defaults_to_mlflow_db_in_the_working_directory(tracking_uri, tmp_path):
    result = invoke(["run", "--dataset", "synthetic_artifacts", *TINY])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mlflow.db").exists()


class NeedsMasks(Method):
    name = "test_needs_masks"
    requires = frozenset({"artifact_masks"})


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "vanila"], "unknown method 'vanila'; did you mean 'vanilla'?"),
    (["run", "--dataset", "colored_digit"], "did you mean 'colored_digits'?"),
    (["run", "--seed", "abc"], "seed: expected an integer in [0, 4294967295], got 'abc'"),
    (["run", "--set", "lr=fast"], "lr: expected a float >= 0.0, got 'fast'"),
    (["run", "--set", "lr=.inf"], "lr: expected a finite float >= 0.0, got inf"),
    (["run", "--set", "lr=.nan"], "lr: expected a finite float >= 0.0, got nan"),
    (["run", "--set", "dataset_params.bias_ratio=1.5"], "dataset_params.bias_ratio: expected a float in [0.0, 1.0]"),
    (["run", "--set", "epoch=3"], "did you mean 'epochs'?"),
    (["run", "--set", "hparams.lambda=1"], "unknown key 'hparams.lambda'"),
    (["run", "--config", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["run", "--method", "test_needs_masks"], "requires artifact_masks, which dataset 'colored_digits'"),
    (["run", "--model", "resnet81", "--dataset", "synthetic_artifacts", *TINY], "did you mean 'resnet18'?"),
    (["sweep", "missing.yaml"], "not found"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tracking_uri, register):
    register(METHODS, NeedsMasks)
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_console_script_prints_no_traceback_for_bad_input(tmp_path):
    script = textwrap.dedent("""
        import sys
        from debiasbench.cli import main
        sys.argv = ["debiasbench", "run", "--set", "batch_size=0"]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: batch_size: expected an integer in [1, 1000000], got 0."
    assert not (tmp_path / "mlflow.db").exists()  # nothing written for a rejected config


def test_methods_and_datasets_list_requirements_and_parameters():
    methods = invoke(["methods"])
    assert methods.exit_code == 0 and "vanilla" in methods.output
    datasets = invoke(["datasets"])
    assert datasets.exit_code == 0
    for text in ("colored_digits", "synthetic_artifacts", "bias_ratio = 0.95", "artifact_masks"):
        assert text in datasets.output


def test_models_lists_each_builder_with_its_summary_and_the_timm_prefix_without_building():
    from debiasbench.core.registry import MODELS

    def never_built(num_classes: int, in_channels: int = 3):
        """A test network that must not be built
        just to be listed."""
        raise AssertionError("a listing built a network")

    with MODELS.override(never_built, name="test_listed_net"):
        result = invoke(["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "small_cnn: Three conv-BN-ReLU blocks (32/64/128 channels): fast enough for CPU tests." in lines
    assert "test_listed_net: A test network that must not be built just to be listed." in lines
    assert {"mlp", "resnet18", "vgg16", "efficientnet_b0"} <= {line.split(":")[0] for line in lines}
    assert lines[-1].startswith("timm:<name>: any timm architecture")


def test_models_shows_a_plugin_that_fails_to_load_as_broken(monkeypatch):
    from importlib.metadata import EntryPoint

    from debiasbench.core.registry import Registry

    broken = EntryPoint(name="lost_net", value="no_such_module_xyz:net", group="debiasbench.models")
    good = EntryPoint(name="small_cnn", value="debiasbench.models.architectures:small_cnn", group="debiasbench.models")
    monkeypatch.setattr("debiasbench.core.registry.entry_points", lambda group: [broken, good])
    monkeypatch.setattr("debiasbench.core.registry.MODELS", Registry("model", "debiasbench.models"))
    result = invoke(["models"])
    assert result.exit_code == 0, result.output
    assert "lost_net: failed to load: ModuleNotFoundError: No module named 'no_such_module_xyz'" in result.output
    assert "small_cnn: Three conv-BN-ReLU blocks" in result.output


def test_sweep_runs_every_job_once_and_skips_finished_jobs_when_rerun(tracking_uri, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent("""
        methods: [vanilla]
        datasets: [synthetic_artifacts]
        seeds: [0, 1]
        overrides:
          epochs: 1
          device: cpu
          dataset_params: {n_train: 100, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}
    """))
    first = invoke(["sweep", str(sweep), "--tracking-uri", tracking_uri])
    assert first.exit_code == 0, first.output
    assert first.output.count("finished in") == 2
    again = invoke(["sweep", str(sweep), "--tracking-uri", tracking_uri])
    assert again.exit_code == 0 and "2 of 2 jobs finished earlier: skipped" in again.output
    assert "finished in" not in again.output
    dry = invoke(["sweep", str(sweep), "--dry-run"])
    assert "2 jobs" in dry.output


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "rrclarc", "--dataset", "colored_digits"],
     "method 'rrclarc' requires artifact_labels, which dataset 'colored_digits' does not provide"),
    (["run", "--method", "rrr", "--dataset", "colored_digits"], "requires artifact_masks"),
    (["run", "--method", "rrclarc", "--dataset", "synthetic_artifacts", "--set", "hparams.lambda=-1"],
     "hparams.lambda: expected a float >= 0.0, got -1"),
    (["run", "--method", "rrclarc", "--dataset", "synthetic_artifacts", "--set", "hparams.target=logit"],
     "hparams.target: expected one of 'random_logits'"),
    (["run", "--method", "aclarc", "--dataset", "synthetic_artifacts", "--set", "hparams.cav_kind=pca"],
     "hparams.cav_kind: expected one of 'pattern', 'svm', 'ridge', 'lasso', 'logistic'"),
    (["run", "--method", "rrclarc", "--dataset", "synthetic_artifacts", "--model", "resnet18",
      "--set", "latent_layer=layer5", *TINY], "did you mean 'layer4'?"),
])
def test_correction_bad_input_is_one_line_and_exit_code_2(args, message, tracking_uri):
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_latent_layer_typo_trains_nothing_and_records_nothing(tracking_uri):
    from debiasbench.track.store import Tracker

    result = invoke(["run", "--method", "rrclarc", "--dataset", "synthetic_artifacts",
                     "--set", "latent_layer=block9", "--tracking-uri", tracking_uri, *TINY])
    assert result.exit_code == 2 and "did you mean 'block3'" in result.output
    tracker = Tracker(tracking_uri, "debiasbench")
    assert tracker.client.search_runs([tracker.experiment_id]) == []
