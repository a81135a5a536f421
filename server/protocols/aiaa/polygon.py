"""``POST /v1/mask2polygon`` and ``POST /v1/fixpolygon``: the polygon editing of AIAA's viewer plugins."""

from __future__ import annotations

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engines.data.io import Volume, read_volume, write_volume
from server.deps import SettingsDep
from server.errors import BadRequest
from server.protocols.aiaa.openapi import POLYGON_DOCS
from server.protocols.aiaa.polygons import fill_polygons, mask_to_polygons, move_vertex, parse_edit, tolerance_for
from server.protocols.aiaa.wire import Upload, multipart_reply, read_upload

router = APIRouter(tags=["polygon"])


async def _image(request: Request, settings) -> tuple[Upload, Volume]:
    upload = await read_upload(request, settings.max_upload_bytes)
    if upload.data is None:
        raise BadRequest("no image: send the mask (3D) or the slice (2D PNG) as a multipart file part")
    volume = await to_thread.run_sync(lambda: read_volume(upload.data, upload.filename, max_voxels=settings.max_voxels))
    return upload, volume


@router.post("/v1/mask2polygon", **POLYGON_DOCS["mask2polygon"])
@router.post("/v1/mask2polygon/", include_in_schema=False)
async def mask2polygon(request: Request, settings: SettingsDep) -> JSONResponse:
    """Polygons of a 3D mask, per slice along k, as ``[j, i]`` points; ``params={"more_points": N}``."""
    upload, volume = await _image(request, settings)
    tolerance = tolerance_for(upload.params.get("more_points"))
    return JSONResponse(await to_thread.run_sync(mask_to_polygons, volume.array, tolerance))


@router.post("/v1/fixpolygon", **POLYGON_DOCS["fixpolygon"])
@router.post("/v1/fixpolygon/", include_in_schema=False)
async def fixpolygon(request: Request, settings: SettingsDep) -> Response:
    """Drag one vertex (and its neighbours); the reply's ``poly`` and the refilled mask."""
    upload, volume = await _image(request, settings)
    edit = parse_edit(upload.params)
    ndim = volume.array.ndim
    if ndim != edit.dimension:
        raise BadRequest(f"'dimension' is {edit.dimension} but the image is {ndim}D {list(volume.shape)}")
    poly = move_vertex(edit)

    def encode() -> tuple[bytes, str]:
        if ndim == 2:
            mask = fill_polygons(poly, volume.shape, swap=False)
            return write_volume(mask, volume.geometry, ".png"), "fixpolygon.png"
        mask = np.zeros(volume.shape, bool)
        for k, polygons in enumerate(poly[: volume.shape[2]]):
            mask[:, :, k] = fill_polygons(polygons, volume.shape[:2], swap=True)
        return write_volume(mask, volume.geometry, ".nii.gz"), "fixpolygon.nii.gz"

    data, filename = await to_thread.run_sync(encode)
    return multipart_reply({"poly": poly}, data, filename)
