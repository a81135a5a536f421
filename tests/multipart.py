"""Requests and reply parsers that behave like the real AIAA clients (protocol notes section 2.2)."""

from __future__ import annotations

import cgi
import http.client
import io
import json
import re
from typing import BinaryIO


def parse_like_python_client(body: bytes | BinaryIO, content_type: str,
                             content_length: int | str | None = None) -> tuple[dict, dict]:
    """NVIDIA client_api.py: cgi.FieldStorage over the raw stream; parts with a filename are files.

    ``body`` is the reply's bytes, or its raw socket stream read up to ``content_length``.
    """
    if isinstance(body, bytes):
        body, content_length = io.BytesIO(body), len(body)
    fs = cgi.FieldStorage(fp=body, environ={"REQUEST_METHOD": "POST"},
                          headers={"content-type": content_type, "content-length": str(content_length)},
                          keep_blank_values=True)
    form, files = {}, {}
    for field in fs.list or []:
        if field.filename:
            files[field.filename] = field.value
        else:
            form[field.name] = field.value
    return form, files


def parse_like_cpp_client(body: bytes) -> tuple[dict, bytes]:
    """Poco MultipartReader as the C++ client uses it: boundary guessed from the first line;
    a part is the file if a header contains 'filename="' or 'octet-stream'; the last text part is the JSON."""
    first_line = body.lstrip().split(b"\r\n", 1)[0]
    assert first_line.startswith(b"--"), "body must start with --boundary"
    boundary = first_line[2:]
    parts = body.split(b"--" + boundary)
    text, file_data = None, None
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        content = content[:-2] if content.endswith(b"\r\n") else content
        if b'filename="' in head or b"octet-stream" in head:
            file_data = content
        else:
            text = content
    return json.loads(text), file_data


def boundary_of(content_type: str) -> str:
    match = re.search(r"boundary=([^;\s]+)", content_type)
    assert match, content_type
    return match.group(1)


PY_BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"


def python_client_body(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    """client_api.py's encoder: fixed boundary with '$', fields first, then files, extra CRLF at the end."""
    lines = []
    for key, value in fields.items():
        lines += [f"--{PY_BOUNDARY}", f'Content-Disposition: form-data; name="{key}"', "", value]
    body = "\r\n".join(lines).encode() + b"\r\n" if lines else b""
    for key, (filename, data) in files.items():
        head = "\r\n".join([f"--{PY_BOUNDARY}",
                            f'Content-Disposition: form-data; name="{key}"; filename="{filename}"',
                            "Content-Type: application/octet-stream", "", ""]).encode()
        body += head + data + b"\r\n"
    return body + f"--{PY_BOUNDARY}--\r\n\r\n".encode()


def python_client_call(port: int, method: str, selector: str, body: bytes):
    """Send ``body`` the way client_api.py does (http.client, lower-case headers, no compression)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, selector, skip_accept_encoding=True)
    conn.putheader("content-type", f"multipart/form-data; boundary={PY_BOUNDARY}")
    conn.putheader("content-length", str(len(body)))
    conn.putheader("Accept-Encoding", "identity")
    conn.endheaders()
    conn.send(body)
    return conn, conn.getresponse()
