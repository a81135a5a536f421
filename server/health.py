"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import PoolDep, SessionsDep
from server.logbuffer import redact_paths

router = APIRouter(tags=["health"])


@router.get("/health")
def health(pool: PoolDep, sessions: SessionsDep) -> JSONResponse:
    """Overall status with every configured model's state (unavailable ones with the reason)."""
    records = pool.records()
    ready = any(r.status == "ready" for r in records)
    status = "ok" if ready and all(r.status == "ready" for r in records) else ("degraded" if ready else "unavailable")
    return JSONResponse({
        "status": status,
        "live": True,
        "ready": ready,
        "models": {r.name: _public(r.summary()) for r in records},
        "sessions": sessions.stats(),
    })


def _public(summary: dict) -> dict:
    """A model's summary without file-system paths (``/health`` is public; the log has the full reason)."""
    if "error" in summary:
        summary = {**summary, "error": redact_paths(summary["error"])}
    return summary


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The process answers (on the event loop itself: no worker thread needed, so it answers under load)."""
    return {"live": True}


@router.get("/health/ready")
def ready(pool: PoolDep) -> JSONResponse:
    """200 once at least one model serves, else 503."""
    is_ready = any(r.status == "ready" for r in pool.records())
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)
