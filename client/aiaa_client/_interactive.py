"""Interactive annotation of one object on a session: prompts, initial mask, undo, reset.

The server keeps the object's prompts, mask and undo stack and replies with the box where the
mask changed (``gzip-base64-u8-fortran``); :class:`InteractiveState` pastes each box into the
client's copy, so :attr:`Interactive.mask` is always the whole mask without sending it.
Operations are generators (:mod:`aiaa_client._operations`), so the same object serves the
sync and the async client: with an :class:`~aiaa_client.AsyncClient` every method is awaited.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable
from typing import Any

import numpy as np

from aiaa_client import _operations as ops
from aiaa_client._errors import ProtocolError
from aiaa_client._protocol import Call, json_call, parse_json

__all__ = ["ENCODING", "Interactive", "InteractiveState", "decode_mask", "encode_mask"]

ENCODING = "gzip-base64-u8-fortran"


def encode_mask(mask: np.ndarray) -> str:
    """A boolean array as ``gzip-base64-u8-fortran`` text."""
    raw = np.asarray(mask, dtype=bool).astype(np.uint8).tobytes(order="F")
    return base64.b64encode(gzip.compress(raw, compresslevel=1, mtime=0)).decode("ascii")


def decode_mask(text: str, shape: Any) -> np.ndarray:
    """``gzip-base64-u8-fortran`` text as a boolean array of ``shape``."""
    size = [int(s) for s in shape]
    raw = gzip.decompress(base64.b64decode(text))
    if len(raw) != int(np.prod(size)):
        raise ProtocolError(f"a mask of shape {size} arrived with {len(raw)} voxels")
    return np.frombuffer(raw, np.uint8).reshape(size, order="F") > 0


def _points(points: Any, what: str) -> list[list[int]]:
    pts = ops._points(points, what)
    if not pts:
        raise ValueError(f"{what} needs at least one [i, j, k] voxel index")
    return pts


class InteractiveState:
    """The client's copy of the object: model, mask (whole volume), the server's step count, last reply."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.mask: np.ndarray | None = None
        self.step = 0
        self.last: dict[str, Any] = {}
        self.sessions_seen = 0  # the session's re-creations already handled

    def apply(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Paste a reply's box into :attr:`mask`; returns the reply."""
        try:
            shape = [int(s) for s in reply["shape"]]
            lo, hi = ([int(v) for v in corner] for corner in reply["box"])
            box = decode_mask(reply["mask"], [b - a for a, b in zip(lo, hi)])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not an interactive reply: {exc}") from None
        if self.mask is None or list(self.mask.shape) != shape:
            self.mask = np.zeros(shape, bool)
        self.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box
        self.step = int(reply.get("step", self.step))
        self.last = {k: v for k, v in reply.items() if k != "mask"}
        if int(reply.get("voxels", -1)) not in (-1, np.count_nonzero(self.mask)):
            raise ProtocolError("the pasted mask disagrees with the server's voxel count")
        return self.last


def _path(session_id: str, action: str = "") -> str:
    return f"/v1/interactive/{ops._q(session_id)}" + (f"/{action}" if action else "")


def prompt_op(state: InteractiveState, session_id: str, body: dict[str, Any]) -> ops.Op[dict[str, Any]]:
    """``POST /v1/interactive/{sid}/prompt?model=M``."""
    reply = yield json_call("POST", _path(session_id, "prompt"), body, idempotent=False, query={"model": state.model})
    return state.apply(parse_json(reply))


def set_mask_op(state: InteractiveState, session_id: str, mask: np.ndarray) -> ops.Op[dict[str, Any]]:
    """``PUT /v1/interactive/{sid}/mask?model=M`` with the whole mask as JSON."""
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"a mask is a 3D array [i, j, k]; got {array.ndim}D")
    body = {"shape": list(array.shape), "encoding": ENCODING, "mask": encode_mask(array > 0)}
    reply = yield json_call("PUT", _path(session_id, "mask"), body, idempotent=True, query={"model": state.model})
    return state.apply(parse_json(reply))


def undo_op(state: InteractiveState, session_id: str) -> ops.Op[dict[str, Any]]:
    """``POST /v1/interactive/{sid}/undo``."""
    return state.apply(parse_json((yield Call("POST", _path(session_id, "undo")))))


