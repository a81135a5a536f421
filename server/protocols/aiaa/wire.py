"""AIAA wire format: reading uploads and params, writing multipart replies.

Replies are built in memory and sent with ``Content-Length`` (never chunked:
NVIDIA's Python client reads the raw socket). A multipart reply is exactly one
text part ``params`` followed by one file part with a quoted ``filename``.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from engines.data.io import DICOM_SUFFIX, SUFFIXES, Volume, detect_suffix, read_dicom_series, read_volume
from server.errors import ApiError, BadRequest, PayloadTooLarge

__all__ = ["Upload", "ResultFormat", "decode_upload", "loads_untrusted", "read_body", "read_upload",
           "multipart_reply", "result_format"]

# Field names the clients use for the image, in order of preference.
FILE_FIELDS = ("image", "datapoint", "file", "image0")
# OHIF uploads a DICOM series as one instance per part: image0, image1, ...
SERIES_FIELD = re.compile(r"image(\d+)")
MAX_SERIES_FILES = 4096
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32", "float32")

# What an inference reply may carry (``output=``).
OUTPUTS = ("all", "image", "json", "png")


@dataclass
class Upload:
    """What an inference or session request carried."""

    params: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    filename: str | None = None
    series: list[bytes] = field(default_factory=list)  # DICOM instances, when sent as image0..N

    @property
    def has_image(self) -> bool:
        """Whether an image (one file or a DICOM series) was uploaded."""
        return self.data is not None or bool(self.series)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isascii() or not declared.strip().isdigit() or len(declared) > 20:
        raise BadRequest("invalid Content-Length header")
    if int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")


def _limited(request: Request, limit: int) -> Request:
    """The same request whose body stream stops with 413 past ``limit`` bytes (chunked bodies included)."""
    _check_declared_length(request, limit)
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, for small non-multipart bodies (JSON, arrays), refused with 413 past ``limit`` bytes."""
    chunks = []
    async for chunk in _limited(request, limit).stream():
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream_form(request: Request, limit: int, max_files: int) -> Any:
    """Parse a multipart or url-encoded body as it arrives: file parts spool to disk, nothing is buffered whole."""
    try:
        return await _limited(request, limit).form(max_files=max_files, max_fields=64,
                                                   max_part_size=16 * 1024 * 1024)
    except ApiError:  # over the limit (413) or too slow (408): not a malformed body
        raise
    except Exception as exc:  # python-multipart raises several types for broken bodies
        raise BadRequest(f"malformed multipart body: {exc}") from None


# JSON numbers a request may carry: a number that does not fit a float (or an integer longer
# than this) is refused before Python spends time converting thousands of digits.
_MAX_INT_DIGITS = 30


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} does not fit a float")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def loads_untrusted(raw: str | bytes) -> Any:
    """``json.loads`` for request bodies: finite floats, bounded integers, bounded nesting.

    Raises:
        BadRequest: invalid JSON, too deeply nested, or numbers out of range.
    """
    try:
        return json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"not valid JSON: {exc}") from None


