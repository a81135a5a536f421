"""The client's errors: one tree, mapped once from HTTP status codes.

    AIAAError                  status, error (the server's kind), detail
    ├── BadRequest             400, 413, 422 and any other 4xx
    ├── Unauthorized           401, 403 (missing or wrong admin token)
    ├── NotFound               404 (unknown model, session, job or route)
    ├── SessionExpired         440 (unknown or expired session_id on an inference call)
    ├── Busy                   503, with ``retry_after`` seconds when the server sent Retry-After
    ├── ServerError            any other 5xx
    ├── Timeout                no reply within the client's timeout
    ├── ConnectionFailed       the server could not be reached, or dropped the connection
    └── ProtocolError          a reply the client cannot read (e.g. a multipart reply without a file)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = [
    "AIAAError",
    "BadRequest",
    "Busy",
    "ConnectionFailed",
    "NotFound",
    "ProtocolError",
    "ServerError",
    "SessionExpired",
    "Timeout",
    "Unauthorized",
    "error_from_reply",
]


class AIAAError(Exception):
    """Base of every client error; ``status`` is ``None`` when no HTTP reply came."""

    def __init__(self, detail: str, status: int | None = None, error: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.detail = detail
        self.status = status
        self.error = error
        self.headers = dict(headers or {})
        prefix = f"HTTP {status}" + (f" {error}" if error else "") if status is not None else type(self).__name__
        super().__init__(f"{prefix}: {detail}")


class BadRequest(AIAAError):
    """The server refused the request as malformed (400, 413, 422, other 4xx)."""


class Unauthorized(AIAAError):
    """Admin call without a valid token (401 or 403)."""


class NotFound(AIAAError):
    """Unknown model, session, job or route (404)."""


class SessionExpired(AIAAError):
    """The session is unknown or expired (AIAA's HTTP 440)."""


class Busy(AIAAError):
    """The server is saturated or the model unavailable (503); ``retry_after`` in seconds if sent."""

    @property
    def retry_after(self) -> float | None:
        """The server's ``Retry-After`` in seconds, or ``None``."""
        value = {k.lower(): v for k, v in self.headers.items()}.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ServerError(AIAAError):
    """The server failed (5xx other than 503)."""


class Timeout(AIAAError):
    """No reply within the timeout."""


class ConnectionFailed(AIAAError):
    """The server could not be reached or dropped the connection."""


class ProtocolError(AIAAError):
    """A reply that does not follow the AIAA protocol."""


def _class_for(status: int) -> type[AIAAError]:
    if status in (401, 403):
        return Unauthorized
    if status == 404:
        return NotFound
    if status == 440:
        return SessionExpired
    if status == 503:
        return Busy
    if 400 <= status < 500:
        return BadRequest
    if status >= 500:
        return ServerError
    return ProtocolError  # e.g. a redirect: AIAA clients never follow them


def error_from_reply(status: int, headers: Mapping[str, str], body: bytes) -> AIAAError:
    """The typed error for a non-2xx reply; reads the server's ``{"error", "detail"}`` when present."""
    error, detail = None, body.decode("utf-8", errors="replace").strip()[:2000]
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and "detail" in payload:
        error = payload.get("error") if isinstance(payload.get("error"), str) else None
        detail = payload["detail"] if isinstance(payload["detail"], str) else json.dumps(payload["detail"])
    return _class_for(status)(detail or f"HTTP {status} with an empty body", status, error, headers)
