"""Log lines: redacted (session ids, query values), tagged with the request id, kept for ``GET /logs``.

Every handler of the server's loggers gets :class:`RedactingFilter`, so no log line anywhere
(the console, ``GET /logs``, a log collector) holds a full session id or a query string's values.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from contextvars import ContextVar
from urllib.parse import parse_qsl

__all__ = ["LOG_FORMAT", "REQUEST_ID", "JsonFormatter", "LogBuffer", "RedactingFilter", "redact", "redact_paths"]

# uvicorn's own loggers do not propagate to the root logger, so they are attached to directly.
_LOGGERS = ("", "uvicorn", "uvicorn.access")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

_UUID = re.compile(r"\b([0-9a-fA-F]{8})-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_QUERY = re.compile(r"(?<=[^\s?])\?([^\s\"']*)")
_KEPT_QUERY_VALUES = {"model", "output", "lines", "state", "limit"}  # not secrets, useful to read


def _query(match: re.Match) -> str:
    pairs = parse_qsl(match.group(1), keep_blank_values=True)
    return "?" + "&".join(f"{k}={v[:64] if k in _KEPT_QUERY_VALUES else '…'}" for k, v in pairs)


_PATH = re.compile(r"(?<![\w.:/~-])(?:~|[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]*)")


def redact_paths(text: str) -> str:
    """``text`` with absolute file-system paths cut to their last component (``…/name``), for public replies."""
    return _PATH.sub(lambda m: "…/" + m.group(1), text)


def redact(text: str) -> str:
    """``text`` with session ids cut to their first 8 characters and query values other than names dropped."""
    return _UUID.sub(r"\1…", _QUERY.sub(_query, text))


class RedactingFilter(logging.Filter):
    """Redacts a record's message and arguments in place and tags it with the current request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        if getattr(record, "_aiaa_redacted", False):
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter reads its arguments by position
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        record._aiaa_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "request_id": getattr(record, "request_id", "-"), "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line)


class LogBuffer(logging.Handler):
    """A logging handler that keeps the last ``capacity`` formatted lines."""

    def __init__(self, capacity: int = 10_000, json_lines: bool = False) -> None:
        super().__init__(logging.INFO)
        self.json_lines = json_lines
        self.setFormatter(JsonFormatter() if json_lines else logging.Formatter(LOG_FORMAT))
        self.addFilter(RedactingFilter())
        self._lines: deque[str] = deque(maxlen=capacity)
        self._restore: list[tuple[logging.Handler, logging.Formatter | None]] = []

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
        """Start collecting from the root and uvicorn loggers; their other handlers get the same redaction and format."""
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if handler is self or any(isinstance(f, RedactingFilter) for f in handler.filters):
                    continue
                handler.addFilter(RedactingFilter())
                self._restore.append((handler, handler.formatter))
                handler.setFormatter(JsonFormatter() if self.json_lines else logging.Formatter(LOG_FORMAT))
            logger.addHandler(self)

    def detach(self) -> None:
        """Stop collecting; the other handlers get their own filters and formatters back."""
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self)
        for handler, formatter in self._restore:
            for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(f)
            handler.setFormatter(formatter)
        self._restore.clear()
