"""Sessions: ``PUT /session/`` uploads once; ``GET``/``DELETE /session/{id}``; ``GET /session/{id}/image``."""

from __future__ import annotations

import re

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engines.data.io import write_volume
from server.deps import SessionsDep, SettingsDep
from server.errors import ApiError, BadRequest
from server.protocols.aiaa.openapi import SESSION_DOCS, SESSION_PUT_DOCS, ErrorBody
from server.protocols.aiaa.wire import decode_upload, read_upload

router = APIRouter(tags=["session"])


class SessionNotFound(ApiError):
    """Unknown or expired session on GET/DELETE."""

    status = 404


@router.put("/session/", **SESSION_PUT_DOCS)
@router.put("/session", include_in_schema=False)
async def create_session(request: Request, sessions: SessionsDep, settings: SettingsDep,
                         expiry: int | None = None) -> JSONResponse:
    """Upload a volume once; later inference calls pass ``session_id`` instead of a file."""
    upload = await read_upload(request, settings.max_upload_bytes)
    if not upload.has_image:
        raise BadRequest("no image: send the volume as a multipart file part (e.g. -F image=@volume.nii.gz)")
    volume, suffix, name = await to_thread.run_sync(decode_upload, upload, settings.max_voxels)
    session = sessions.create(volume, suffix, name, expiry)
    return JSONResponse(session.info())


@router.get("/session/{session_id}", **SESSION_DOCS)
def get_session(session_id: str, sessions: SessionsDep, update_ts: bool = False) -> JSONResponse:
    """Session info while it lives; 404 once unknown or expired."""
    session = sessions.get(session_id, touch=update_ts)
    if session is None:
        raise SessionNotFound(f"session '{session_id}' not found or expired")
    return JSONResponse(session.info())


@router.get("/session/{session_id}/image", responses={
    200: {"description": "The volume as gzipped NIfTI", "content": {"application/gzip": {}}},
    404: {"model": ErrorBody, "description": "Unknown or expired session"}})
async def get_session_image(session_id: str, sessions: SessionsDep) -> Response:
    """The session's decoded volume as NIfTI (``.nii.gz``, its own voxel type and geometry).

    What the browser viewer displays: the voxel indices of this file are the ones prompts use,
    whatever format was uploaded (a DICOM series included). The session id is what grants it.
    """
    session = sessions.get(session_id)
    if session is None:
        raise SessionNotFound(f"session '{session_id}' not found or expired")
    volume = session.volume
    data = await to_thread.run_sync(
        lambda: write_volume(volume.array, volume.geometry, ".nii.gz", dtype=volume.array.dtype, compress=True))
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", session.name.split(".")[0])[:64] or "image"
    return Response(content=data, media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{stem}.nii.gz"', "Cache-Control": "no-store"})


@router.delete("/session/{session_id}", **SESSION_DOCS)
def delete_session(session_id: str, sessions: SessionsDep) -> JSONResponse:
    """Close a session; 404 if unknown."""
    if not sessions.delete(session_id):
        raise SessionNotFound(f"session '{session_id}' not found or expired")
    return JSONResponse({"session_id": session_id, "deleted": True})
