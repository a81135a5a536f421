"""Bounded work: per-model voxel and byte limits, sessions bounded by count and real cost, streamed uploads."""

import pytest
from fastapi.testclient import TestClient
from helpers import phantom

from engines.data.io import write_volume
from server.app import create_app
from server.settings import ModelLimits, Settings, default_max_voxels

SEGMENT = "/v1/segmentation?model=segmentation_test&output=json"


def _image() -> bytes:
    volume, _ = phantom()  # 40 x 48 x 32 = 61440 voxels
    return write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")


@pytest.fixture()
def limited():
    from conftest import standin_pool

    settings = Settings(config="unused.json", max_voxels=200_000, max_sessions=2, session_overhead_bytes=1000,
                        model_limits={"segmentation_test": ModelLimits(max_voxels=10_000),
                                      "annotation_test": ModelLimits(max_upload_bytes=1000)})
    with TestClient(create_app(settings, standin_pool())) as client:
        yield client


def test_the_default_voxel_limit_fits_the_machine():
    assert 8 * 1024**2 <= default_max_voxels() <= 128 * 1024**2 < 268_435_456
    assert Settings(config="x").max_voxels == default_max_voxels()


def test_a_model_s_own_voxel_limit_refuses_uploads_and_sessions(limited):
    files = {"image": ("a.nii.gz", _image())}
    reply = limited.post(SEGMENT, files=files)
    assert reply.status_code == 413 and "limit is 10000" in reply.json()["detail"]
    session = limited.put("/session/", files=files).json()["session_id"]  # the server's limit: accepted
    reply = limited.post(f"{SEGMENT}&session_id={session}")
    assert reply.status_code == 413 and "accepts at most 10000" in reply.json()["detail"]


def test_a_model_s_own_byte_limit(limited):
    reply = limited.post("/v1/dextr3d?model=annotation_test", files={"image": ("a.nii.gz", _image())})
    assert reply.status_code == 413 and "limit of 1000 bytes" in reply.json()["detail"]


def test_a_chunked_body_without_length_stops_at_the_limit(limited):
    def chunks():  # a generator: sent chunked, with no Content-Length
        for _ in range(32):
            yield b"x" * 65536

    reply = limited.post("/v1/dextr3d?model=annotation_test", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=abc"})
    assert reply.status_code == 413


def test_sessions_are_bounded_by_count_and_count_their_overhead(limited):
    files = {"image": ("a.nii.gz", _image())}
    ids = [limited.put("/session/", files=files).json()["session_id"] for _ in range(3)]
    assert limited.get(f"/session/{ids[0]}").status_code == 404  # the least recently used went first
    assert all(limited.get(f"/session/{i}").status_code == 200 for i in ids[1:])
    stats = limited.app.state.sessions.stats()
    assert stats["count"] == 2 and stats["bytes"] == 2 * (61440 * 4 + 1000)


def test_invalid_content_length_is_400(limited):
    reply = limited.post("/v1/dextr3d?model=annotation_test", content=b"abc",
                         headers={"content-type": "multipart/form-data; boundary=abc", "content-length": "3abc"})
    assert reply.status_code == 400
