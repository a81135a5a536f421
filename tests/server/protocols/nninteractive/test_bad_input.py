"""Bad input at the nnInteractive door: a clear 4xx, and the lease exactly as it was."""

from __future__ import annotations

import json
import struct

import blosc2
import httpx
import numpy as np
import pytest
from helpers import serve_in_thread
from nnint_standin import image_4d, make_app
from nnInteractive.inference.remote.serialization import pack_array

from server.protocols.nninteractive import wire
from server.protocols.nninteractive.leases import DoorSettings

SHAPE = (40, 48, 32)


@pytest.fixture()
def lease(server):
    """An httpx client holding a lease with an image and a target buffer, after one click."""
    with httpx.Client(base_url=server.url) as http:
        token = http.post("/claim").json()["lease_token"]
        http.headers["X-Lease-Token"] = token
        post_array(http, "/set_image", image_4d(), {"image_properties": {}}).raise_for_status()
        http.post("/set_target_buffer", json={"shape": list(SHAPE), "dtype": "uint8"}).raise_for_status()
        http.post("/add_point_interaction", json={"coordinates": [18, 25, 15], "include_interaction": True}
                  ).raise_for_status()
        yield http, server.state(token), server


def post_array(http, path, array_or_bytes, meta):
    body = array_or_bytes if isinstance(array_or_bytes, bytes) else pack_array(array_or_bytes)
    return http.post(path, content=body, headers={"X-Meta": json.dumps(meta),
                                                  "Content-Type": "application/octet-stream"})


def snapshot(state, engine):
    """Everything a call could change on a lease."""
    mask = state.interaction.mask if state.interaction is not None else None
    return (state.shape, state.target, len(state.pending), state.interaction.steps if state.interaction else None,
            state.interaction.prompts if state.interaction else None, None if mask is None else mask.tobytes(),
            state.session is not None, engine.steps, engine.prepared)


