"""``GET /logs``: the server's recent log lines as plain text (OHIF shows them)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

router = APIRouter(tags=["logs"])


@router.get("/logs", response_class=PlainTextResponse)
@router.get("/logs/", response_class=PlainTextResponse, include_in_schema=False)
def logs(request: Request, lines: int = Query(100, ge=1, le=10_000)) -> PlainTextResponse:
    """The last ``lines`` log lines (default 100), oldest first."""
    text = "\n".join(request.app.state.logs.tail(lines))
    return PlainTextResponse(text + "\n" if text else "")
