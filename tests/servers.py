"""Real servers for tests, started in a temp folder and stopped by process group: an MLflow
tracking server with proxied artifact storage, and free loopback ports for them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    """Return once something accepts connections at 127.0.0.1:``port``; fail where
    ``process`` ends first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, f"{what} did not start"
            time.sleep(0.5)


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen, int]:
    """MLflow's server on a free loopback port: runs in ``folder/server.db``, artifacts
    proxied by the server into ``folder/artifacts`` (clients never see that folder)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port, server, "the MLflow server")
    return server, port


def stop(process: subprocess.Popen, seconds: float = 60) -> None:
    """SIGTERM to ``process``'s group (started with ``start_new_session``), SIGKILL after
    ``seconds``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=seconds)


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """The URI of an MLflow server with proxied artifacts (``start_mlflow_server``),
    stopped afterwards."""
    server, port = start_mlflow_server(folder)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process's ``(parent pid, process group)``, from one pass over /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(roots: Iterable[int], table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """Every live process below ``roots`` (children, their children, ...), from ``table``
    (``process_table()`` where not given)."""
    parents = {child: parent for child, (parent, _) in (table or process_table()).items()}
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
