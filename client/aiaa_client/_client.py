"""``Client`` and ``AsyncClient``: thin transports that run the shared operations.

Each public method is written once in :class:`_Methods`: it builds the operation (a
generator from :mod:`aiaa_client._operations`) and hands it to ``_run``, which the sync
client drives with blocking httpx calls and the async client with awaited ones (so
``AsyncClient``'s methods return awaitables). Only following a job's event stream is
written per transport, since streaming is I/O.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from aiaa_client import _operations as ops
from aiaa_client._errors import AIAAError, ConnectionFailed, Timeout, error_from_reply
from aiaa_client._images import make_upload
from aiaa_client._interactive import Interactive
from aiaa_client._protocol import Call, Reply, RetryPolicy, Sleep, SSEDecoder
from aiaa_client._types import Job, Result

__all__ = ["DEFAULT_TIMEOUT_S", "AsyncClient", "AsyncSession", "Client", "Session"]

DEFAULT_TIMEOUT_S = 60.0  # the C++ client's default
DEFAULT_URL = "http://127.0.0.1:5000"


def _transport_failure(exc: httpx.TransportError) -> tuple[str, AIAAError]:
    """Classify an httpx failure: ``connect`` (nothing sent), ``invalid`` (bad URL), ``timeout`` or ``dropped``."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return "connect", ConnectionFailed(f"cannot reach the server: {exc}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "invalid", ConnectionFailed(f"not a usable server URL: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", Timeout(f"no reply in time ({type(exc).__name__})")
    return "dropped", ConnectionFailed(f"the connection failed: {type(exc).__name__}: {exc}")


class _Methods:
    """The public API, written once for both clients (``_run`` differs)."""

    def _run(self, op: ops.Op[Any]) -> Any:  # pragma: no cover - replaced by each client
        raise NotImplementedError

    def models(self, label: str | None = None, type: str | None = None) -> list[dict[str, Any]]:
        """The models the server serves, optionally by label (case-insensitive) and type."""
        return self._run(ops.models(label, type))

    def model(self, name: str) -> dict[str, Any]:
        """One model's entry (``name``, ``type``, ``labels``, ``description``, ``version``, ...)."""
        return self._run(ops.model(name))

    def dextr3d(self, model: str, image: Any, points: Any, *, params: dict[str, Any] | None = None,
                affine: Any = None, session_id: str | None = None, crop: bool = False,
                pad_mm: float = 20.0) -> Result:
        """The mask of one object from six or more extreme points ``[[i, j, k], ...]`` (voxel indices).

        ``image``: a path, bytes, a numpy array (with ``affine``) or a nibabel image. ``crop=True``
        sends only the box around the points plus ``pad_mm`` and pastes the mask back on the full grid.
        """
        return self._run(ops.dextr3d(model, image, points, params, affine, session_id, crop, pad_mm))

    def segmentation(self, model: str, image: Any = None, *, params: dict[str, Any] | None = None,
                     affine: Any = None, session_id: str | None = None) -> Result:
        """Automatic segmentation: a label map 1..N in the model's label order."""
        return self._run(ops.infer("segmentation", model, image, ops.with_result_defaults(params), affine, session_id))

    def inference(self, model: str, image: Any = None, *, params: dict[str, Any] | None = None,
                  affine: Any = None, session_id: str | None = None) -> Result:
        """Generic inference: the server dispatches on the model's type (``params`` are model specific)."""
        return self._run(ops.infer("inference", model, image, ops.with_result_defaults(params), affine, session_id))

    def deepgrow(self, model: str, image: Any, foreground: Any, background: Any = (), *,
                 current_point: Any = None, spatial_size: Sequence[int] | None = None,
                 params: dict[str, Any] | None = None, affine: Any = None, session_id: str | None = None) -> Result:
        """DeepGrow clicks, on a server that offers ``/v1/deepgrow`` (:class:`NotFound` otherwise)."""
        return self._run(ops.deepgrow(model, image, foreground, background, current_point, spatial_size, params,
                                      affine, session_id))

    def create_session(self, image: Any, *, expiry: int = 0, affine: Any = None) -> dict[str, Any]:
        """Upload ``image`` once (``PUT /session/``); returns the session info with ``session_id``."""
        return self._run(ops.create_session(make_upload(image, affine), expiry))

    def get_session(self, session_id: str) -> dict[str, Any]:
        """A session's info (:class:`NotFound` once it expired)."""
        return self._run(ops.get_session(session_id))

    def delete_session(self, session_id: str) -> dict[str, Any]:
        """Close a session."""
        return self._run(ops.delete_session(session_id))

    # admin (``Authorization: Bearer <token>``)
    def submit(self, kind: str, model: str, datalist: str, params: dict[str, Any] | None = None) -> str:
        """Start a ``train``/``finetune``/``evaluate``/``export`` job; returns its id."""
        return self._run(ops.admin(ops.submit_job(kind, model, datalist, params)))

    def jobs(self) -> list[Job]:
        """All jobs."""
        return self._run(ops.admin(ops.jobs()))

    def job(self, job_id: str) -> Job:
        """One job's state, progress and result."""
        return self._run(ops.admin(ops.job(job_id)))

    def logs(self, job_id: str, lines: int = 100) -> str:
        """The last ``lines`` lines of a job's log."""
        return self._run(ops.admin(ops.job_logs(job_id, lines)))

    def cancel(self, job_id: str) -> Job | dict[str, Any]:
        """Cancel a job (cooperative stop first, then signals)."""
        return self._run(ops.admin(ops.cancel_job(job_id)))

    def resume(self, job_id: str) -> Job | dict[str, Any]:
        """Resume an interrupted or cancelled job from its last checkpoint."""
        return self._run(ops.admin(ops.resume_job(job_id)))

    def wait(self, job_id: str, *, timeout: float | None = None, poll_interval: float = 1.0) -> Job:
        """Poll until the job stops; returns it (check ``.state``). :class:`Timeout` after ``timeout`` s."""
        return self._run(ops.admin(ops.poll_job(job_id, poll_interval, None, timeout)))

    def versions(self, model: str) -> list[dict[str, Any]]:
        """A model's versions with their metrics."""
        return self._run(ops.admin(ops.versions(model)))

    def serve(self, model: str, version: str | int) -> dict[str, Any]:
        """Switch the version a model serves (roll back or forward)."""
        return self._run(ops.admin(ops.serve_version(model, version)))

    def upload_model(self, name: str, config: Any, weights: Any) -> dict[str, Any]:
        """Add a model (``PUT /admin/model/{name}``): ``config`` a path, bytes or dict; ``weights`` a path or bytes."""
        return self._run(ops.admin(ops.upload_model(name, config, weights)))

    def replace_model(self, name: str, config: Any, weights: Any) -> dict[str, Any]:
        """Replace a model: the same ``PUT /admin/model/{name}``, for a name that exists."""
        return self._run(ops.admin(ops.upload_model(name, config, weights)))

    def admin_model(self, name: str) -> dict[str, Any]:
        """``GET /admin/model/{name}``: the model's admin record."""
        return self._run(ops.admin(ops.admin_model(name)))

    def delete_model(self, name: str) -> dict[str, Any]:
        """Remove a model from the server."""
        return self._run(ops.admin(ops.delete_model(name)))

    def upload_dataset(self, images: Sequence[Any], labels: Sequence[Any]) -> dict[str, Any]:
        """Upload labelled cases (``POST /admin/datasets``); the reply names the dataset for ``submit``."""
        return self._run(ops.admin(ops.upload_dataset(images, labels)))


class _Base(_Methods):
    """Configuration shared by both clients; no I/O."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT_S,
                 max_retries: int = 2, backoff_s: float = 0.5) -> None:
        self.url = (url or os.environ.get("AIAA_SERVER") or DEFAULT_URL).rstrip("/")
        try:
            parsed = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a server URL: {self.url!r} ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"the server URL must look like http://host:port, not {self.url!r}")
        self.token = token
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, backoff_s)

    def _timeout(self, **override: Any) -> dict[str, Any]:
        """Per-request timeout, only for our own httpx client (a passed-in one keeps its own settings)."""
        if not self._own_http:
            return {}
        return {"timeout": httpx.Timeout(self.timeout, **override) if override else self.timeout}

    def _request_args(self, call: Call) -> dict[str, Any]:
        headers = dict(call.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {"method": call.method, "url": self.url + call.path, "params": dict(call.query),
                "headers": headers, "content": call.content}

    def _check(self, response: httpx.Response, content: bytes) -> Reply:
        if 200 <= response.status_code < 300:
            return Reply(response.status_code, dict(response.headers), content)
        raise error_from_reply(response.status_code, response.headers, content)


class Client(_Base):
    """Blocking client of an AIAA server.

    ``Client(url, token=None, timeout=60)``; ``url`` defaults to ``$AIAA_SERVER`` or
    ``http://127.0.0.1:5000``. Pass ``http_client`` to use your own ``httpx.Client``
    (proxies, certificates, or an in-process test client). Use it as a context manager or
    call :meth:`close`.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT_S,
                 max_retries: int = 2, backoff_s: float = 0.5, http_client: httpx.Client | None = None) -> None:
        super().__init__(url, token, timeout=timeout, max_retries=max_retries, backoff_s=backoff_s)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (not a client passed in as ``http_client``)."""
        if self._own_http:
            self._http.close()

    def _send(self, call: Call) -> Reply:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._request_args(call), **self._timeout())
                reply = self._check(response, response.content)
                return reply
            except httpx.TransportError as exc:
                kind, error = _transport_failure(exc)
                delay = self.retry.after_transport_failure(call, kind, attempt)
                if delay is None:
                    raise error from exc
            except AIAAError as error:
                delay = self.retry.after_error(call, error, attempt)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _run(self, op: ops.Op[Any]) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    reply = self._send(step)
                except AIAAError as error:
                    step = op.throw(error)
                else:
                    step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    def session(self, image: Any = None, *, expiry: int = 0, affine: Any = None,
                session_id: str | None = None) -> Session:
        """A session for ``image`` (``with client.session(img) as s: s.dextr3d(model, points)``).

        Created on entry, deleted on exit; re-created transparently after a 440. Pass
        ``session_id`` instead of an image to use an existing session (no re-creation then).
        """
        return Session(self, ops.SessionState(None if image is None else make_upload(image, affine), expiry,
                                              session_id))

    def follow(self, job_id: str, callback: Callable[[Job], None] | None = None, *,
               poll_interval: float = 1.0) -> Job:
        """Follow a job until it stops, calling ``callback(job)`` on every change.

        Reads the job's server-sent event stream; falls back to polling when the stream is
        unavailable or ends early.
        """
        current = self.job(job_id)
        if callback is not None:
            callback(current)
        if current.done:
            return current
        call = ops.events_call(job_id)
        try:
            with self._http.stream(**self._request_args(call), **self._timeout(read=None)) as response:
                if response.status_code == 200:
                    decoder = SSEDecoder()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        updated = event and ops.apply_event(current, event.data)
                        if updated:
                            current = updated
                            if callback is not None:
                                callback(current)
                            if current.done:
                                return current
        except httpx.TransportError:
            pass  # fall back to polling
        return self._run(ops.admin(ops.poll_job(job_id, poll_interval, callback)))


class Session:
    """A server-side copy of one image: inference calls send only the points and params."""

    def __init__(self, client: _Methods, state: ops.SessionState) -> None:
        self._client = client
        self._state = state

    @property
    def id(self) -> str | None:
        """The server's session id (``None`` before it is opened)."""
        return self._state.id

    @property
    def recreated(self) -> int:
        """How often the session was re-created after it expired on the server."""
        return self._state.recreated

    def _run(self, make: Callable[[str], ops.Op[Any]]) -> Any:
        return self._client._run(ops.in_session(self._state, make))

    def open(self) -> str:
        """Create the session now (``with`` does it for you); returns its id."""
        return self._client._run(self._state.open())

    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the session on the server (an already expired one is fine)."""
        if self._state.id is not None:
            try:
                self._client._run(ops.delete_session(self._state.id))
            except AIAAError:
                pass  # expired or unreachable: nothing left to free
            self._state.id = None

    def info(self) -> dict[str, Any]:
        """The session's info on the server."""
        return self._run(ops.get_session)

    def dextr3d(self, model: str, points: Any, *, params: dict[str, Any] | None = None) -> Result:
        """Extreme points on the session's image."""
        return self._run(lambda sid: ops.dextr3d(model, None, points, params, session_id=sid))

    def segmentation(self, model: str, *, params: dict[str, Any] | None = None) -> Result:
        """Automatic segmentation of the session's image."""
        return self._run(lambda sid: ops.infer("segmentation", model, None, ops.with_result_defaults(params),
                                               session_id=sid))

    def inference(self, model: str, *, params: dict[str, Any] | None = None) -> Result:
        """Generic inference on the session's image."""
        return self._run(lambda sid: ops.infer("inference", model, None, ops.with_result_defaults(params),
                                               session_id=sid))

    def deepgrow(self, model: str, foreground: Any, background: Any = (), *, current_point: Any = None,
                 spatial_size: Sequence[int] | None = None, params: dict[str, Any] | None = None) -> Result:
        """DeepGrow clicks on the session's image."""
        return self._run(lambda sid: ops.deepgrow(model, None, foreground, background, current_point, spatial_size,
                                                  params, session_id=sid))


    def interactive(self, model: str) -> Interactive:
        """Annotate one object on this session with an interactive (deepgrow) model.

        ``obj = session.interactive(model); obj.add_point([i, j, k]); obj.add_box(lo, hi); obj.undo();
        obj.mask`` (with an :class:`AsyncClient`, await each call).
        """
        return Interactive(self, model)


