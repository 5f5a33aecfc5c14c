"""Ctrl-C during a run says in which epoch it stopped and that the same command resumes;
the rerun resumes from the last finished epoch."""
from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.core.registry import METHODS
from debiasbench.methods.vanilla import Vanilla

ARGS = ["run", "--method", "interrupted_vanilla", "--dataset", "synthetic_artifacts",
        "--set", "dataset_params.n_train=64", "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
        "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "epochs=3",
        "--set", "batch_size=32", "--set", "device=cpu", "--set", "log_model=false"]


class InterruptedVanilla(Vanilla):
    """Vanilla whose third step (the first of epoch 2) is a Ctrl-C, once."""

    name = "interrupted_vanilla"
    steps = 0
    interrupt = True

    def loss(self, model: Any, batch: Any) -> Any:
        type(self).steps += 1
        if type(self).interrupt and type(self).steps == 3:
            type(self).interrupt = False
            raise KeyboardInterrupt
        return super().loss(model, batch)


def test_ctrl_c_in_an_epoch_names_it_and_the_same_command_resumes(register, tracking_uri):
    register(METHODS, InterruptedVanilla)
    stopped = CliRunner().invoke(app, [*ARGS, "--tracking-uri", tracking_uri])
    assert stopped.exit_code == 130
    # the last line on stderr (the epochs' progress lines come before it)
    assert stopped.output.strip().splitlines()[-1] == ("interrupted in epoch 2 of 3; run the same command again to "
                                                       "resume after epoch 1 (checkpointed).")
    resumed = CliRunner().invoke(app, [*ARGS, "--tracking-uri", tracking_uri])
    assert resumed.exit_code == 0, resumed.output
    runs = MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()])
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FINISHED", "KILLED"]
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert finished.data.tags["debiasbench.resumed_from_epoch"] == "1"
