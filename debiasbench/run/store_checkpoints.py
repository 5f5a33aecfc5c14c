"""Checkpoints kept in the tracking store, so a job resumes on whichever node runs it next.

A run checkpoints into ``checkpoint_dir`` (``last.pt`` every epoch, ``best.pt`` when the
selection metric improves). On one machine, or on nodes sharing that folder, a killed
job's next run resumes from there. Nodes that share nothing but a tracking server (Ray
workers, Slurm nodes without a shared filesystem) cannot see each other's folders, so
where ``store_checkpoints`` says so (``auto``: where the tracking URI is a server) each
checkpoint written is also logged as an artifact of its run, under ``checkpoint/``.

A job's next run that finds no checkpoint in its own folder fetches the newest one kept by
an earlier, unfinished (KILLED or FAILED) run of the same run key, and resumes from it as
from a local one: an unusable file (an upload cut short by the node's death) is set aside
and the run starts from scratch (``runner.Trainer.resume``). The run records where it
came from (``RESUMED_FROM_RUN_TAG``). Once the job finishes, the checkpoints kept by its
runs are deleted from the store where the artifact store allows it (the run's own weights
are ``model.pt``).

An upload costs one artifact write per checkpoint (about the model's size); with
``store_checkpoints: never`` a cluster run keeps its checkpoints on its node only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from debiasbench.contract.config import RunConfig

#: The run's artifact folder that holds its checkpoints.
ARTIFACT_FOLDER = "checkpoint"
#: The files kept there (those ``runner.Trainer`` writes).
CHECKPOINT_FILES = ("last.pt", "best.pt")
#: Tag of a run that resumed from a checkpoint another run kept in the store: that run's id.
RESUMED_FROM_RUN_TAG = "debiasbench.resumed_from_run"


def wanted(config: RunConfig, tracking_uri: str) -> bool:
    """Whether ``config``'s checkpoints are kept in the store as well: ``always``, or with
    ``auto`` where the store is a server (``http(s)://``), whose nodes may share no folder."""
    if config.store_checkpoints == "auto":
        return tracking_uri.startswith(("http://", "https://"))
    return config.store_checkpoints == "always"


def keep(tracked: Any, path: Path) -> None:
    """Log the checkpoint just written at ``path`` as the run's ``checkpoint/<name>``
    (replacing the previous one)."""
    tracked.log_artifact(path, ARTIFACT_FOLDER)


def _kept_files(client: Any, run_id: str) -> set[str]:
    try:
        return {Path(item.path).name for item in client.list_artifacts(run_id, ARTIFACT_FOLDER)}
    except Exception:  # a run whose artifacts cannot be listed keeps nothing usable
        return set()


def fetch_latest(tracker: Any, run_key: str, this_run_id: str, folder: Path) -> str | None:
    """Download into ``folder`` the checkpoints kept by the newest unfinished run of
    ``run_key`` (other than ``this_run_id``) that kept a ``last.pt``; that run's id, or None
    where no run kept one."""
    from debiasbench.track.store import RUN_KEY_TAG

    earlier = [run for run in tracker.search(f"tags.`{RUN_KEY_TAG}` = '{run_key}'")
               if run.info.run_id != this_run_id and run.info.status in ("KILLED", "FAILED")]
    for run in sorted(earlier, key=lambda run: run.info.start_time or 0, reverse=True):
        kept = _kept_files(tracker.client, run.info.run_id)
        if "last.pt" not in kept:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for name in CHECKPOINT_FILES:
            if name in kept:
                downloaded = Path(tracker.download(run.info.run_id, f"{ARTIFACT_FOLDER}/{name}", folder))
                if downloaded != folder / name:
                    downloaded.replace(folder / name)
        _remove_empty(folder / ARTIFACT_FOLDER)
        return str(run.info.run_id)
    return None


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def discard(tracker: Any, run_key: str) -> int:
    """Delete the checkpoints kept by the runs of ``run_key`` (its job has finished), where
    the artifact store can delete; the number of runs whose checkpoints went. Best effort:
    a store that cannot delete keeps them, and the job's result is unaffected."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from debiasbench.track.store import RUN_KEY_TAG

    removed = 0
    for run in tracker.search(f"tags.`{RUN_KEY_TAG}` = '{run_key}'"):
        if not _kept_files(tracker.client, run.info.run_id):
            continue
        try:
            repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracker.uri)
            repository.delete_artifacts(ARTIFACT_FOLDER)
        except Exception:  # not supported by this artifact store, or it is busy: kept
            continue
        removed += 1
    return removed
