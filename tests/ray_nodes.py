"""Ray nodes for tests: a head and more nodes started with ``ray start`` on this machine,
each in its own working directory, temp folder and environment, stopped (or killed, as a
node dies) by process group, so tests never stop another test's Ray with ``ray stop``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from servers import descendants, free_port, process_table

#: The head's health checks, fast: a node killed in a test is declared dead in seconds.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                      "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}


def ray_cli() -> str:
    found = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert found is not None, "Ray's command line is not installed beside this Python"
    return found


def clean_environment() -> dict[str, str]:
    """This process's environment without Ray's variables (a test's RAY_ADDRESS, a token)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


class RayNode:
    """One node started by ``ray start`` in its own process group."""

    def __init__(self, args: list[str], folder: Path, env: Mapping[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        # Ray's sockets live under the temp folder: a short path keeps them under the limit of 107 bytes
        self.temp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))
        self.folder = folder
        started = subprocess.Popen([ray_cli(), "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                    f"--temp-dir={self.temp}"], cwd=folder, env=dict(env),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        output, _ = started.communicate(timeout=180)
        assert started.returncode == 0, output[-3000:]
        self.group = started.pid  # the node's processes outlive `ray start` in its process group

    def processes(self) -> set[int]:
        """The node's live processes: its process group and everything below them (Ray's
        workers included)."""
        table = process_table()
        members = {pid for pid, (_, group) in table.items() if group == self.group}
        return members | descendants(members, table)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process of the node (SIGKILL: the node dies at once)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.kill(signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(folder: Path, nodes: Sequence[Mapping[str, str]],
                head_env: Mapping[str, str] | None = None) -> Iterator[tuple[dict[str, str], list[RayNode]]]:
    """A head and ``len(nodes) - 1`` more nodes with one CPU each; node ``i`` runs in
    ``folder/node<i>`` with the environment variables ``nodes[i]``. Yields the environment
    of a driver and the nodes (the head first), once every node has joined.

    Each cluster has its own auth token (``RAY_AUTH_TOKEN`` on the nodes): heads started at
    once on a machine without ``~/.ray/auth_token`` would each write theirs there, and the
    loser's cluster would refuse its own drivers. A driver gets ``RAY_ADDRESS`` and
    ``RAY_AUTH_TOKEN_PATH``, a file holding the token, and no ``RAY_AUTH_MODE``: as with the
    file ``ray start`` writes, the sweep must see the token and turn token mode on itself."""
    port = free_port()
    token = secrets.token_hex(32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "auth_token").write_text(token)
    base = {**clean_environment(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    started: list[RayNode] = []
    try:
        started.append(RayNode(["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
                               folder / "node0", {**base, **FAST_HEALTH_CHECKS, **(head_env or {}), **nodes[0]}))
        for index, extra in enumerate(nodes[1:], start=1):
            started.append(RayNode([f"--address=127.0.0.1:{port}", "--num-cpus=1"], folder / f"node{index}",
                                   {**base, **extra}))
        _wait_for_nodes(f"127.0.0.1:{port}", len(nodes), base)
        yield {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_TOKEN_PATH": str(folder / "auth_token")}, started
    finally:
        for node in reversed(started):
            node.stop()


def _wait_for_nodes(address: str, count: int, env: Mapping[str, str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        status = subprocess.run([ray_cli(), "status", f"--address={address}"], env=dict(env), capture_output=True,
                                text=True, timeout=60)
        active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        if status.returncode == 0 and active.count("node_") >= count:
            return
        assert time.monotonic() < deadline, f"{count} Ray nodes did not join: {status.stdout[-1000:]}"
        time.sleep(1)
