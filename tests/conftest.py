"""Shared fixtures: a throwaway tracking store and tiny, fast run configs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# Two threads in one process; one per worker where pytest-xdist runs a worker per core,
# and one in the processes its tests start (a `debiasbench run` beside another worker's
# test: two threads each on two cores run a small model several times slower).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder as the working directory, with no store named by the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def image_cache_folder(tmp_path_factory: pytest.TempPathFactory):
    """Image caches of the tests' generated datasets go to a folder of the session (its
    subprocesses too), never into the user's ~/.cache; a test of the default location
    sets its own."""
    folder = tmp_path_factory.mktemp("image-cache")
    before = os.environ.get("DEBIASBENCH_CACHE")
    os.environ["DEBIASBENCH_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("DEBIASBENCH_CACHE", None)
    else:
        os.environ["DEBIASBENCH_CACHE"] = before


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty sqlite store in a temporary folder, also the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tracker(tracking_uri: str):
    from debiasbench.track.store import Tracker

    return Tracker(tracking_uri, "tests")


@pytest.fixture
def register():
    """Register a plugin class for one test only: ``register(METHODS, cls)``; whatever
    the name meant before comes back after the test."""
    with contextlib.ExitStack() as overrides:

        def add(registry, cls):
            return overrides.enter_context(registry.override(cls))

        yield add


class Tmpfs:
    """A small tmpfs mounted for one test: a disk that fills up, or turns read-only."""

    def __init__(self, path: Path, size: str):
        import subprocess

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)

    def remount(self, options: str) -> None:
        import subprocess

        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(size)`` mounts a tmpfs of ``size`` (e.g. "1m") under the test's folder and
    unmounts it afterwards; the test is skipped where this process may not mount (not
    root, or a container without the right), as a full or read-only disk cannot be made
    otherwise."""
    import subprocess

    mounted: list[Tmpfs] = []

    def mount(size: str) -> Tmpfs:
        try:
            fs = Tmpfs(tmp_path / f"tmpfs{len(mounted)}", size)
        except (subprocess.CalledProcessError, FileNotFoundError, PermissionError):
            pytest.skip("needs to mount a tmpfs (root with CAP_SYS_ADMIN)")
        mounted.append(fs)
        return fs

    yield mount
    for fs in mounted:
        fs.unmount()
