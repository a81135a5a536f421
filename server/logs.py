"""``GET /logs``: the server's recent log lines as plain text, for the administrator.

An admin route (``Authorization: Bearer <admin token>``): the lines name files, models and
clients. Session ids and query values are redacted from every line anyway (server/logbuffer.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from server.admin.auth import require_admin

router = APIRouter(tags=["logs"], dependencies=[Depends(require_admin)])


@router.get("/logs", response_class=PlainTextResponse)
@router.get("/logs/", response_class=PlainTextResponse, include_in_schema=False)
def logs(request: Request, lines: int = Query(100, ge=1, le=10_000)) -> PlainTextResponse:
    """The last ``lines`` log lines (default 100), oldest first."""
    text = "\n".join(request.app.state.logs.tail(lines))
    return PlainTextResponse(text + "\n" if text else "")
