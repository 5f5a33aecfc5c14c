"""Claims on jobs: at most one process runs a run key at a time.

Two sweeps (or a sweep and a ``debiasbench run``) that share a store and a checkpoint
folder may reach the same job. Without a claim both would run it, and the second would
resume from the first one's *live* checkpoint. A claim is an exclusive ``flock`` on
``<checkpoint_dir>/claims/<run key>.lock``, held for as long as the job runs. The kernel
drops it when its holder exits, however it exits (SIGKILL, out of memory), so a claim
is a lease that expires with its holder and never needs cleaning up by hand.

Claims are seen by every process that uses the same checkpoint folder (the default,
``.debiasbench/checkpoints``, is relative to the working directory: sweeps started from
one folder, or given an absolute ``checkpoint_dir``, share it); they are the fast, local
path. Processes that share the store but not the folder (another working directory,
another machine) see each other through the store: a RUNNING run whose holder keeps its
heartbeat fresh makes the job busy (``RunHeld``), and only a run whose holder is provably
gone is marked KILLED (``debiasbench.track.heartbeat``). So on a cluster the claim folder
need not be shared: a node's own (``DEBIASBENCH_CHECKPOINT_DIR``) serves, and a job resumes
on another node from the checkpoints its runs keep in the store
(``debiasbench.run.store_checkpoints``).

A claim leaves nothing behind: its holder removes the lock file, while still holding the
lock, when it releases it, and the folders the claim created where they are empty (a run
refused after its claim was taken, or finished, leaves no ``claims/`` folder). A process
that was waiting on the removed file finds, once it has the lock, that the path no longer
names the file it locked, and takes the claim again on a new file: two processes never
hold "the same" claim on two files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from debiasbench.core.errors import JobBusy, UserError
from debiasbench.track.heartbeat import RunHeld

__all__ = ["CLAIMS_FOLDER", "Claim", "JobBusy", "RunHeld"]

CLAIMS_FOLDER = "claims"


class Claim:
    """The claim on one run key; ``acquire`` then ``release`` (or use it as a context
    manager, which waits)."""

    def __init__(self, checkpoint_dir: str | Path, run_key: str):
        self.path = Path(checkpoint_dir) / CLAIMS_FOLDER / f"{run_key}.lock"
        self.run_key = run_key
        self._fd: int | None = None
        #: Folders this claim created, the outermost first (removed on release where empty).
        self._created: list[Path] = []

    def _open(self) -> int:
        """The lock file's descriptor, its folders made first (again, where a releasing
        holder removed them meanwhile)."""
        for _ in range(100):
            try:
                for folder in reversed((self.path.parent, *self.path.parent.parents)):
                    try:
                        folder.mkdir()
                    except FileExistsError:
                        continue
                    if folder not in self._created:  # made by this claim: removed by it where empty
                        self._created.append(folder)
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed between mkdir and open
                continue
            except OSError as exc:
                raise UserError(f"checkpoint_dir: cannot write {str(self.path.parent)!r} ({exc.strerror}); "
                                "set checkpoint_dir to a writable folder") from None
        raise UserError(f"checkpoint_dir: cannot keep a claim in {str(self.path.parent)!r}")

    def _names_file(self, fd: int) -> bool:
        """Whether the claim's path still names the file ``fd`` is open on (a holder that
        released the claim removed it)."""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def acquire(self, wait: bool) -> bool:
        """Take the claim; without ``wait``, False at once where another process holds it."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                self._remove_folders()
                return False
            except BaseException:
                os.close(fd)
                raise
            if self._names_file(fd):
                break
            os.close(fd)  # locked a file its holder removed on release: take the claim on a new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the process that last took the claim ('' if unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Remove the lock file (still holding it), unlock it, and remove the folders this
        claim created where they are empty."""
        if self._fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            self._remove_folders()

    def _remove_folders(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:  # not empty (checkpoints, another claim), or gone: keep the rest
                break
        self._created = []

    def __enter__(self) -> Claim:
        self.acquire(wait=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
