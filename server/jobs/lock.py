"""One server per state folder: an exclusive lock on ``<state_dir>/server.lock`` for the server's lifetime.

A second server on the same folder would take the job table for its own: mark the running jobs
interrupted, kill their workers and log that "the server stopped". The lock (``flock``, released
by the kernel when its holder exits, even on ``kill -9``) makes the second one refuse instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["StateFolderLocked", "StateLock"]


class StateFolderLocked(RuntimeError):
    """Another live process serves this state folder."""


class StateLock:
    """The exclusive lock of a state folder; :meth:`acquire` or refuse, :meth:`release` when done."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock.

        Raises:
            StateFolderLocked: another process holds it (the message names its pid and the folder).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateFolderLocked(
                f"another server (pid {holder}) already uses the state folder {self.path.parent}: stop it first, "
                f"or give this one its own folder (AIAA_STATE_DIR)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
