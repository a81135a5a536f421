"""Every client operation, written once as a generator shared by the sync and async clients.

An operation yields :class:`~aiaa_client._protocol.Call` (the transport sends it and sends
back a :class:`~aiaa_client._protocol.Reply`, or throws the typed error into the generator)
and :class:`~aiaa_client._protocol.Sleep`; its return value is the method's result. So
request building, reply parsing, the session's 440 recovery and job polling exist once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from aiaa_client._errors import NotFound, ProtocolError, SessionExpired
from aiaa_client._images import Upload, crop_around, image_array, make_upload
from aiaa_client._protocol import Call, Reply, Sleep, json_call, multipart_call, parse_json, parse_result
from aiaa_client._types import Job, Result

T = TypeVar("T")
Op = Generator["Call | Sleep", Reply, T]

# Results come back as NIfTI unless the caller asks otherwise, so the client can always decode them.
DEFAULT_RESULT = {"result_extension": ".nii.gz"}


def _q(value: str) -> str:
    return quote(str(value), safe="")


def _points(points: Any, what: str = "points") -> list[list[int]]:
    try:
        pts = np.asarray(points)
        if pts.size == 0:
            return []
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.equal(np.mod(pts, 1), 0)):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"{what} must be a list of [i, j, k] integer voxel indices") from None
    return pts.astype(int).tolist()


# ---------------------------------------------------------------- models


def models(label: str | None = None, type: str | None = None) -> Op[list[dict[str, Any]]]:
    """``GET /v1/models``, optionally filtered by label and type."""
    query = {k: v for k, v in (("label", label), ("type", type)) if v}
    models = parse_json((yield Call("GET", "/v1/models", query, idempotent=True)))
    if not isinstance(models, list):
        raise ProtocolError("GET /v1/models did not return a list")
    return models


def model(name: str) -> Op[dict[str, Any]]:
    """``GET /v1/models?model=NAME``: one model's entry."""
    info = parse_json((yield Call("GET", "/v1/models", {"model": name}, idempotent=True)))
    if isinstance(info, list):  # a server that answers with a list: pick the entry
        info = next((m for m in info if m.get("name") == name), None)
        if info is None:
            raise NotFound(f"model '{name}' not found", 404)
    return info


# ---------------------------------------------------------------- inference


def infer_call(api: str, model: str, params: dict[str, Any], upload: Upload | None = None,
               session_id: str | None = None, output: str | None = None) -> Call:
    """The request of ``POST /v1/{api}``: ``params`` and the image, or a ``session_id``."""
    query = {"model": model}
    if session_id:
        query["session_id"] = session_id
    if output:
        query["output"] = output
    files = upload.parts() if upload is not None and not session_id else []
    return multipart_call("POST", f"/v1/{api}", query, {"params": json.dumps(params)}, files)


def _route_missing(exc: NotFound) -> bool:
    """Whether a 404 came from the web framework (no such route) rather than from the AIAA server's logic."""
    if exc.error == "RouteNotFound":  # this project's server names an unknown route so
        return True
    return exc.error is None and exc.detail.strip().lower() in ("not found", '{"detail":"not found"}')


def admin(op: Op[T]) -> Op[T]:
    """Run an admin operation; a missing route becomes a clear :class:`NotFound`."""
    try:
        return (yield from op)
    except NotFound as exc:
        if _route_missing(exc):
            raise NotFound("this server offers no admin API for this call (its /admin routes are missing)",
                           404) from exc
        raise


def _result(reply: Reply, api: str) -> Result:
    result = parse_result(reply)
    if api in ("dextr3d", "segmentation", "deepgrow") and not result.has_image:
        raise ProtocolError(f"the /v1/{api} reply carries no image", reply.status)
    return result