def reset_op(state: InteractiveState, session_id: str) -> ops.Op[dict[str, Any]]:
    """``POST /v1/interactive/{sid}/reset``: a new object."""
    info = parse_json((yield Call("POST", _path(session_id, "reset"), idempotent=True)))
    state.mask, state.step, state.last = None, 0, {}
    return info


def download_op(session_id: str, fmt: str) -> ops.Op[bytes]:
    """``GET /v1/interactive/{sid}/mask?format=F``: the whole mask as a file on the image's grid."""
    reply = yield Call("GET", _path(session_id, "mask"), {"format": fmt}, idempotent=True)
    return reply.content


class Interactive:
    """One object annotated interactively on a :class:`~aiaa_client.Session` (``session.interactive(model)``).

    Every prompt is in voxel indices ``[i, j, k]`` of the session's image. Each call returns the
    reply without its mask (``step``, ``box``, ``voxels``, ``timings``); :attr:`mask` is the whole
    mask so far. If the server's session expired it is re-created and given :attr:`mask` back
    (the undo history stays on the lost session).
    """

    def __init__(self, session: Any, model: str) -> None:
        self._session = session
        self.state = InteractiveState(model)

    @property
    def model(self) -> str:
        """The interactive (deepgrow) model."""
        return self.state.model

    @property
    def mask(self) -> np.ndarray | None:
        """The whole current mask (bool ``[i, j, k]``), or ``None`` before the first step."""
        return self.state.mask

    @property
    def step(self) -> int:
        """Steps the server can undo."""
        return self.state.step

    def _run(self, make: Callable[[str], ops.Op[Any]]) -> Any:
        session_state = self._session._state

        def op(session_id: str) -> ops.Op[Any]:
            if session_state.recreated != self.state.sessions_seen:  # a new server session: give it our mask
                self.state.sessions_seen = session_state.recreated
                if self.state.mask is not None:
                    yield from set_mask_op(self.state, session_id, self.state.mask)
            return (yield from make(session_id))

        return self._session._run(op)

    def _prompt(self, body: dict[str, Any]) -> Any:
        return self._run(lambda sid: prompt_op(self.state, sid, body))

    def add_point(self, point: Any, positive: bool = True) -> Any:
        """A click (or several: a list of ``[i, j, k]``); ``positive=False`` marks background."""
        pts = _points(np.atleast_2d(np.asarray(point)), "a point")
        return self._prompt({"type": "point", "positive": bool(positive), "points": pts})

    def add_box(self, lo: Any, hi: Any, positive: bool = True) -> Any:
        """A box by two inclusive corners; a 2D box (one slice) has one coordinate equal."""
        corners = _points([list(lo), list(hi)], "a box")
        return self._prompt({"type": "box", "positive": bool(positive), "box": corners})

    def add_scribble(self, voxels: Any, positive: bool = True) -> Any:
        """A scribble: its voxels ``[[i, j, k], ...]`` or a boolean array of the image's shape."""
        array = np.asarray(voxels)
        pts = np.argwhere(array).tolist() if array.dtype == bool and array.ndim == 3 else voxels
        return self._prompt({"type": "scribble", "positive": bool(positive), "points": _points(pts, "a scribble")})

    def add_lasso(self, vertices: Any, positive: bool = True) -> Any:
        """A closed contour on one slice (its vertices); the server fills it."""
        return self._prompt({"type": "lasso", "positive": bool(positive), "points": _points(vertices, "a lasso")})

    def add_extreme_points(self, points: Any) -> Any:
        """Extreme points of the object, as the annotation models take them."""
        return self._prompt({"type": "extreme_points", "points": _points(points, "extreme points")})

    def set_mask(self, mask: Any) -> Any:
        """Start from an existing mask (an undoable step)."""
        return self._run(lambda sid: set_mask_op(self.state, sid, np.asarray(mask)))

    def undo(self) -> Any:
        """Go back one step, exactly."""
        return self._run(lambda sid: undo_op(self.state, sid))

    def reset(self) -> Any:
        """A new object: the server keeps nothing of this one."""
        return self._run(lambda sid: reset_op(self.state, sid))

    def download(self, fmt: str = "nii.gz") -> Any:
        """The whole mask as file bytes on the image's grid and geometry (``nii.gz``, ``nii``, ``nrrd``, ``mha``)."""
        return self._run(lambda sid: download_op(sid, fmt))
