"""An app with the stand-in engines plus two stand-in interactive models."""

import pytest
from conftest import standin_pool
from fastapi.testclient import TestClient
from helpers import phantom, standin_interactive_engine

from engines.data.io import write_volume
from server.app import create_app


def interactive_pool():
    pool = standin_pool()
    pool.add(standin_interactive_engine("interactive_test"))
    pool.add(standin_interactive_engine("interactive_other"))
    return pool


@pytest.fixture()
def app(settings):
    return create_app(settings, interactive_pool())


@pytest.fixture()
def iclient(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def session(iclient):
    """A session holding the phantom; yields (session_id, truth mask)."""
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    reply = iclient.put("/session/", files={"image": ("image.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"], mask