def with_result_defaults(params: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with the result keys the client asks for by default (NIfTI results it can decode)."""
    return {**DEFAULT_RESULT, **(params or {}), **(extra or {})}


def infer(api: str, model: str, image: Any, params: dict[str, Any], affine: Any = None,
          session_id: str | None = None, filename: str | None = None) -> Op[Result]:
    """``POST /v1/{api}`` with an image (or a session) and ready ``params``."""
    if image is None and not session_id:
        raise ValueError("pass an image or a session_id")
    upload = None if session_id else make_upload(image, affine, filename)
    try:
        reply = yield infer_call(api, model, params, upload, session_id)
    except NotFound as exc:
        if api == "deepgrow" and _route_missing(exc):
            raise NotFound("this server offers no /v1/deepgrow (no deepgrow model type)", 404) from exc
        raise
    return _result(reply, api)


def dextr3d(model: str, image: Any, points: Any, params: dict[str, Any] | None = None, affine: Any = None,
            session_id: str | None = None, crop: bool = False, pad_mm: float = 20.0) -> Op[Result]:
    """``POST /v1/dextr3d``; with ``crop`` only the box around the points (+ ``pad_mm``) is sent."""
    pts = _points(points)
    if not crop or session_id:
        params = with_result_defaults(params, {"points": pts})
        return (yield from infer("dextr3d", model, image, params, affine, session_id))
    array, full_affine = image_array(image, affine)
    cropped, crop_affine, box = crop_around(array, full_affine, pts, pad_mm)
    sent = with_result_defaults(params, {"points": box.shift_points(pts), "result_extension": ".nii.gz"})
    reply = yield infer_call("dextr3d", model, sent, make_upload(cropped, crop_affine))
    result = _result(reply, "dextr3d")
    out = dict(result.params)
    if isinstance(out.get("points"), list) and out["points"]:
        out["points"] = box.shift_points(out["points"], sign=+1)
    return Result(out, None, result.filename, box.paste(result.mask), box.full_affine)


def deepgrow(model: str, image: Any, foreground: Any, background: Any = (), current_point: Any = None,
             spatial_size: Sequence[int] | None = None, params: dict[str, Any] | None = None, affine: Any = None,
             session_id: str | None = None) -> Op[Result]:
    """``POST /v1/deepgrow`` with positive and negative clicks."""
    extra: dict[str, Any] = {"foreground": _points(foreground, "foreground"),
                             "background": _points(background, "background")}
    if current_point is not None:
        extra["current_point"] = [int(v) for v in np.asarray(current_point).ravel()]
    if spatial_size is not None:
        extra["spatial_size"] = [int(v) for v in spatial_size]
    return (yield from infer("deepgrow", model, image, with_result_defaults(params, extra), affine, session_id))


# ---------------------------------------------------------------- sessions


def create_session(upload: Upload, expiry: int = 0) -> Op[dict[str, Any]]:
    """``PUT /session/?expiry=N`` with the image; returns the server's session info."""
    call = multipart_call("PUT", "/session/", {"expiry": str(int(expiry))}, {}, upload.parts())
    info = parse_json((yield call))
    if not isinstance(info, dict) or not isinstance(info.get("session_id"), str):
        raise ProtocolError("PUT /session/ did not return a session_id")
    return info


def get_session(session_id: str) -> Op[dict[str, Any]]:
    """``GET /session/{id}``."""
    return parse_json((yield Call("GET", f"/session/{_q(session_id)}", idempotent=True)))


def delete_session(session_id: str) -> Op[dict[str, Any]]:
    """``DELETE /session/{id}``."""
    reply = yield Call("DELETE", f"/session/{_q(session_id)}", idempotent=True)
    return parse_json(reply) if "json" in reply.content_type else {"session_id": session_id, "deleted": True}


class SessionState:
    """What a session object holds: the server's id and, when it still has it, the image."""

    def __init__(self, upload: Upload | None, expiry: int = 0, session_id: str | None = None) -> None:
        self.upload = upload
        self.expiry = expiry
        self.id = session_id
        self.info: dict[str, Any] | None = None
        self.recreated = 0

    def open(self) -> Op[str]:
        """Create the session on the server unless it exists."""
        if self.id is None:
            if self.upload is None:
                raise ValueError("this session has no image to upload")
            self.info = yield from create_session(self.upload, self.expiry)
            self.id = self.info["session_id"]
        return self.id


def in_session(state: SessionState, op: Callable[[str], Op[T]]) -> Op[T]:
    """Run ``op(session_id)``; on 440 re-create the session from the held image and run it once more."""
    session_id = yield from state.open()
    try:
        return (yield from op(session_id))
    except SessionExpired:
        if state.upload is None:
            raise
        state.id = None
        state.recreated += 1
        session_id = yield from state.open()
        return (yield from op(session_id))


# ---------------------------------------------------------------- admin: jobs


def _listing(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict) and isinstance(value.get(key), list):
        return value[key]
    if isinstance(value, list):
        return value
    raise ProtocolError(f"expected a list of {key}")


def submit_job(kind: str, model: str, datalist: str, params: dict[str, Any] | None = None) -> Op[str]:
    """``POST /admin/jobs``; returns the job id."""
    body = {"kind": kind, "model": model, "datalist": datalist, "params": params or {}}
    reply = parse_json((yield json_call("POST", "/admin/jobs", body, idempotent=False)))
    if not isinstance(reply, dict) or "job_id" not in reply:
        raise ProtocolError("POST /admin/jobs did not return a job_id")
    return str(reply["job_id"])


def jobs() -> Op[list[Job]]:
    """``GET /admin/jobs``."""
    return [Job.from_json(j) for j in _listing(parse_json((yield Call("GET", "/admin/jobs", idempotent=True))), "jobs")]


def job(job_id: str) -> Op[Job]:
    """``GET /admin/jobs/{id}``."""
    return Job.from_json(parse_json((yield Call("GET", f"/admin/jobs/{_q(job_id)}", idempotent=True))))


def job_logs(job_id: str, lines: int = 100) -> Op[str]:
    """``GET /admin/jobs/{id}/logs?lines=N`` as text."""
    reply = yield Call("GET", f"/admin/jobs/{_q(job_id)}/logs", {"lines": str(int(lines))}, idempotent=True)
    return reply.content.decode("utf-8", errors="replace")


def _job_or_dict(reply: Reply) -> Job | dict[str, Any]:
    body = parse_json(reply) if reply.content else {}
    try:
        return Job.from_json(body)
    except (ValueError, TypeError, AttributeError):
        return body


def cancel_job(job_id: str) -> Op[Job | dict[str, Any]]:
    """``DELETE /admin/jobs/{id}``: cancel (cooperative stop, then signals)."""
    return _job_or_dict((yield Call("DELETE", f"/admin/jobs/{_q(job_id)}", idempotent=True)))


def resume_job(job_id: str) -> Op[Job | dict[str, Any]]:
    """``POST /admin/jobs/{id}/resume``."""
    return _job_or_dict((yield Call("POST", f"/admin/jobs/{_q(job_id)}/resume")))


def events_call(job_id: str) -> Call:
    """``GET /admin/jobs/{id}/events`` (server-sent events; the transports stream it)."""
    return Call("GET", f"/admin/jobs/{_q(job_id)}/events", headers={"Accept": "text/event-stream"}, idempotent=True)


def apply_event(current: Job, data: str) -> Job | None:
    """The job after one event's ``data`` (a job record or a partial update); ``None`` if not about the job."""
    try:
        update = json.loads(data)
    except ValueError:
        return None
    if isinstance(update, dict) and isinstance(update.get("job"), dict):
        update = update["job"]
    if not isinstance(update, dict) or not ({"state", "progress", "epoch", "metrics"} & update.keys()):
        return None
    if str(update.get("id", update.get("job_id", current.id))) != current.id:
        return None
    return Job.from_json({**current.raw, **update, "id": current.id})


def poll_job(job_id: str, interval_s: float, callback: Callable[[Job], None] | None = None,
             timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> Op[Job]:
    """Poll ``GET /admin/jobs/{id}`` every ``interval_s`` until the job stops; ``callback`` sees each change."""
    deadline = None if timeout_s is None else clock() + timeout_s
    last = None
    while True:
        current = yield from job(job_id)
        if callback is not None and current.raw != last:
            callback(current)
        last = current.raw
        if current.done:
            return current
        if deadline is not None and clock() >= deadline:
            from aiaa_client._errors import Timeout

            raise Timeout(f"job {job_id} still {current.state} after {timeout_s} s")
        yield Sleep(interval_s)


# ---------------------------------------------------------------- admin: models and datasets


def versions(model: str) -> Op[list[dict[str, Any]]]:
    """``GET /admin/models/{name}/versions``."""
    reply = yield Call("GET", f"/admin/models/{_q(model)}/versions", idempotent=True)
    return _listing(parse_json(reply), "versions")


def serve_version(model: str, version: str | int) -> Op[dict[str, Any]]:
    """``PUT /admin/models/{name}/serving`` with ``{"version": "N"}``."""
    return parse_json((yield json_call("PUT", f"/admin/models/{_q(model)}/serving", {"version": str(version)},
                                       idempotent=True)))


def _file(value: Any, default_name: str) -> tuple[str, bytes]:
    if isinstance(value, (bytes, bytearray)):
        return default_name, bytes(value)
    if isinstance(value, dict):
        return default_name, json.dumps(value).encode()
    from pathlib import Path

    path = Path(value)
    return path.name, path.read_bytes()


def upload_model(name: str, config: Any, weights: Any) -> Op[dict[str, Any]]:
    """``PUT /admin/model/{name}`` with multipart ``config`` (JSON) and ``data`` (weights): add or replace."""
    config_name, config_data = _file(config, "config_aiaa.json")
    weights_name, weights_data = _file(weights, "model.pt")
    call = multipart_call("PUT", f"/admin/model/{_q(name)}", {},
                          {}, [("config", config_name, config_data), ("data", weights_name, weights_data)],
                          idempotent=True)
    reply = yield call
    return parse_json(reply) if reply.content else {}


def admin_model(name: str) -> Op[dict[str, Any]]:
    """``GET /admin/model/{name}``."""
    return parse_json((yield Call("GET", f"/admin/model/{_q(name)}", idempotent=True)))


def delete_model(name: str) -> Op[dict[str, Any]]:
    """``DELETE /admin/model/{name}``."""
    reply = yield Call("DELETE", f"/admin/model/{_q(name)}", idempotent=True)
    return parse_json(reply) if reply.content else {}


def upload_dataset(images: Sequence[Any], labels: Sequence[Any]) -> Op[dict[str, Any]]:
    """``POST /admin/datasets``: multipart ``images`` and ``labels`` (in matching order); returns the id."""
    if len(images) != len(labels) or not images:
        raise ValueError("pass as many labels as images (at least one)")
    files = [("images", *_file(p, f"image{i}.nii.gz")) for i, p in enumerate(images)]
    files += [("labels", *_file(p, f"label{i}.nii.gz")) for i, p in enumerate(labels)]
    return parse_json((yield multipart_call("POST", "/admin/datasets", {}, {}, files)))
