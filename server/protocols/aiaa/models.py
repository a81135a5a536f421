"""``GET /v1/models``: the models the server serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import PoolDep

router = APIRouter(tags=["models"])


@router.get("/v1/models")
@router.get("/v1/models/", include_in_schema=False)
def list_models(pool: PoolDep, label: str | None = None, type: str | None = None,
                model: str | None = None) -> Any:
    """All ready models (``?label=`` case-insensitive, ``?type=``), or one object with ``?model=NAME``."""
    if model is not None:
        return JSONResponse(pool.get(model).info())
    infos = [engine.info() for engine in pool.engines()]
    if type:
        infos = [i for i in infos if i["type"].lower() == type.lower()]
    if label:
        wanted = label.lower()
        infos = [i for i in infos if any(wanted == lab.lower() or wanted in lab.lower() for lab in i["labels"])]
    return JSONResponse(infos)