def parse_params(raw: Any) -> dict[str, Any]:
    """``params`` as a dict: missing or null is ``{}``; anything but a JSON object is an error."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        try:
            raw = loads_untrusted(raw)
        except BadRequest as exc:
            raise BadRequest(f"'params' is {exc.detail}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("'params' must be a JSON object")
    return raw


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """Read ``params`` and at most one image from a multipart, url-encoded or empty request body.

    The body is parsed as it streams in (file parts spool to temporary files) and refused with
    413 past ``max_bytes``; the image is read into memory once.
    """
    content_type = request.headers.get("content-type", "")
    if not any(kind in content_type.lower() for kind in ("multipart/form-data", "application/x-www-form-urlencoded")):
        if not await read_body(request, max_bytes):
            return Upload()
        if "json" in content_type.lower():
            raise BadRequest("a JSON body is not supported here: send multipart/form-data with 'params' and an image")
        raise BadRequest(f"expected multipart/form-data, got {content_type or 'no Content-Type'!r}")
    form = await _stream_form(request, max_bytes, MAX_SERIES_FILES)
    try:
        files = [(name, value) for name, value in form.multi_items() if isinstance(value, UploadFile)]
        params_raw: Any = form.get("params")
        if isinstance(params_raw, UploadFile):  # some clients send params as a file part
            params_raw = await params_raw.read()
            files = [(n, f) for n, f in files if n != "params"]
        params = parse_params(params_raw)
        if not files:
            return Upload(params)
        if len(files) > 1:
            numbered = [(SERIES_FIELD.fullmatch(n), f) for n, f in files]
            if not all(match for match, _ in numbered):
                names = sorted({n for n, _ in files})
                raise BadRequest(
                    f"expected one image file (or a DICOM series as image0..N), got {len(files)} "
                    f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                )
            numbered.sort(key=lambda item: int(item[0].group(1)))
            return Upload(params, filename=numbered[0][1].filename, series=[await f.read() for _, f in numbered])
        files.sort(key=lambda item: FILE_FIELDS.index(item[0]) if item[0] in FILE_FIELDS else len(FILE_FIELDS))
        upload = files[0][1]
        return Upload(params, await upload.read(), upload.filename)
    finally:
        await form.close()


def decode_upload(upload: Upload, max_voxels: int) -> tuple[Volume, str, str]:
    """Decode the uploaded image: ``(volume, default result suffix, file name)``.

    Blocking (runs in a worker thread). A DICOM input's results default to NIfTI.
    """
    if upload.series:
        volume, suffix = read_dicom_series(upload.series, max_voxels=max_voxels), DICOM_SUFFIX
    elif upload.data is not None:
        suffix = detect_suffix(upload.filename, upload.data[:1024])
        volume = read_volume(upload.data, upload.filename, max_voxels=max_voxels)
    else:
        raise BadRequest("no image: upload the volume as a multipart file part or pass session_id")
    name = os.path.basename((upload.filename or "image" + suffix).replace("\\", "/"))
    return volume, ".nii.gz" if suffix == DICOM_SUFFIX else suffix, name


@dataclass(frozen=True)
class ResultFormat:
    """How the result mask is encoded."""

    suffix: str
    dtype: str
    compress: bool | None


def result_format(params: dict[str, Any], input_suffix: str) -> ResultFormat:
    """Honour ``result_extension``, ``result_dtype`` and ``result_compress``; default to the input's format."""
    suffix = params.get("result_extension") or input_suffix
    if not isinstance(suffix, str):
        raise BadRequest("'result_extension' must be a string such as '.nii.gz'")
    suffix = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if suffix == ".png":
        suffix = ".nii.gz"  # a 3D mask cannot be a PNG
    if suffix not in SUFFIXES:
        raise BadRequest(f"result_extension {suffix!r} is not supported: use one of {', '.join(SUFFIXES)}")
    dtype = params.get("result_dtype") or "uint8"
    if dtype not in RESULT_DTYPES:
        raise BadRequest(f"result_dtype {dtype!r} is not supported: use one of {', '.join(RESULT_DTYPES)}")
    compress = params.get("result_compress")
    if compress is not None and not isinstance(compress, bool):
        if str(compress).lower() not in ("true", "false", "1", "0"):
            raise BadRequest("'result_compress' must be true or false")
        compress = str(compress).lower() in ("true", "1")
    return ResultFormat(suffix, dtype, compress)


def multipart_reply(params: dict[str, Any], data: bytes, filename: str) -> Response:
    """The AIAA multipart reply: ``params`` JSON part, then the file part; with Content-Length."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(params)}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return Response(content=body, media_type=f"multipart/form-data; boundary={boundary}")


async def read_form(request: Request, max_bytes: int, max_files: int = MAX_SERIES_FILES) -> Any:
    """A multipart form within the byte limit (admin uploads: datasets, models), parsed as it streams in."""
    if "multipart/form-data" not in request.headers.get("content-type", "").lower():
        raise BadRequest("expected multipart/form-data")
    return await _stream_form(request, max_bytes, max_files)
