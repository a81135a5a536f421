"""The request guard: slow bodies get 408, work stops at the time limit or when the client goes away,
and such requests free their model's queue."""

import json
import threading

import anyio
import httpx
import numpy as np
from helpers import phantom

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings


def _app(**limits):
    from conftest import standin_pool

    settings = Settings(config="unused.json", max_voxels=200_000, max_running_per_model=1, **limits)
    return create_app(settings, standin_pool())


def _segmentation_request() -> tuple[dict, bytes]:
    volume, _ = phantom(shape=(8, 8, 8), center=(4, 4, 4), radii=(2, 2, 2))
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    request = httpx.Request("POST", "http://test/v1/segmentation?model=segmentation_test&output=json",
                            files={"image": ("a.nii.gz", data)})
    body = request.read()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/segmentation", "raw_path": b"/v1/segmentation",
             "query_string": b"model=segmentation_test&output=json", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    return scope, body


class Exchange:
    """One ASGI request: the body at once, then (optionally) the client leaves when ``leave`` is set."""

    def __init__(self, scope, body, send_body=True):
        self.scope, self.body, self.send_body = scope, body, send_body
        self.leave = anyio.Event()
        self.sent_body = False
        self.messages = []

    async def receive(self):
        if not self.sent_body and self.send_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.messages.append(message)

    @property
    def status(self):
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    def json(self):
        return json.loads(b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"))


def _blocking_engine(app):
    """Make the segmentation engine wait for ``release``; count its calls."""
    engine = app.state.pool.get("segmentation_test")
    original, release, calls = engine.infer, threading.Event(), []

    def infer(volume, params):
        calls.append(1)
        release.wait(30)
        return original(volume, params)

    engine.infer = infer
    return release, calls


def test_a_body_that_stalls_is_408_and_closes_the_connection():
    app = _app(body_idle_timeout_s=0.05)
    scope, body = _segmentation_request()
    exchange = Exchange(scope, body, send_body=False)
    anyio.run(app, scope, exchange.receive, exchange.send)
    assert exchange.status == 408 and "not received in time" in exchange.json()["detail"]
    headers = dict(next(m for m in exchange.messages if m["type"] == "http.response.start")["headers"])
    assert headers[b"connection"] == b"close"


def _two_requests(**limits):
    """An app whose engine blocks, the engine's release and calls, the request scope and two exchanges."""
    app = _app(**limits)
    release, calls = _blocking_engine(app)
    scope, body = _segmentation_request()
    return app, release, calls, scope, Exchange(scope, body), Exchange(scope, body)


async def _start_running(group, app, scope, exchange, calls):
    """Start ``exchange`` and wait until its inference runs (and holds the model's one slot)."""
    group.start_soon(app, scope, exchange.receive, exchange.send)
    while not calls:
        await anyio.sleep(0.01)


def test_a_request_past_its_time_limit_is_503_and_leaves_the_queue():
    app, release, calls, scope, first, second = _two_requests(request_timeout_s=0.2)

    async def main():
        async with anyio.create_task_group() as group:
            await _start_running(group, app, scope, first, calls)
            await app(scope, second.receive, second.send)  # queued behind the first: times out waiting
            assert app.state.gates["segmentation_test"].in_flight == 1
            release.set()

    anyio.run(main)
    assert second.status == 503 and second.json()["error"] == "Timeout"
    assert len(calls) == 1  # the queued request never ran
    assert first.status in (200, 503)
    assert app.state.gates["segmentation_test"].in_flight == 0


def test_a_client_that_goes_away_stops_its_queued_work():
    app, release, calls, scope, first, second = _two_requests()

    async def main():
        async with anyio.create_task_group() as group:
            await _start_running(group, app, scope, first, calls)
            group.start_soon(app, scope, second.receive, second.send)
            while app.state.gates["segmentation_test"].in_flight < 2:
                await anyio.sleep(0.01)
            second.leave.set()  # the second client goes away while it waits for the slot
            while app.state.gates["segmentation_test"].in_flight > 1:
                await anyio.sleep(0.01)
            release.set()

    anyio.run(main)
    assert second.status is None and len(calls) == 1
    assert first.status == 200 and np.isfinite(first.json()["timings"]["total"])
    assert app.state.gates["segmentation_test"].in_flight == 0


def test_an_unexpected_error_is_still_a_500_json_reply_with_its_request_id():
    from fastapi.testclient import TestClient

    app = _app()
    engine = app.state.pool.get("segmentation_test")
    engine.infer = lambda volume, params: 1 / 0
    scope, body = _segmentation_request()
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.post("/v1/segmentation?model=segmentation_test", content=body,
                            headers={"content-type": dict(scope["headers"])[b"content-type"].decode(),
                                     "x-request-id": "r-500"})
    assert reply.status_code == 500 and reply.json() == {"error": "InternalError",
                                                         "detail": "unexpected server error: ZeroDivisionError"}
