"""A ``debiasbench`` command run in a process of its own by a test, for tests that signal
it as a terminal, a scheduler or ``kill`` would and read what it says meanwhile."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class Command:
    """A ``debiasbench`` command in a process of its own (a session of its own, so that a
    signal can go to its whole process group as a terminal's or a scheduler's does), its
    stderr read as it comes."""

    def __init__(self, args: list[str], cwd: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "debiasbench.cli", *args], cwd=cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "default"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")),  # type: ignore[union-attr]
                                       daemon=True)
        self.reader.start()

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while sum(text in line for line in self.lines) < count:
            assert time.time() < deadline and self.process.poll() is None, self.stderr
            time.sleep(0.1)

    def stop(self, signum: int, group: bool) -> tuple[int, float]:
        """Send ``signum``; the exit code and the seconds it took to exit."""
        began = time.monotonic()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self.reader.join(5)
        return code, time.monotonic() - began

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL to the whole process group where the command still runs (a test's cleanup)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