def header(shape, dtype="uint8", nchunks=1) -> bytes:
    name = dtype.encode()
    return (struct.pack("<4sBBBB", b"NNIA", 1, 1, len(shape), len(name)) + name
            + struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<I", nchunks))


def assert_refused(response, status, state, engine, before):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    assert snapshot(state, engine) == before


def test_decompression_bombs_are_refused_before_anything_is_decompressed(lease, monkeypatch):
    http, state, server = lease
    before = snapshot(state, server.engine)

    def never(*args, **kwargs):
        raise AssertionError("decompressed a body that declared too much")

    monkeypatch.setattr(wire.blosc2, "decompress2", never)
    # declares 2048^3 voxels in a few dozen bytes
    bomb = header((1, 2048, 2048, 2048)) + struct.pack("<QQ", 2048 ** 3, 16) + b"\0" * 16
    assert_refused(post_array(http, "/set_image", bomb, {}), 413, state, server.engine, before)
    # a scribble body whose shape differs from the interaction box
    meta = {"include_interaction": True, "interaction_bbox": [[0, 4], [0, 4], [0, 1]]}
    big = header((4, 4, 100)) + struct.pack("<QQ", 400, 16) + b"\0" * 16
    assert_refused(post_array(http, "/add_scribble_interaction", big, meta), 400, state, server.engine, before)
    # a frame that holds 10 MB of zeros in a body declaring 16 voxels
    frame = blosc2.compress2(bytes(10_000_000), typesize=1)
    for ulen in (16, 10_000_000):
        body = header((4, 4, 1)) + struct.pack("<QQ", ulen, len(frame)) + frame
        assert_refused(post_array(http, "/add_scribble_interaction", body, meta), 400, state, server.engine, before)


@pytest.mark.parametrize("body", [b"", b"garbage", b"NNIA" + bytes(3), header((1, 4, 4, 4), "object"),
                                  header((1, 4, 4, 4)) + struct.pack("<QQ", 64, 999) + b"\0" * 8,
                                  header((1, 0, 4, 4)), header((1, 2, 2, 2)) + struct.pack("<QQ", 8, 12) + bytes(12)])
def test_a_malformed_array_body_is_400(lease, body):
    http, state, server = lease
    before = snapshot(state, server.engine)
    assert_refused(post_array(http, "/set_image", body, {}), 400, state, server.engine, before)


def test_an_image_must_be_one_channel_4d(lease):
    http, state, server = lease
    before = snapshot(state, server.engine)
    for image in (np.zeros((2, 8, 8, 8), np.float32), np.zeros((8, 8, 8), np.float32)):
        assert_refused(post_array(http, "/set_image", image, {}), 400, state, server.engine, before)
    assert_refused(post_array(http, "/set_image", image_4d(), {"image_properties": {"spacing": [1, -1, 1]}}), 400,
                   state, server.engine, before)


def test_a_target_buffer_of_the_wrong_shape_or_dtype_is_refused(lease):
    http, state, server = lease
    before = snapshot(state, server.engine)
    for body, status in (({"shape": [40, 48, 31], "dtype": "uint8"}, 400), ({"shape": list(SHAPE), "dtype": "str"}, 400),
                         ({"shape": list(SHAPE), "dtype": "nonsense"}, 400), ({"shape": [40, 48], "dtype": "uint8"}, 422),
                         ({"shape": list(SHAPE)}, 422)):
        assert_refused(http.post("/set_target_buffer", json=body), status, state, server.engine, before)


@pytest.mark.parametrize("path,method", [("/heartbeat", "post"), ("/lease_status", "get"), ("/set_image", "post"),
                                         ("/set_target_buffer", "post"), ("/reset_interactions", "post"),
                                         ("/undo", "post"), ("/predict", "post"), ("/add_point_interaction", "post"),
                                         ("/add_lasso_interaction", "post")])
def test_an_unknown_or_missing_lease_is_410(lease, path, method):
    http, state, server = lease
    before = snapshot(state, server.engine)
    for headers in ({"X-Lease-Token": "0" * 32}, {"X-Lease-Token": ""}):
        response = http.request(method.upper(), path, headers=headers, json={})
        assert_refused(response, 410, state, server.engine, before)


def test_interactions_before_an_image_are_409(server):
    with httpx.Client(base_url=server.url) as http:
        http.headers["X-Lease-Token"] = http.post("/claim").json()["lease_token"]
        seg = pack_array(np.zeros(SHAPE, np.uint8))
        calls = [http.post("/add_point_interaction", json={"coordinates": [1, 2, 3], "include_interaction": True}),
                 http.post("/add_bbox_interaction", json={"bbox_coords": [[1, 4], [1, 4], [1, 2]],
                                                          "include_interaction": True}),
                 post_array(http, "/add_scribble_interaction", seg, {"include_interaction": True}),
                 post_array(http, "/add_lasso_interaction", seg, {"include_interaction": True}),
                 post_array(http, "/add_initial_seg_interaction", seg, {}),
                 http.post("/predict", json={}),
                 http.post("/set_target_buffer", json={"shape": list(SHAPE), "dtype": "uint8"})]
        for response in calls:
            assert response.status_code == 409, response.text
        assert server.engine.steps == 0
        # nothing to undo and nothing to reset is no error: the client's undo() then returns False
        assert json.loads(http.post("/undo", json={}).headers["X-Meta"]) == {"ran_prediction": False, "bbox": None}
        assert http.post("/reset_interactions", json={}).status_code == 200


def test_prompts_outside_the_volume_empty_or_malformed_are_refused(lease):
    http, state, server = lease
    before = snapshot(state, server.engine)
    point = "/add_point_interaction"
    box = "/add_bbox_interaction"
    for path, body, status in (
            (point, {"coordinates": [40, 10, 10], "include_interaction": True}, 400),
            (point, {"coordinates": [-1, 10, 10], "include_interaction": False}, 400),
            (point, {"coordinates": [1, 2], "include_interaction": True}, 422),
            (point, {"coordinates": [1, 2, 3]}, 422),
            (box, {"bbox_coords": [[50, 60], [0, 10], [0, 1]], "include_interaction": True}, 400),
            (box, {"bbox_coords": [[5, 5], [0, 10], [0, 1]], "include_interaction": True}, 400),
            (box, {"bbox_coords": [[5, 9], [0, 10]], "include_interaction": True}, 422),
            (box, {"bbox_coords": [[5, 9], [0, 10], [3]], "include_interaction": True}, 400)):
        assert_refused(http.post(path, json=body), status, state, server.engine, before)
    for kind in ("scribble", "lasso"):
        path = f"/add_{kind}_interaction"
        empty = np.zeros(SHAPE, np.uint8)
        assert_refused(post_array(http, path, empty, {"include_interaction": True}), 400, state, server.engine, before)
        one = np.ones((2, 2, 1), np.uint8)
        for meta in ({"include_interaction": True, "interaction_bbox": [[39, 41], [0, 2], [0, 1]]},
                     {"include_interaction": True, "interaction_bbox": [[0, 3], [0, 2], [0, 1]]},
                     {"include_interaction": True, "interaction_bbox": "everywhere"},
                     {"interaction_bbox": [[0, 2], [0, 2], [0, 1]]},
                     {"include_interaction": "yes", "interaction_bbox": [[0, 2], [0, 2], [0, 1]]}):
            assert_refused(post_array(http, path, one, meta), 400, state, server.engine, before)
        response = http.post(path, content=pack_array(one), headers={"X-Meta": "{not json"})
        assert_refused(response, 400, state, server.engine, before)
    wrong = np.zeros((40, 48, 31), np.uint8)
    assert_refused(post_array(http, "/add_initial_seg_interaction", wrong, {}), 400, state, server.engine, before)


def test_an_image_beyond_the_memory_budget_is_413():
    app, _, engine = make_app(DoorSettings(), memory=200_000)
    with serve_in_thread(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}/nninteractive") as http:
        http.headers["X-Lease-Token"] = http.post("/claim").json()["lease_token"]
        response = post_array(http, "/set_image", image_4d(), {})
        assert response.status_code == 413 and engine.prepared == 0
        assert post_array(http, "/set_image", image_4d(shape=(20, 20, 20), center=(10, 10, 10)), {}).status_code == 200
