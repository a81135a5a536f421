"""Slow clients are dropped: request headers must arrive within the header timeout."""

import socket

from helpers import serve_in_thread

from server.app import create_app
from server.settings import Settings


def test_a_connection_that_trickles_its_headers_is_closed_and_a_prompt_one_is_served():
    from conftest import standin_pool

    settings = Settings(config="unused.json", header_timeout_s=0.3)
    options = settings.uvicorn_options()
    assert options["limit_concurrency"] == settings.max_connections
    with serve_in_thread(create_app(settings, standin_pool()), **options) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as slow:
            slow.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            assert slow.recv(1024) == b""  # closed by the server (the socket timeout would raise instead)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as prompt:
            prompt.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := prompt.recv(1024):  # until the server closes the idle connection
                received += chunk
            assert received.startswith(b"HTTP/1.1 200") and received.endswith(b'{"live":true}')
