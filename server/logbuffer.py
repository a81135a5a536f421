"""The server's recent log lines, kept in memory for ``GET /logs`` (OHIF links to it)."""

from __future__ import annotations

import logging
from collections import deque

__all__ = ["LOG_FORMAT", "LogBuffer"]

# uvicorn's own loggers do not propagate to the root logger, so they are attached to directly.
_LOGGERS = ("", "uvicorn", "uvicorn.access")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogBuffer(logging.Handler):
    """A logging handler that keeps the last ``capacity`` formatted lines."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle() calls this with the handler's own lock held.
        try:
            line = self.format(record)
        except Exception:  # a broken log call must never break a request
            self.handleError(record)
            return
        self._lines.extend(line.splitlines() or [""])

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines, oldest first."""
        with self.lock:
            return list(self._lines)[-lines:] if lines > 0 else []

    def attach(self) -> None:
        """Start collecting from the root and uvicorn loggers."""
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        """Stop collecting."""
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self)
