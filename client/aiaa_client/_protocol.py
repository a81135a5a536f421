"""The AIAA wire format, without I/O: request descriptions, multipart bodies, reply parsing, retries.

Requests follow the protocol notes: inference and session calls are ``multipart/form-data``
with a text part ``params`` (JSON) first, then the image as ``image`` (``image0..N`` for a
DICOM series) with ``Content-Type: application/octet-stream``. Replies are JSON, a raw
image (``output=image``) or multipart with a ``params`` part and one file part.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiaa_client._errors import Busy, ProtocolError
from aiaa_client._types import Result

__all__ = [
    "Call",
    "Reply",
    "RetryPolicy",
    "SSEDecoder",
    "ServerEvent",
    "Sleep",
    "encode_multipart",
    "parse_json",
    "parse_result",
]


@dataclass(frozen=True)
class Call:
    """One HTTP request to make. ``idempotent`` calls may be retried after a dropped connection."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    idempotent: bool = False


@dataclass(frozen=True)
class Sleep:
    """Wait before the next step (polling a job)."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """A successful (2xx) reply, as the transports hand it to the operations."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header (lower-case keys are not assumed)."""
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")


def json_call(method: str, path: str, body: Any, idempotent: bool, query: Mapping[str, str] | None = None) -> Call:
    """A request with a JSON body."""
    return Call(method, path, dict(query or {}), {"Content-Type": "application/json"},
                json.dumps(body).encode(), idempotent)


def encode_multipart(fields: Mapping[str, str], files: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    """``(content_type, body)``: text fields first (no Content-Type, as NVIDIA's clients send them), then files."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


def multipart_call(method: str, path: str, query: Mapping[str, str], fields: Mapping[str, str],
                   files: list[tuple[str, str, bytes]], idempotent: bool = False) -> Call:
    """A multipart request (inference, sessions, admin uploads)."""
    content_type, body = encode_multipart(fields, files)
    return Call(method, path, dict(query), {"Content-Type": content_type}, body, idempotent)


def parse_json(reply: Reply) -> Any:
    """The reply's JSON body."""
    try:
        return json.loads(reply.content)
    except ValueError:
        raise ProtocolError(f"expected JSON, got {reply.content_type or 'no Content-Type'} "
                            f"({reply.content[:80]!r})", reply.status) from None


def _boundary(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ProtocolError(f"multipart reply without a boundary: {content_type!r}")
    return match.group(1).strip()


def _parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into ``(headers, content)`` parts."""
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append((headers, content.removesuffix(b"\r\n")))
    return parts


def _disposition(headers: dict[str, str], key: str) -> str | None:
    match = re.search(rf'{key}="([^"]*)"|{key}=([^;\s]+)', headers.get("content-disposition", ""))
    return None if not match else match.group(1) if match.group(1) is not None else match.group(2)


def _json_object(text: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ProtocolError(f"the {what} part is not JSON") from None
    if isinstance(value, str):  # the legacy clients' JSON-encoded-twice values
        value = json.loads(value)
    return value if isinstance(value, dict) else {"points": value} if what == "points" else {"result": value}


def parse_result(reply: Reply) -> Result:
    """A :class:`Result` from a multipart, raw image or JSON-only reply."""
    content_type = reply.content_type.lower()
    if "multipart" in content_type:
        params: dict[str, Any] = {}
        data = filename = None
        for headers, content in _parts(reply.content, _boundary(reply.content_type)):
            name, part_file = _disposition(headers, "name"), _disposition(headers, "filename")
            if part_file:
                if data is None:  # the first file part is the result, as NVIDIA's client takes it
                    data, filename = content, part_file.replace("\\", "/").rsplit("/", 1)[-1]
            elif name == "params":
                params = _json_object(content, "params")
            elif name == "points" and not params:  # v1 servers: a 'points' text part
                params = _json_object(content, "points")
        return Result(params, data, filename)
    if "json" in content_type:
        body = parse_json(reply)
        return Result(body if isinstance(body, dict) else {"result": body})
    filename = None
    for key, value in reply.headers.items():
        if key.lower() == "content-disposition":
            filename = _disposition({"content-disposition": value}, "filename")
    return Result({}, reply.content, filename or "result.nii.gz")


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event."""

    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into :class:`ServerEvent` objects."""

    def __init__(self) -> None:
        self._event, self._data, self._id = "", [], None

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (without its newline); returns an event when a blank line ends one."""
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # a comment, e.g. a keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again, and after how long.

    * 503 (busy, or the model not loaded yet): retried for every call, since the server refused
      before doing any work; the wait honours ``Retry-After``.
    * The connection could not be opened: retried for every call (nothing was sent).
    * The connection dropped after the request went out: retried only for idempotent calls
      (GET, DELETE, PUT of a known resource). An inference POST or a session PUT may have run,
      so it is not repeated behind the caller's back.
    * Timeouts are not retried: the caller chose how long to wait.
    """

    max_retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def _wait(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** attempt, self.max_backoff_s)

    def after_error(self, call: Call, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or ``None`` to give up."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, Busy):
            return max(error.retry_after or 0.0, self._wait(attempt))  # the server knows best
        return None

    def after_transport_failure(self, call: Call, kind: str, attempt: int) -> float | None:
        """Same for a transport failure of ``kind`` ``"connect"`` (nothing sent) or ``"dropped"``."""
        if attempt >= self.max_retries:
            return None
        if kind == "connect" or (kind == "dropped" and call.idempotent):
            return self._wait(attempt)
        return None
