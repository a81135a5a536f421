"""The routes of nnInteractive's server protocol, at ``/nninteractive`` and ``/nninteractive/{model}``.

The first base URL serves the first interactive (``deepgrow``) model of the pool, the second a named
one. Routes, headers, bodies and replies are those ``nninteractive-client`` 2.6.0 uses; decoding and
image preparation run in worker threads, each network step through the model's gate (shared with the
AIAA routes), and a lease's requests one at a time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from engines.data.io import Geometry, Volume
from engines.tasks.interactive import box_prompt, point_prompt
from engines.transforms.prompts import CHANNELS
from server.errors import BadRequest
from server.protocols.nninteractive.door import (
    LEASE,
    META,
    Call,
    CallDep,
    LeaseDep,
    body_of,
    engine_of,
    flag,
    lease_of,
    meta_of,
)
from server.protocols.nninteractive.leases import Lease
from server.protocols.nninteractive.state import Reply, clip_box, mask_prompt
from server.protocols.nninteractive.wire import pack, unpack

__all__ = ["router"]

PREFIXES = ("/nninteractive", "/nninteractive/{model}")
PROTOCOL_VERSION = "2.6.0"  # the nninteractive-client release this door was written and tested against
DTYPE_KINDS = "biuf"  # target buffers: bool, integers or floats

router = APIRouter(tags=["nninteractive"])


def _step(call: Call, lease: Lease):
    """How to run through the model's gate, and the network step of ``lease``'s image (room made for one more mask)."""
    session, engine = lease.state.session, call.engine
    if session is not None:
        call.state.sessions.make_room(session, (int(np.prod(session.volume.shape)) + 7) // 8)

    def step(prompts, mask):
        return engine.step(session.prepared, prompts, mask)

    return call.state.gates.for_engine(engine).run, step


async def _prediction(reply: Reply) -> Response:
    """nnInteractive's prediction reply: ``X-Meta`` with ``ran_prediction`` and the box, the box's voxels as body."""
    meta: dict[str, Any] = {"ran_prediction": reply.ran, "bbox": None}
    body = b""
    if reply.box is not None and reply.region is not None:
        meta.update(bbox=[[a, b] for a, b in zip(*reply.box)], dtype=str(reply.region.dtype),
                    shape=list(reply.region.shape))
        body = await to_thread.run_sync(pack, reply.region)
    return Response(content=body, media_type="application/octet-stream",
                    headers={META: json.dumps(meta, separators=(",", ":"))})


def _route(path: str, method: str, **kwargs: Any):
    def register(endpoint):
        # The named-model twin is left out of the OpenAPI document: it is the same route under /{model}.
        for prefix in PREFIXES:
            router.add_api_route(prefix + path, endpoint, methods=[method], include_in_schema="{" not in prefix,
                                 **kwargs)
        return endpoint
    return register


# ----------------------------------------------------------------- lifecycle


@_route("/healthz", "GET")
async def healthz(request: Request) -> dict[str, bool]:
    """Liveness of the door and of its model (no key needed)."""
    engine_of(request)
    return {"ok": True}


@_route("/capabilities", "GET")
async def capabilities(call: CallDep) -> dict[str, Any]:
    """What the model takes, in the terms the client mirrors onto its session object."""
    roi = call.engine.roi
    # Our encoding (engines.transforms.prompts.CHANNELS) without the image channel: mask, positive, negative, region.
    mask, positive, negative, region = (CHANNELS.index(c) - 1 for c in ("mask", "positive", "negative", "region"))
    return {
        "supported_interactions": {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": True},
        "channel_mapping": {"prev_seg": mask, "points": [positive, negative], "scribble": [positive, negative],
                            "bbox2d": [region, negative], "bbox3d": [region, negative], "lasso": [region, negative]},
        "num_interaction_channels": len(CHANNELS) - 1,
        "supports_initial_label": True,
        "supports_zero_shot_label_refinement": True,
        "preferred_scribble_thickness": [2, 2, 2],
        "interaction_decay": None,
        "patch_size": list(roi) if roi else None,
        "do_autozoom": True,
        "inference_session_version": PROTOCOL_VERSION,
        "license": "!!MISSING!!",  # nnInteractive's marker for "the server does not know the weights' licence"
        "supports_undo": True,
        "model": call.engine.name,
    }


@_route("/claim", "POST")
async def claim(call: CallDep) -> dict[str, Any]:
    """A new lease (503 at capacity)."""
    lease = call.door.leases.claim(call.engine.name)
    s = call.door.settings
    return {"lease_token": lease.token, "idle_timeout_seconds": s.idle_timeout_s,
            "liveness_timeout_seconds": s.liveness_timeout_s, "max_sessions": s.max_leases}


@_route("/release", "POST")
async def release(call: CallDep) -> dict[str, bool]:
    """Drop the lease; succeeds even when it is already gone."""
    call.door.leases.release(call.request.headers.get(LEASE))
    return {"released": True}


@_route("/heartbeat", "POST")
async def heartbeat(call: CallDep) -> dict[str, float]:
    """Proves the viewer lives (does not postpone the idle timeout)."""
    lease = lease_of(call, active=False)
    return {"remaining_seconds": call.door.leases.remaining_s(lease)}


@_route("/lease_status", "GET")
async def lease_status(call: CallDep) -> dict[str, float]:
    """Seconds left before the idle timeout, touching neither clock."""
    lease = call.door.leases.peek(call.request.headers.get(LEASE), call.engine.name)
    return {"remaining_seconds": call.door.leases.remaining_s(lease),
            "idle_timeout_seconds": call.door.settings.idle_timeout_s}


# ----------------------------------------------------------------- image and buffer


def _spacing(properties: Any) -> tuple[float, float, float]:
    spacing = properties.get("spacing") if isinstance(properties, dict) else None
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise BadRequest(f"image_properties.spacing must be three numbers, got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise BadRequest(f"image_properties.spacing must be three positive numbers, got {spacing!r}")
    return values


@_route("/set_image", "POST")
async def set_image(call: CallDep, lease: LeaseDep) -> dict[str, list[int]]:
    """The image ``[1, X, Y, Z]`` (blosc2); drops everything of the lease's last image."""
    values = meta_of(call.request)
    spacing = _spacing(values.get("image_properties") or {})
    data = await body_of(call)
    image = await to_thread.run_sync(lambda: unpack(data, max_elements=call.state.settings.max_voxels, ndim=4))
    if image.shape[0] != 1:
        raise BadRequest(f"the image must have one channel ([1, X, Y, Z]), got shape {list(image.shape)}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    volume = Volume(image[0], Geometry(spacing, (0.0, 0.0, 0.0), Geometry.identity().direction))
    sessions = call.state.sessions
    async with lease.lock:
        session = sessions.create(volume, ".nninteractive", f"nninteractive lease {lease.token[:8]}")
        try:
            await call.interactions.prepared(session, call.engine, {})
        except BaseException:
            sessions.delete(session.id)
            raise
        previous = lease.state.session
        lease.state.set_image(session, call.engine.name)
        if previous is not None:
            sessions.delete(previous.id)
    return {"original_image_shape": list(image.shape)}


class TargetBuffer(BaseModel):
    """``/set_target_buffer``: the client's mask buffer."""

    shape: list[int] = Field(min_length=3, max_length=3)
    dtype: str


@_route("/set_target_buffer", "POST")
async def set_target_buffer(call: CallDep, lease: LeaseDep, body: TargetBuffer) -> dict:
    """The client's mask buffer (its spatial shape must be the image's)."""
    try:
        dtype = np.dtype(body.dtype)
    except TypeError:
        raise BadRequest(f"invalid dtype {body.dtype!r}") from None
    if dtype.kind not in DTYPE_KINDS:
        raise BadRequest(f"unsupported target buffer dtype {dtype}: use bool, an integer or a float type")
    async with lease.lock:
        lease.state.set_target_buffer(body.shape, dtype)
    return {}


class Autozoom(BaseModel):
    """``/set_do_autozoom``."""

    do_autozoom: bool


@_route("/set_do_autozoom", "POST")
async def set_do_autozoom(call: CallDep, lease: LeaseDep, body: Autozoom) -> dict:
    """Recorded and reported; the zoom-out itself follows the model's ``interactive.max_zooms``."""
    async with lease.lock:
        lease.state.do_autozoom = body.do_autozoom
    return {}


@_route("/reset_interactions", "POST")
async def reset_interactions(call: CallDep, lease: LeaseDep) -> dict:
    """A new object: prompts, mask and undo stack go (the client zeroes its own buffer)."""
    async with lease.lock:
        lease.state.reset()
    return {}


# ----------------------------------------------------------------- interactions


@_route("/undo", "POST")
async def undo(call: CallDep, lease: LeaseDep) -> Response:
    """Take back the last interaction; ``ran_prediction`` false when there was nothing to undo."""
    async with lease.lock:
        reply = await to_thread.run_sync(lease.state.undo)
    return await _prediction(reply)


class Predict(BaseModel):
    """``/predict`` (``force_full_refine`` is accepted; every prediction here looks at the whole crop)."""

    force_full_refine: bool = False


@_route("/predict", "POST")
async def predict(call: CallDep, lease: LeaseDep, body: Predict) -> Response:
    """Predict from the prompts queued with ``run_prediction=false``."""
    async with lease.lock:
        run, step = _step(call, lease)
        reply = await run(lease.state.predict, step)
    return await _prediction(reply)


class Interaction(BaseModel):
    """Common fields of the JSON interactions."""

    include_interaction: bool
    run_prediction: bool = True
    override_capability_checks: bool = False


class Point(Interaction):
    """``/add_point_interaction``."""

    coordinates: list[float] = Field(min_length=3, max_length=3)


class Bbox(Interaction):
    """``/add_bbox_interaction``: ``[[x0, x1], [y0, y1], [z0, z1]]``, upper bounds exclusive."""

    bbox_coords: list[list[float]] = Field(min_length=3, max_length=3)


async def _add(call: Call, lease: Lease, make_prompt, run_prediction: bool) -> Response:
    async with lease.lock:
        state = lease.state
        state.require_image()
        prompt = await to_thread.run_sync(make_prompt, state.shape)
        run, step = _step(call, lease)
        runner = run if run_prediction else to_thread.run_sync
        reply = await runner(state.add, prompt, run_prediction, step)
    return await _prediction(reply)


@_route("/add_point_interaction", "POST")
async def add_point_interaction(call: CallDep, lease: LeaseDep, body: Point) -> Response:
    """A positive or negative click."""
    return await _add(call, lease, lambda shape: point_prompt(body.coordinates, body.include_interaction, shape),
                      body.run_prediction)


@_route("/add_bbox_interaction", "POST")
async def add_bbox_interaction(call: CallDep, lease: LeaseDep, body: Bbox) -> Response:
    """A 2D (one axis of size 1) or 3D box."""
    def build(shape):
        return box_prompt(*clip_box(body.bbox_coords, shape), body.include_interaction, shape)

    return await _add(call, lease, build, body.run_prediction)


def _interaction_bbox(meta: dict[str, Any], shape: tuple[int, int, int]) -> tuple[list[int], list[int]]:
    """Where a scribble or lasso body lies: ``interaction_bbox`` inside the volume, or the whole volume."""
    bbox = meta.get("interaction_bbox")
    if bbox is None:
        return [0, 0, 0], list(shape)
    try:
        lo, hi = [int(a) for a, _ in bbox], [int(b) for _, b in bbox]
    except (TypeError, ValueError):
        raise BadRequest(f"interaction_bbox must be [[x0, x1], [y0, y1], [z0, z1]], got {bbox!r}") from None
    if len(lo) != 3 or any(a < 0 or b > s or b <= a for a, b, s in zip(lo, hi, shape)):
        raise BadRequest(f"interaction_bbox {bbox} is empty or outside the volume {list(shape)}")
    return lo, hi


async def _add_mask(call: Call, lease: Lease, kind: str) -> Response:
    values = meta_of(call.request)
    positive = flag(values, "include_interaction")
    run_prediction = flag(values, "run_prediction", True)
    data = await body_of(call)
    lease.state.require_image()
    shape = lease.state.shape
    lo, hi = _interaction_bbox(values, shape)
    size = [b - a for a, b in zip(lo, hi)]
    mask = await to_thread.run_sync(lambda: unpack(data, max_elements=int(np.prod(size)), shape=size))
    return await _add(call, lease, lambda shape: mask_prompt(kind, mask, positive, shape, lo), run_prediction)


@_route("/add_scribble_interaction", "POST")
async def add_scribble_interaction(call: CallDep, lease: LeaseDep) -> Response:
    """A positive or negative scribble: a 0/1 array over ``interaction_bbox`` (or the volume)."""
    return await _add_mask(call, lease, "scribble")


@_route("/add_lasso_interaction", "POST")
async def add_lasso_interaction(call: CallDep, lease: LeaseDep) -> Response:
    """A lasso, filled by the viewer: a 0/1 array over ``interaction_bbox`` (or the volume)."""
    return await _add_mask(call, lease, "lasso")


@_route("/add_initial_seg_interaction", "POST")
async def add_initial_seg_interaction(call: CallDep, lease: LeaseDep) -> Response:
    """Start from a mask of the volume's shape; ``run_prediction`` (default false) lets the model refine it."""
    values = meta_of(call.request)
    run_prediction = flag(values, "run_prediction", False)
    data = await body_of(call)
    lease.state.require_image()
    shape = lease.state.shape
    seg = await to_thread.run_sync(lambda: unpack(data, max_elements=int(np.prod(shape)), shape=shape))
    async with lease.lock:
        run, step = _step(call, lease)
        runner = run if run_prediction else to_thread.run_sync
        reply = await runner(lease.state.initial_seg, seg, run_prediction, step)
    return await _prediction(reply)
