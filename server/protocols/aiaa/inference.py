"""``POST /v1/dextr3d``, ``/v1/segmentation``, ``/v1/deepgrow`` and ``/v1/inference`` (dispatch on model type).

Deepgrow on a session runs on the session's image normalised once (:mod:`server.sessions.interaction`);
its clicks are all resent with each call, so it leaves the session's interactive object alone.
"""

from __future__ import annotations

import time

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from engines.data.io import Volume, write_volume
from engines.data.snapshot import render_snapshot
from engines.errors import WrongModelTypeError
from engines.tasks.interactive import InteractiveEngine
from server.deps import GatesDep, InteractionsDep, PoolDep, SessionsDep, SettingsDep
from server.errors import BadRequest, PayloadTooLarge, SessionExpired
from server.protocols.aiaa.openapi import inference_docs
from server.protocols.aiaa.wire import OUTPUTS, decode_upload, multipart_reply, read_upload, result_format

router = APIRouter(tags=["inference"])

async def _infer(api: str, request: Request, pool: PoolDep, sessions: SessionsDep, settings: SettingsDep,
                 gates: GatesDep, interactions: InteractionsDep, model: str | None, session_id: str | None,
                 output: str | None) -> Response:
    if not model:
        raise BadRequest("query parameter 'model' is required (GET /v1/models lists them)")
    output = (output or "all").lower()
    if output not in OUTPUTS:
        raise BadRequest(f"output={output!r} is not supported: use one of {', '.join(OUTPUTS)}")
    engine = pool.get(model)
    expected = {"dextr3d": "annotation", "segmentation": "segmentation", "deepgrow": "deepgrow"}.get(api)
    if expected is not None and engine.type != expected:
        raise WrongModelTypeError(
            f"model '{model}' is a {engine.type} model; /v1/{api} needs a {expected} model "
            f"(or use /v1/inference, which dispatches on the model's type)"
        )
    gate = gates.for_engine(engine)
    async with gate.admit():  # refused before the body (up to 1 GiB) is read or decoded
        return await _admitted(request, engine, gate, sessions, settings, interactions, model, session_id, output)


async def _admitted(request: Request, engine, gate, sessions, settings, interactions, model: str,
                    session_id: str | None,
                    output: str) -> Response:
    upload = await read_upload(request, settings.upload_limit(model))
    timings: dict[str, float] = {}
    if session_id:
        session = sessions.get(session_id)
        if session is None:
            raise SessionExpired(f"session '{session_id}' not found or expired; create a new one with PUT /session/")
        volume, suffix = session.volume, session.suffix
        if volume.array.size > settings.voxel_limit(model):
            raise PayloadTooLarge(f"the session's image has {volume.array.size} voxels; model '{model}' accepts at "
                                  f"most {settings.voxel_limit(model)}")
    elif upload.has_image:
        start = time.perf_counter()
        volume, suffix, _ = await to_thread.run_sync(decode_upload, upload, settings.voxel_limit(model))
        timings["decode"] = round((time.perf_counter() - start) * 1000, 2)
    else:
        raise BadRequest("no image: upload the volume as a multipart file part or pass session_id")
    fmt = result_format(upload.params, suffix)

    if session_id and isinstance(engine, InteractiveEngine):
        result = await interactions.deepgrow(session, engine, upload.params, gate)
    else:
        result = await gate.call(engine.infer, volume, upload.params)
    timings.update(result.timings)
    request.app.state.metrics.observe_network(model, result.timings)
    params = {**result.params, "model": model, "timings": timings}
    if output == "json":
        return JSONResponse(params)
    if output == "png":  # a picture of the result: three views through the mask's centre
        png = await to_thread.run_sync(_picture, volume, result.mask, engine.labels)
        return Response(content=png, media_type="image/png")
    start = time.perf_counter()
    data = await to_thread.run_sync(_encode, result.mask, volume, fmt.suffix, fmt.dtype, fmt.compress)
    timings["encode"] = round((time.perf_counter() - start) * 1000, 2)
    filename = f"{model}{fmt.suffix}"
    if output == "image":
        return Response(content=data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return multipart_reply(params, data, filename)


def _encode(mask, volume: Volume, suffix: str, dtype: str, compress: bool | None) -> bytes:
    return write_volume(mask, volume.geometry, suffix, dtype=dtype, compress=compress)


def _picture(volume: Volume, mask, labels: list[str]) -> bytes:
    return render_snapshot([volume], Volume(mask, volume.geometry), labels=labels, titles=["result"])


def _route(api: str):
    async def endpoint(request: Request, pool: PoolDep, sessions: SessionsDep, settings: SettingsDep,
                       gates: GatesDep, interactions: InteractionsDep, model: str | None = None,
                       session_id: str | None = None, output: str | None = None) -> Response:
        return await _infer(api, request, pool, sessions, settings, gates, interactions, model, session_id, output)

    endpoint.__name__ = f"post_{api}"
    endpoint.__doc__ = {
        "dextr3d": "Mask of one object from six or more extreme points (`params={\"points\": [[i,j,k],...]}`).",
        "segmentation": "Automatic segmentation: label map 1..N in the model's label order.",
        "deepgrow": "Interactive (deepgrow) model from clicks: `params={\"foreground\": [[i,j,k],...], "
                    "\"background\": [...]}`; the reply's `crop` is the box that was predicted.",
        "inference": "Generic inference: dispatches on the model's type.",
    }[api]
    return endpoint


for _api in ("dextr3d", "segmentation", "deepgrow", "inference"):
    router.add_api_route(f"/v1/{_api}", _route(_api), methods=["POST"], **inference_docs(_api))
    router.add_api_route(f"/v1/{_api}/", _route(_api), methods=["POST"], include_in_schema=False)
