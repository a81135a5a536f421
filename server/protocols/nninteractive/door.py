"""The door's state and what every request of it needs: the bearer key, the model a base URL names,
the lease of ``X-Lease-Token`` (checked before the body, so a gone lease is 410 as with nnInteractive's
own server), the ``X-Meta`` header and the body within the upload limit.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from engines.errors import ModelNotFoundError
from engines.tasks.interactive import InteractiveEngine
from server.errors import BadRequest, Unauthorized
from server.protocols.aiaa.wire import read_body
from server.protocols.nninteractive.leases import DoorSettings, Lease, LeaseGone, LeaseRegistry
from server.sessions.interaction import Interactions
from server.sessions.store import SessionStore

__all__ = ["LEASE", "META", "Call", "CallDep", "Door", "LeaseDep", "body_of", "engine_of", "flag", "lease_of", "meta_of"]

META = "X-Meta"
LEASE = "X-Lease-Token"


@dataclass
class Door:
    """The door's settings and leases (``app.state.nninteractive``)."""

    settings: DoorSettings
    leases: LeaseRegistry

    @classmethod
    def create(cls, settings: DoorSettings, sessions: SessionStore, clock=None) -> Door:
        """A door whose dropped leases free their image's session (``clock``: tests move time themselves)."""
        def drop(lease: Lease) -> None:
            if lease.state.session is not None:
                sessions.delete(lease.state.session.id)

        kwargs = {} if clock is None else {"clock": clock}
        return cls(settings, LeaseRegistry(settings, on_drop=drop, **kwargs))


@dataclass
class Call:
    """What every authorised call needs: the door, the model it addresses and the server's state."""

    door: Door
    engine: InteractiveEngine
    request: Request

    @property
    def state(self) -> Any:
        return self.request.app.state

    @property
    def interactions(self) -> Interactions:
        return Interactions(self.state.sessions, self.state.pool, self.state.gates)


def _door(request: Request) -> Door:
    """The app's door, made on first use from ``AIAA_NNINTERACTIVE_*`` (tests put their own)."""
    state = request.app.state
    if getattr(state, "nninteractive", None) is None:
        state.nninteractive = Door.create(DoorSettings(), state.sessions)
    return state.nninteractive


def engine_of(request: Request) -> InteractiveEngine:
    """The model a base URL addresses: the named one, or the pool's first interactive model."""
    state = request.app.state
    model = request.path_params.get("model")
    if model is not None:
        return Interactions(state.sessions, state.pool, state.gates).engine(model)
    for engine in state.pool.engines():
        if isinstance(engine, InteractiveEngine):
            return engine
    raise ModelNotFoundError("no interactive model is loaded: /nninteractive serves the first model of type "
                             "'deepgrow' (GET /v1/models?type=deepgrow lists them)")


async def _call(request: Request) -> Call:
    """Authorise (bearer key when configured) and resolve the model; async so the door is made once, on the loop."""
    door = _door(request)
    key = door.settings.api_key.get_secret_value() if door.settings.api_key is not None else ""
    if key:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("missing bearer key (Authorization: Bearer <key>)")
        if not hmac.compare_digest(header[len("Bearer "):].encode(), key.encode()):
            raise Unauthorized("invalid bearer key")
    return Call(door, engine_of(request), request)


CallDep = Annotated[Call, Depends(_call)]


def lease_of(call: Call, *, active: bool = True) -> Lease:
    """The live lease of the request's token on the call's model (``active``: a real action)."""
    return call.door.leases.get(call.request.headers.get(LEASE), call.engine.name, active=active)


async def _active_lease(call: CallDep) -> Lease:
    """The lease of a real action (postpones the idle timeout); checked before the body, so a gone lease is 410.

    A lease whose image's session was evicted to make room for others is gone too: the viewer starts over.
    """
    lease = lease_of(call)
    session = lease.state.session
    if session is not None and call.state.sessions.get(session.id) is None:
        call.door.leases.release(lease.token)
        raise LeaseGone("this lease's image was evicted from memory to make room for other sessions; reconnect")
    return lease


LeaseDep = Annotated[Lease, Depends(_active_lease)]


def meta_of(request: Request) -> dict[str, Any]:
    """The ``X-Meta`` JSON object (empty when absent)."""
    raw = request.headers.get(META)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"bad {META} header: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{META} must be a JSON object")
    return value


def flag(values: dict[str, Any], key: str, default: bool | None = None) -> bool:
    """A true/false field of ``X-Meta``."""
    value = values.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{META} needs '{key}' as true or false")
    return value


async def body_of(call: Call) -> bytes:
    """The request body, refused (413) over ``AIAA_MAX_UPLOAD_BYTES``."""
    return await read_body(call.request, call.state.settings.max_upload_bytes)
