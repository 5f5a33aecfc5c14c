"""A sweep on two Ray nodes that share nothing but an MLflow server (proxied artifacts):
each node has its own working directory and checkpoint folder. Jobs land on both nodes,
each runs once, a job whose node is killed mid-run resumes on the other node from the
checkpoint its run kept in the store, and the runs' artifacts open in MLflow's UI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from ray_nodes import clean_environment, ray_cluster
from servers import mlflow_server

from debiasbench.run.runner import CHECKPOINT_DIR_VARIABLE
from debiasbench.run.store_checkpoints import ARTIFACT_FOLDER, RESUMED_FROM_RUN_TAG
from debiasbench.track.heartbeat import HOLDER_TAG
from debiasbench.track.store import RUN_KEY_TAG

pytest.importorskip("ray")

#: Two jobs of about 40 short epochs each: long enough to kill one mid-run.
SWEEP = """
    datasets: [synthetic_artifacts]
    methods: [vanilla]
    seeds: [0, 1]
    overrides:
      epochs: 40
      device: cpu
      dataset_params: {n_train: 200, n_val: 40, n_test: 40, image_size: 16, patch_size: 3}
"""


def _holder_pid(run) -> int:
    return int(run.data.tags[HOLDER_TAG].rsplit(":", 1)[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        return response.read()


@pytest.mark.slow  # two Ray nodes, an MLflow server and 80 epochs: about a minute on 2 cores
def test_a_sweep_on_two_ray_nodes_sharing_only_a_tracking_server_survives_losing_a_node(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    nodes = [{CHECKPOINT_DIR_VARIABLE: str(tmp_path / f"node{i}" / "scratch"), "OMP_NUM_THREADS": "1"}
             for i in range(2)]
    with mlflow_server(tmp_path / "server") as uri, ray_cluster(tmp_path, nodes) as (driver, (head, worker)):
        client = MlflowClient(uri)
        (tmp_path / "driver").mkdir()
        (tmp_path / "driver" / "sweep.yaml").write_text(textwrap.dedent(SWEEP))
        sweep = subprocess.Popen([sys.executable, "-m", "debiasbench.cli", "sweep", "sweep.yaml", "--launcher", "ray",
                                  "--tracking-uri", uri, "--no-progress"], cwd=tmp_path / "driver",
                                 env={**clean_environment(), **driver},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # once the worker node's job has kept a checkpoint in the store, the node dies
            deadline, victim, survivor = time.monotonic() + 300, None, None
            while victim is None:
                assert sweep.poll() is None and time.monotonic() < deadline, "no job checkpointed on the worker node"
                running = [run for experiment in client.search_experiments()
                           for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")]
                on_worker = [run for run in running if _holder_pid(run) in worker.processes()]
                for run in on_worker:
                    if client.list_artifacts(run.info.run_id, ARTIFACT_FOLDER):
                        survivors = [r for r in running if _holder_pid(r) in head.processes()]
                        worker.kill()
                        victim, survivor = run, (survivors[0] if survivors else None)
                        break
                time.sleep(0.2)
            output, _ = sweep.communicate(timeout=600)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.returncode == 0, output[-3000:]
        assert survivor is not None, "the head node ran no job while the worker node ran one"

        runs = client.search_runs([victim.info.experiment_id])
        finished = [run for run in runs if run.info.status == "FINISHED"]
        assert Counter(run.data.tags[RUN_KEY_TAG] for run in finished) == Counter(
            {victim.data.tags[RUN_KEY_TAG]: 1, survivor.data.tags[RUN_KEY_TAG]: 1})
        assert client.get_run(victim.info.run_id).info.status == "KILLED"
        (resumed,) = [run for run in finished if run.data.tags[RUN_KEY_TAG] == victim.data.tags[RUN_KEY_TAG]]
        assert resumed.data.tags[RESUMED_FROM_RUN_TAG] == victim.info.run_id
        assert int(resumed.data.tags["debiasbench.resumed_from_epoch"]) >= 1
        # each node checkpointed into its own folder; the finished jobs' checkpoints are gone from the store
        assert not os.path.exists(tmp_path / "driver" / ".debiasbench")
        for run in (victim, *finished):
            assert client.list_artifacts(run.info.run_id, ARTIFACT_FOLDER) == []
        # the artifacts open as MLflow's UI fetches them, through the server
        for run in finished:
            picture = _get(f"{uri}/get-artifact?path=heatmaps.png&run_uuid={run.info.run_id}")
            assert picture.startswith(b"\x89PNG")
            names = {item.path for item in client.list_artifacts(run.info.run_id)}
            assert {"model.pt", "config.yaml"} <= names
            assert len(_get(f"{uri}/get-artifact?path=model.pt&run_uuid={run.info.run_id}")) > 1000
