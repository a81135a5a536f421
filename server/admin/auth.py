"""The admin token check of every ``/admin/`` route (bearer token, constant-time comparison).

Failed attempts are logged (client address, never the token) and limited per client: past
``admin_max_failures`` within ``admin_failure_window_s`` every attempt from that client gets 429
until the window has moved on, so guessing is slow and the right token works again afterwards.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.errors import ApiError, Forbidden, Unauthorized

__all__ = ["LoginLimiter", "TooManyAttempts", "require_admin"]

log = logging.getLogger(__name__)


class TooManyAttempts(ApiError):
    """Too many failed admin logins from one client; retry after ``Retry-After`` seconds."""

    status = 429


class LoginLimiter:
    """Failed login times per client within a sliding window."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """Raise :class:`TooManyAttempts` while ``client`` is over the limit."""
        now = self.clock()
        with self._lock:
            times = self._recent(client, now)
            if len(times) >= self.max_failures:
                wait = max(1, math.ceil(times[0] + self.window_s - now))
                raise TooManyAttempts(f"too many failed admin logins; retry in {wait} s",
                                      headers={"Retry-After": str(wait)})

    def failed(self, client: str) -> int:
        """Record a failure; returns the client's failures within the window."""
        now = self.clock()
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            if len(self._failures) > 10_000:  # forget clients whose failures all left the window
                for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
                    del self._failures[key]
            return len(times)


def _limiter(request: Request) -> LoginLimiter:
    state = request.app.state
    if getattr(state, "login_limiter", None) is None:
        settings = state.settings
        state.login_limiter = LoginLimiter(settings.admin_max_failures, settings.admin_failure_window_s)
    return state.login_limiter


# Declares the bearer scheme in the OpenAPI document (so /docs can authorise the admin routes);
# the checks and their error replies stay below.
BEARER = HTTPBearer(auto_error=False, scheme_name="adminToken",
                    description="the admin token (AIAA_ADMIN_TOKEN or the file of 'aiaa serve --admin-token-file')")


def require_admin(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> None:
    """FastAPI dependency: refuse unless ``Authorization: Bearer <admin token>`` is sent.

    Raises:
        Forbidden: no admin token is configured (the admin API is disabled) or its file is unusable.
        TooManyAttempts: this client failed too often recently.
        Unauthorized: the header is missing or the token is wrong.
    """
    try:
        expected = request.app.state.settings.admin_secret()
    except (OSError, ValueError) as exc:
        log.error("admin API disabled: %s", exc)
        raise Forbidden("the admin API is disabled: the admin token file is unusable (the server log says why)") \
            from None
    if expected is None:
        raise Forbidden("the admin API is disabled: set AIAA_ADMIN_TOKEN or start the server with "
                        "'aiaa serve --admin-token-file FILE' to enable it")
    client = request.client.host if request.client else "unknown"
    limiter = _limiter(request)
    limiter.check(client)
    if credentials is None:  # no header, or not a bearer token
        raise Unauthorized("this admin route needs the header 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.strip().encode(), expected.encode()):
        count = limiter.failed(client)
        log.warning("failed admin login from %s on %s %s (%d within %.0f s)", client, request.method,
                    request.url.path, count, limiter.window_s)
        raise Unauthorized("wrong admin token", headers={"WWW-Authenticate": "Bearer"})
