"""The admin token check of every ``/admin/`` route (bearer token, constant-time comparison)."""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import Forbidden, Unauthorized

__all__ = ["require_admin"]


def require_admin(request: Request) -> None:
    """FastAPI dependency: refuse unless ``Authorization: Bearer <admin token>`` is sent.

    Raises:
        Forbidden: no admin token is configured (the admin API is disabled).
        Unauthorized: the header is missing or the token is wrong.
    """
    expected = request.app.state.settings.admin_secret()
    if expected is None:
        raise Forbidden("the admin API is disabled: set AIAA_ADMIN_TOKEN or start the server with "
                        "'aiaa serve --admin-token-file FILE' to enable it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this admin route needs the header 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("wrong admin token", headers={"WWW-Authenticate": "Bearer"})
