"""Routes of our interactive API on AIAA sessions: ``/v1/interactive/{session_id}/...``.

``PUT /session/`` uploads the image; then each prompt, mask, undo or reset acts on the session's
one object, and the reply carries the box where the mask changed (or the whole mask).
"""

from __future__ import annotations

import time

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engines.data.io import Volume, read_volume, same_grid, write_volume
from server.deps import InteractionsDep, SettingsDep
from server.errors import BadRequest
from server.protocols.aiaa.wire import read_body, read_upload
from server.protocols.interactive import docs
from server.sessions.interaction import Change
from server.protocols.interactive.wire import (
    REPLIES,
    MaskBody,
    PromptBody,
    decode_mask,
    mask_json,
    parse_json,
    prompt_builder,
    reply,
)

router = APIRouter(prefix="/v1/interactive", tags=["interactive"])


def _full(reply_kind: str | None) -> bool:
    kind = (reply_kind or "box").lower()
    if kind not in REPLIES:
        raise BadRequest(f"reply={kind!r} is not supported: use one of {', '.join(REPLIES)}")
    return kind == "full"


def _done(change: Change, full: bool, start: float) -> JSONResponse:
    timings = dict(change.timings)
    encode_start = time.perf_counter()
    body = reply(change, full, timings)
    timings["encode"] = round((time.perf_counter() - encode_start) * 1000.0, 2)
    timings["total"] = round((time.perf_counter() - start) * 1000.0, 2)  # body["timings"] is this dict
    return JSONResponse(body)


@router.post("/{session_id}/prompt", **docs.PROMPT)
async def add_prompt(session_id: str, request: Request, interactions: InteractionsDep, settings: SettingsDep,
                     model: str, reply: str | None = None) -> JSONResponse:
    """Add a point, box, scribble, lasso or extreme points to the session's object and predict."""
    start = time.perf_counter()
    full = _full(reply)
    body = parse_json(await read_body(request, settings.max_upload_bytes), PromptBody)
    change = await interactions.prompt(session_id, model, prompt_builder(body))
    return _done(change, full, start)


@router.put("/{session_id}/mask", **docs.SET_MASK)
async def set_mask(session_id: str, request: Request, interactions: InteractionsDep, settings: SettingsDep,
                   model: str | None = None, reply: str | None = None) -> JSONResponse:
    """Start from an existing mask: an image on the session's grid (file field ``mask``) or JSON."""
    start = time.perf_counter()
    full = _full(reply)
    content_type = request.headers.get("content-type", "").lower()
    if "json" in content_type:
        body = parse_json(await read_body(request, settings.max_upload_bytes), MaskBody)

        def load(volume: Volume):
            return decode_mask(body, volume.shape, settings.max_voxels)
    else:
        upload = await read_upload(request, settings.max_upload_bytes)
        if upload.data is None:
            raise BadRequest("no mask: send it as the multipart file field 'mask' or as JSON {shape, encoding, mask}")

        def load(volume: Volume):
            mask = read_volume(upload.data, upload.filename, max_voxels=settings.max_voxels)
            if mask.shape != volume.shape or not same_grid(mask.geometry, volume.geometry):
                raise BadRequest(f"the mask ({list(mask.shape)}) is not on the session image's grid "
                                 f"({list(volume.shape)}, same spacing, origin and direction)")
            return mask.array > 0
    change = await interactions.set_mask(session_id, model, load)
    return _done(change, full, start)


@router.post("/{session_id}/undo", **docs.UNDO)
async def undo(session_id: str, interactions: InteractionsDep, reply: str | None = None) -> JSONResponse:
    """Go back one step, exactly; 409 when there is nothing to undo."""
    start = time.perf_counter()
    full = _full(reply)
    change = await interactions.undo(session_id)
    return _done(change, full, start)


@router.post("/{session_id}/reset", **docs.STATE)
async def reset(session_id: str, interactions: InteractionsDep) -> JSONResponse:
    """A new object: nothing of the last one is kept."""
    return JSONResponse(await interactions.reset(session_id))


@router.get("/{session_id}", **docs.STATE)
def describe(session_id: str, interactions: InteractionsDep) -> JSONResponse:
    """The session's object: its model, undoable steps and prompt count."""
    return JSONResponse(interactions.describe(interactions.session(session_id)))


@router.get("/{session_id}/mask", **docs.GET_MASK)
async def get_mask(session_id: str, interactions: InteractionsDep, format: str = "nii.gz") -> Response:
    """The whole current mask as an image on the session's grid (``format=nii.gz|nii|nrrd|mha``) or JSON."""
    fmt = format.lower().lstrip(".")
    model, mask = interactions.mask(session_id)
    if fmt == "json":
        return Response(await to_thread.run_sync(mask_json, model, mask), media_type="application/json")
    if fmt not in ("nii.gz", "nii", "nrrd", "mha"):
        raise BadRequest(f"format={format!r} is not supported: use nii.gz, nii, nrrd, mha or json")
    geometry = interactions.session(session_id).volume.geometry
    data = await to_thread.run_sync(lambda: write_volume(mask, geometry, "." + fmt))
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{model}.{fmt}"'})
