"""A time limit for a block of a test (the suite has no timeout plugin): a test that would
hang on a cluster that never answers, or on a named pipe opened as a file, fails instead."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def deadline(seconds: int, *pipes: Path) -> Iterator[None]:
    """Fail the block with TimeoutError after ``seconds`` (SIGALRM); first open each of
    ``pipes`` for writing and close it, so a thread blocked opening one for reading gets
    end-of-file and ends."""

    def expire(signum: int, frame: object) -> None:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        raise TimeoutError(f"still waiting after {seconds} s" + (": a pipe was opened as a file" if pipes else ""))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
