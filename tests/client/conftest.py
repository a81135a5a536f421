"""The SDK's fixtures: a Client or AsyncClient on the module's ``app``, in-process or over a real socket."""

import httpx
import pytest
from aiaa_client import AsyncClient, Client
from fastapi.testclient import TestClient
from helpers import serve_in_thread

KINDS = ["sync-asgi", "async-asgi", "sync-uvicorn", "async-uvicorn"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def port(app):
    with serve_in_thread(app) as port:
        yield port


@pytest.fixture(params=KINDS)
async def api(request, app):
    """A Client or AsyncClient on the module's ``app`` fixture, in-process or over a loopback socket."""
    kind = request.param
    if kind == "sync-asgi":
        with TestClient(app) as test_client:
            yield Client("http://testserver", http_client=test_client)
    elif kind == "async-asgi":
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as http:
            yield AsyncClient("http://testserver", http_client=http)
    else:
        url = f"http://127.0.0.1:{request.getfixturevalue('port')}"
        if kind == "sync-uvicorn":
            with Client(url, timeout=30) as client:
                yield client
        else:
            async with AsyncClient(url, timeout=30) as client:
                yield client
