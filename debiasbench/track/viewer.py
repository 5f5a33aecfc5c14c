"""MLflow's UI on a store, opened where a training benchmark's runs are.

MLflow 3.17's UI chooses between its GenAI pages and its model-training pages by a switch
in the browser (stored per browser, GenAI until changed), not by the experiment's kind: a
plain link to an experiment opens its (empty) traces. The address ``debiasbench ui``
prints carries ``workflowType=machine_learning``, which opens the experiment's runs, with
their Dataset and Models columns, in any browser.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from debiasbench.core.errors import UserError

#: The query parameter of MLflow's UI that selects its model-training pages.
TRAINING_PAGES = "workflowType=machine_learning"


def experiment_address(base_url: str, experiment_id: str | None) -> str:
    """The UI address of an experiment's runs (of the experiment list, where there is no
    experiment yet) on the model-training pages; credentials in ``base_url`` are left out."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    base = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{TRAINING_PAGES}"
    return f"{base}/#/experiments/{experiment_id}/runs?{TRAINING_PAGES}"


def experiment_id_of(tracking_uri: str, experiment: str) -> str | None:
    """The id of ``experiment`` in the store, read without writing (None where the store
    or the experiment does not exist yet)."""
    from debiasbench.track.store import existing_store_client, sqlite_path

    client = existing_store_client(tracking_uri)  # another application's database, an older schema: refused
    if client is None:
        raise UserError(f"no tracking store at {sqlite_path(tracking_uri)}: run `debiasbench run` or `make demo` "
                        "first, or name a store with --tracking-uri")
    found = client.get_experiment_by_name(experiment)
    return None if found is None else str(found.experiment_id)


def serve(tracking_uri: str, host: str, port: int) -> int:
    """Run ``mlflow ui`` on the store in the foreground (Ctrl-C stops it); its exit code.
    Artifacts of an sqlite store lie in ``mlruns`` beside it, where runs wrote them."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        raise UserError("the mlflow command is not installed in this environment")
    command = [mlflow, "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
