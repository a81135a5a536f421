"""Byte-level compatibility over a real socket, the way NVIDIA's clients talk to the server."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import standin_pool
from helpers import dice, phantom, phantom_points, serve_in_thread
from multipart import parse_like_cpp_client, parse_like_python_client, python_client_body, python_client_call

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings

@pytest.fixture(scope="module")
def server():
    with serve_in_thread(create_app(Settings(config="unused.json"), standin_pool())) as port:
        yield port


def test_python_client_dextr3d_parsed_from_the_raw_socket(server):
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    body = python_client_body({"params": json.dumps({"points": phantom_points(mask)})},
                              {"datapoint": ("/tmp/tmpab12cd.nii.gz", data)})
    conn, response = python_client_call(server, "POST", "/v1/dextr3d?model=annotation_test", body)
    assert response.status == 200
    assert response.getheader("transfer-encoding") is None and response.getheader("content-length")
    content_type = response.getheader("content-type")
    assert "multipart" in content_type
    # exactly what client_api.parse_multipart does: cgi.FieldStorage on response.fp
    form, files = parse_like_python_client(response.fp, content_type, response.getheader("content-length"))
    conn.close()
    assert "points" in json.loads(form["params"])
    first_name = next(iter(files))
    assert dice(read_volume(files[first_name], first_name).array, mask) > 0.95


def test_python_client_session_put_is_plain_json(server):
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    conn, response = python_client_call(server, "PUT", "/session/?expiry=0",
                                        python_client_body({}, {"image": ("test-data/image.nii.gz", data)}))
    assert response.status == 200
    assert json.loads(response.read())["session_id"]
    conn.close()


def test_http_1_0_request_from_the_cpp_client(server):
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    boundary = "MIME_boundary_01234567"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n"
            f"{json.dumps({'points': phantom_points(mask)})}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"tmpimage.nii.gz\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = (f"POST /v1/dextr3d?model=annotation_test HTTP/1.0\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(request + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, reply = raw.partition(b"\r\n\r\n")
    status_line, *headers = head.decode().split("\r\n")
    assert status_line.split()[1] == "200"
    header_map = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in headers}
    assert "transfer-encoding" not in header_map and int(header_map["content-length"]) == len(reply)
    params, file_data = parse_like_cpp_client(reply)
    assert len(params["points"]) == 6
    assert dice(read_volume(file_data, "r.nii.gz").array, mask) > 0.95


def test_error_reply_is_json_over_the_wire(server):
    conn, response = python_client_call(server, "POST", "/v1/dextr3d?model=missing", python_client_body({}, {}))
    assert response.status == 404 and json.loads(response.read())["detail"]
    conn.close()
