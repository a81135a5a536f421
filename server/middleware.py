"""The request guard around the whole app (pure ASGI): request ids, metrics, time limits, clients gone.

- ``X-Request-ID``: taken from the request when it is a short plain token, else generated; set on
  the reply and on every log line the request causes (server/logbuffer.py).
- Body read limits: a body that sends nothing for ``body_idle_timeout_s``, or is not complete
  after ``body_timeout_s``, is answered 408 and its connection closed (slow-body and endless
  chunked uploads).
- Work limits: once the body is read, the request gets ``request_timeout_s`` to start its reply
  (then 503), and stops when its client disconnects. Waiting for a model slot stops at once; a
  network call already running in a worker thread finishes first (threads cannot be killed), so
  the slots a model reports busy are always real work.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError
from server.logbuffer import REQUEST_ID

__all__ = ["RequestGuard", "RequestTimeout"]

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestTimeout(ApiError):
    """The request body did not arrive in time (408); the connection is closed."""

    status = 408


class RequestGuard:
    """ASGI middleware: see the module docstring. ``state`` is the app's state (settings, metrics, pool)."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        try:
            await self._guard(scope, receive, send, request_id,
                              b"content-length" in headers and headers[b"content-length"] not in (b"0", b"")
                              or b"transfer-encoding" in headers)
        finally:
            REQUEST_ID.reset(token)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, request_id: str, has_body: bool) -> None:
        settings = self.state.settings
        start = time.perf_counter()
        body_deadline = time.monotonic() + settings.body_timeout_s
        body_done = anyio.Event()
        reply = {"status": 500, "started": False, "complete": False}
        outcome: list[str] = []
        failure: Exception | None = None
        if not has_body:
            body_done.set()

        async def guarded_receive() -> Message:
            if body_done.is_set():
                return await receive()
            wait = min(settings.body_idle_timeout_s, body_deadline - time.monotonic())
            with anyio.move_on_after(max(0.0, wait)):
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    body_done.set()
                return message
            raise RequestTimeout(f"the request body was not received in time (idle limit "
                                 f"{settings.body_idle_timeout_s:g} s, total {settings.body_timeout_s:g} s)",
                                 headers={"Connection": "close"})

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                reply["status"], reply["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                reply["complete"] = True
            await send(message)

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await body_done.wait()
                with anyio.move_on_after(settings.request_timeout_s):
                    if not has_body:
                        await anyio.sleep_forever()
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if not reply["complete"]:
                        outcome.append("disconnect")
                        group.cancel_scope.cancel()
                    return
                if not reply["started"]:
                    outcome.append("timeout")
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await self.app(scope, guarded_receive, guarded_send)
            except Exception as exc:  # re-raised below, outside the task group (not as an ExceptionGroup)
                failure = exc
            finally:
                group.cancel_scope.cancel()

        if failure is not None:
            self._observe(scope, 500, time.perf_counter() - start)
            raise failure

        if outcome == ["timeout"]:
            log.warning("%s %s stopped: no reply within %g s", scope["method"], scope["path"], settings.request_timeout_s)
            await self._send_json(guarded_send, 503, "Timeout",
                                  f"the request took longer than the server's limit of {settings.request_timeout_s:g} s",
                                  {"Retry-After": "5"})
        elif outcome == ["disconnect"]:
            log.info("%s %s stopped: the client went away", scope["method"], scope["path"])
            reply["status"] = 499  # nginx's "client closed request", for the metrics only
        self._observe(scope, reply["status"], time.perf_counter() - start)

    @staticmethod
    async def _send_json(send: Send, status: int, kind: str, detail: str, headers: dict[str, str]) -> None:
        body = json.dumps({"error": kind, "detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
        await send({"type": "http.response.body", "body": body})

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        metrics = getattr(self.state, "metrics", None)
        if metrics is None:
            return
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        model = "-"
        for key, value in _query_pairs(scope):
            if key == "model":
                model = value if self.state.pool.record(value) is not None else "other"
                break
        metrics.observe_request(route, scope["method"], status, model, seconds)


def _query_pairs(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
