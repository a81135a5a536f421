"""One server per state folder: an exclusive lock on ``<state_dir>/server.lock`` for the server's lifetime.

A second server on the same folder would take the job table for its own: mark the running jobs
interrupted, kill their workers and log that "the server stopped". The lock (``flock``, released
by the kernel when its holder exits, even on ``kill -9``) makes the second process refuse instead.
Within one process the lock is shared (counted): apps of one process are one server (tests run
an app in-process and over a socket at once).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

__all__ = ["StateFolderLocked", "StateLock"]


class StateFolderLocked(RuntimeError):
    """Another live process serves this state folder."""


_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, holders in this process)
_guard = threading.Lock()


class StateLock:
    """The exclusive lock of a state folder; :meth:`acquire` or refuse, :meth:`release` when done."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = (Path(state_dir) / "server.lock").resolve()
        self._held = False

    def acquire(self) -> StateLock:
        """Take the lock.

        Raises:
            StateFolderLocked: another process holds it (the message names its pid and the folder).
        """
        with _guard:
            if self.path in _held:
                fd, count = _held[self.path]
                _held[self.path] = (fd, count + 1)
            else:
                _held[self.path] = (self._take(), 1)
            self._held = True
        return self

    def _take(self) -> int:
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
        return fd

    def release(self) -> None:
        """Let the lock go (closing the file releases it, once no app of this process holds it)."""
        with _guard:
            if not self._held:
                return
            self._held = False
            fd, count = _held[self.path]
            if count > 1:
                _held[self.path] = (fd, count - 1)
            else:
                del _held[self.path]
                os.close(fd)
