"""MONAI bundles (admin): ``PUT /admin/bundle/{name}`` serves an uploaded zipped bundle.

Multipart parts: ``data`` (the zip) and optional ``overrides`` (a JSON object of literal values,
``{"inferer#roi_size": [96, 96, 96]}``). The zip is unpacked safely, stored as a new version of
the model in the model store (a new model when there is none), loaded and warmed beside any
serving version, then swapped in; it serves after a restart, and earlier versions stay
available for a rollback (``PUT /admin/models/{name}/serving``). A bundle config is code: this
route is for administrators only (like every ``/admin`` route), and no request field is ever
evaluated.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from engines.config.model import PoolEntry, describe_validation_error
from engines.errors import EngineError, InvalidInputError
from engines.serving.versions import check_model_name
from engines.tasks.bundle_archive import unpack_bundle
from server.admin.auth import require_admin
from server.deps import PoolDep, SettingsDep
from server.errors import BadRequest, Conflict
from server.protocols.aiaa.wire import read_form

router = APIRouter(tags=["admin: bundles"], dependencies=[Depends(require_admin)])


@router.put("/admin/bundle/{name}")
async def put_bundle(name: str, request: Request, settings: SettingsDep, pool: PoolDep) -> JSONResponse:
    """Serve a zipped MONAI bundle (``data``) as model ``name``, with optional literal ``overrides``."""
    try:
        name = check_model_name(name)
    except EngineError as exc:
        raise BadRequest(str(exc)) from None
    current = pool.record(name)
    if current is not None and (current.entry is None or current.entry.bundle is None):
        raise Conflict(f"model '{name}' is not a bundle; choose another name or delete it first")
    form = await read_form(request, settings.max_upload_bytes, max_files=1)
    data = form.get("data")
    if not isinstance(data, UploadFile):
        raise BadRequest("send multipart part 'data' (the zipped bundle) and optionally 'overrides' (JSON)")
    raw = form.get("overrides") or "{}"
    raw = await raw.read() if isinstance(raw, UploadFile) else raw
    try:
        overrides = json.loads(raw)
        # Validated (literal values only) before anything is written.
        PoolEntry.model_validate({"name": name, "bundle": "unchecked", "overrides": overrides})
    except json.JSONDecodeError as exc:
        raise BadRequest(f"'overrides' is not JSON: {exc}") from None
    except ValidationError as exc:
        raise BadRequest(describe_validation_error("overrides", exc)) from None

    serving = request.app.state.serving
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.zip"
        archive.write_bytes(await data.read())
        try:
            root = await to_thread.run_sync(lambda: unpack_bundle(archive, Path(tmp) / "unpacked",
                                                                  max_bytes=settings.max_upload_bytes * 20))
            result = await to_thread.run_sync(serving.add_bundle, name, root, overrides, {"kind": "upload"})
        except InvalidInputError as exc:
            raise BadRequest(str(exc)) from None
        except EngineError as exc:
            raise BadRequest(f"the bundle does not load: {exc}") from None
    engine = pool.get(name)
    return JSONResponse({"model": name, "version": result["version"], "labels": engine.labels,
                         "bundle": str(serving.store.bundle_dir(name, result["version"]))})
