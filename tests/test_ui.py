"""`debiasbench ui`: MLflow's UI on a store, at an address that opens the experiment's
training runs (with their Dataset and Models columns) instead of MLflow 3's GenAI traces."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.track.viewer import experiment_address

TINY = ["--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=100", "--set", "dataset_params.n_val=40",
        "--set", "dataset_params.n_test=40", "--set", "dataset_params.image_size=16",
        "--set", "dataset_params.patch_size=3", "--set", "epochs=1", "--set", "device=cpu"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def test_the_address_opens_the_training_pages_and_never_shows_credentials():
    assert experiment_address("http://127.0.0.1:5000", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert experiment_address("https://alice:secret@mlflow.example.org/", None) == \
        "https://mlflow.example.org/#/experiments?workflowType=machine_learning"


def test_a_store_that_does_not_exist_is_one_line_and_is_not_created(tmp_path):
    result = CliRunner().invoke(app, ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2 and "no tracking store at" in result.output
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_ui_serves_the_store_and_its_address_shows_the_run_with_dataset_and_model(tmp_path):
    """A run logged with log_model=true shows its data in the Dataset column and its model
    in the Models column, linked to the logged model's page."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = CliRunner().invoke(app, ["run", *TINY, "--set", "log_model=true", "--tracking-uri", uri,
                                       "--no-progress"])
    assert trained.exit_code == 0, trained.output
    run_id = re.search(r"run (\w+) logged to", trained.output).group(1)  # type: ignore[union-attr]
    run = MlflowClient(uri).get_run(run_id)
    run_name = run.info.run_name
    assert run.outputs is not None
    [output] = run.outputs.model_outputs  # log_model: the trained network is the run's logged model
    model = MlflowClient(uri).get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, str(model.status)) == ("model", run_id, "READY")
    port = free_port()
    command = [sys.executable, "-m", "debiasbench.cli", "ui", "--tracking-uri", uri, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        address = re.search(r"open (\S+)", line).group(1)  # type: ignore[union-attr]
        assert address.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert address.endswith("/runs?workflowType=machine_learning")
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        if CHROMIUM is None:
            pytest.skip("the UI is served; needs a chromium binary to open its page")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(address)
            page.get_by_text(run_name, exact=True).first.wait_for(timeout=60_000)
            text = page.inner_text("body")
            # the Models column links the run's model to its page (MLflow shows "-" where a run has none)
            models = page.locator(f'a[href$="/models/{model.model_id}"]')
            # the logged models are fetched by a request of their own, after the runs show
            models.first.wait_for(timeout=60_000)
            linked = [models.nth(i).inner_text().strip() for i in range(models.count())]
            browser.close()
        assert linked == ["model"], linked
        assert "synthetic_artifacts" in text  # the Dataset column names the run's data
        assert "1 matching run" in text  # the runs table, not the traces page
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
