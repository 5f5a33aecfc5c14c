"""Standard output that may fail without failing the command.

``debiasbench run > /dev/full`` trains and records its run, then cannot print the table;
``debiasbench methods | head -1`` has its reader gone after one line. Neither is a reason
for a traceback, and neither may change what finished work reports: the run is FINISHED in
the store and the command exits 0. ``guarded_streams`` puts ``GuardedStream`` in front of
``sys.stdout`` and ``sys.stderr`` while a command runs: the first write or flush that fails
with an ``OSError`` (``EPIPE``, ``ENOSPC``, ``EIO``) is recorded, the stream's file
descriptor is pointed at ``/dev/null`` (as the Python documentation advises for
``SIGPIPE``, so the interpreter's own flush at exit cannot fail either), and every later
write is dropped. The command goes on; afterwards the guard's ``error`` says what happened, and the
command line prints one line about it on stderr where stderr can still be written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, Iterator, TextIO


class GuardedStream:
    """A text stream in front of ``stream`` whose write and flush never raise ``OSError``:
    the first failure is kept in ``error`` and the stream goes quiet."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.error: OSError | None = None

    def _failed(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
        with contextlib.suppress(Exception):  # a stream without a descriptor (captured output) just stops
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._failed(exc)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._failed(exc)
        else:  # what the failed write left in the buffer goes to /dev/null now
            with contextlib.suppress(Exception):
                self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... of the real stream
        return getattr(self._stream, name)


def broken_pipe(error: OSError | None) -> bool:
    """Whether ``error`` says the reader went away (``| head -1``): not worth a message."""
    return isinstance(error, BrokenPipeError) or getattr(error, "errno", None) == errno.EPIPE


def failure_text(error: OSError) -> str:
    """One sentence about a failed standard output, naming the system's reason."""
    reason = error.strerror or type(error).__name__
    return f"standard output could not be written ({reason}): what was printed is incomplete"


@contextlib.contextmanager
def guarded_streams() -> Iterator[tuple[GuardedStream, GuardedStream]]:
    """``sys.stdout`` and ``sys.stderr`` guarded (``GuardedStream``) inside the block, both
    flushed at its end (a pipe's buffered output fails only then); the real streams after."""
    real_out, real_err = sys.stdout, sys.stderr
    out, err = GuardedStream(real_out), GuardedStream(real_err)
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = real_out, real_err
