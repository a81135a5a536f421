"""HTTP errors of the server and the one place engine errors become HTTP replies.

    ApiError                     carries its own status
    ├── BadRequest               400
    ├── Unauthorized             401 (admin token missing or wrong)
    ├── Forbidden                403 (admin API disabled, path outside the data roots)
    ├── NotFound                 404
    ├── Conflict                 409 (the job is not in a state that allows it)
    ├── PayloadTooLarge          413
    ├── SessionExpired           440 (AIAA clients drop their session and retry)
    ├── InsufficientStorage      507 (the disk is full: what was not saved is named)
    └── Busy                     503 with Retry-After

Engine errors map by class in :data:`STATUS_OF` (those worth a retry carry ``Retry-After``);
unknown routes and methods answer in the same shape. Every reply is JSON
``{"error": <kind>, "detail": <message>}``.
"""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines import errors as E

__all__ = ["ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "PayloadTooLarge",
           "SessionExpired", "Busy", "InsufficientStorage", "install_handlers", "database_name"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status of its own."""

    status = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(ApiError):
    """The request is malformed."""

    status = 400


class Unauthorized(ApiError):
    """No or a wrong ``Authorization: Bearer`` token on an admin route."""

    status = 401


class Forbidden(ApiError):
    """Not allowed at all: the admin API is disabled, or a path lies outside the data roots."""

    status = 403


class NotFound(ApiError):
    """No such job or dataset."""

    status = 404


class Conflict(ApiError):
    """The resource's state does not allow the request (e.g. resuming a running job)."""

    status = 409


class PayloadTooLarge(ApiError):
    """The request body exceeds the configured limit."""

    status = 413


class SessionExpired(ApiError):
    """Unknown or expired ``session_id`` on an inference call (AIAA: HTTP 440)."""

    status = 440


class Busy(ApiError):
    """The model's queue is full; retry later."""

    status = 503


class InsufficientStorage(ApiError):
    """The server's disk is full: nothing of the request was kept."""

    status = 507


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def database_name(url: str) -> str:
    """The job database as an administrator knows it: the SQLite file, or the URL without its password."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# Most specific first: the first matching class wins.
STATUS_OF: list[tuple[type[E.EngineError], int]] = [
    (E.InputTooLargeError, 413),
    (E.InvalidInputError, 400),
    (E.ModelNotFoundError, 404),
    (E.WrongModelTypeError, 400),
    (E.ModelLoadError, 409),
    (E.VersionExistsError, 409),
    (E.ModelUnavailableError, 503),
    (E.BackendUnavailableError, 503),
    (E.ResourceExhaustedError, 503),
    (E.EngineError, 500),
]
# Engine errors that are worth a retry, and after how many seconds (``Retry-After``).
RETRY_AFTER_S: dict[type[E.EngineError], int] = {E.ResourceExhaustedError: 2}


def _reply(request: Request, status: int, kind: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    if status < 500:  # what a client sent wrong, for the administrator (GET /logs)
        log.warning("%s %s refused with %d %s: %s", request.method, request.url.path, status, kind, detail)
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Register the translation of every error tree onto ``app``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _reply(request, exc.status, type(exc).__name__, exc.detail, exc.headers)

    @app.exception_handler(E.EngineError)
    async def engine_error(request: Request, exc: E.EngineError) -> JSONResponse:
        status = next(code for cls, code in STATUS_OF if isinstance(exc, cls))
        retry = next((str(s) for cls, s in RETRY_AFTER_S.items() if isinstance(exc, cls)), None)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _reply(request, status, type(exc).__name__, str(exc), {"Retry-After": retry} if retry else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes (404) and methods (405) answer in the documented shape too.
        # A body FastAPI cannot parse (deep nesting, huge numbers) is a 400 like ours.
        kind = {400: "BadRequest", 404: "RouteNotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}; /docs lists the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; /docs lists the API"
        return _reply(request, exc.status_code, kind, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return _reply(request, 422, "ValidationError", problems)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        name = database_name(request.app.state.settings.job_db_url())
        log.error("%s %s: job database %s: %s", request.method, request.url.path, name, exc.orig)
        return _reply(request, 503, "DatabaseUnavailable",
                      f"the job database {name} cannot be used ({exc.orig}); the administrator must repair or "
                      f"move it", {"Retry-After": "10"})

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno in _DISK_FULL:
            log.error("%s %s: disk full: %s", request.method, request.url.path, exc)
            return _reply(request, 507, "InsufficientStorage",
                          "the server's disk is full: nothing of this request was saved; free space and retry")
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return _reply(request, 500, "InternalError", f"unexpected server error: {type(exc).__name__}")