class AsyncClient(_Base):
    """The asyncio client: the same methods as :class:`Client`, awaited (``await client.models()``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT_S,
                 max_retries: int = 2, backoff_s: float = 0.5, http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__(url, token, timeout=timeout, max_retries=max_retries, backoff_s=backoff_s)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (not a client passed in as ``http_client``)."""
        if self._own_http:
            await self._http.aclose()

    async def _send(self, call: Call) -> Reply:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._request_args(call), **self._timeout())
                return self._check(response, response.content)
            except httpx.TransportError as exc:
                kind, error = _transport_failure(exc)
                delay = self.retry.after_transport_failure(call, kind, attempt)
                if delay is None:
                    raise error from exc
            except AIAAError as error:
                delay = self.retry.after_error(call, error, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _run(self, op: ops.Op[Any]) -> Any:  # type: ignore[override]
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    reply = await self._send(step)
                except AIAAError as error:
                    step = op.throw(error)
                else:
                    step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    def session(self, image: Any = None, *, expiry: int = 0, affine: Any = None,
                session_id: str | None = None) -> AsyncSession:
        """Like :meth:`Client.session`, used with ``async with``."""
        return AsyncSession(self, ops.SessionState(None if image is None else make_upload(image, affine), expiry,
                                                   session_id))

    async def follow(self, job_id: str, callback: Callable[[Job], None] | None = None, *,
                     poll_interval: float = 1.0) -> Job:
        """Like :meth:`Client.follow` (``callback`` is a plain function)."""
        current = await self.job(job_id)
        if callback is not None:
            callback(current)
        if current.done:
            return current
        call = ops.events_call(job_id)
        try:
            async with self._http.stream(**self._request_args(call), **self._timeout(read=None)) as response:
                if response.status_code == 200:
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        updated = event and ops.apply_event(current, event.data)
                        if updated:
                            current = updated
                            if callback is not None:
                                callback(current)
                            if current.done:
                                return current
        except httpx.TransportError:
            pass
        return await self._run(ops.admin(ops.poll_job(job_id, poll_interval, callback)))


class AsyncSession(Session):
    """A session of an :class:`AsyncClient`: its methods return awaitables; use ``async with``."""

    async def open(self) -> str:  # type: ignore[override]
        """Create the session now; returns its id."""
        return await self._client._run(self._state.open())

    async def __aenter__(self) -> AsyncSession:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:  # type: ignore[override]
        """Delete the session on the server (an already expired one is fine)."""
        if self._state.id is not None:
            try:
                await self._client._run(ops.delete_session(self._state.id))
            except AIAAError:
                pass
            self._state.id = None

    def __enter__(self):  # pragma: no cover - guard against the wrong statement
        raise TypeError("use 'async with' with an AsyncClient's session")
