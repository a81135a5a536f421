"""The real nninteractive-client (PyPI 2.6.0) against the app over uvicorn: every call it makes."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from helpers import serve_in_thread
from nnint_standin import MODEL, image_4d, make_app
from nnInteractive.inference.remote import (
    ServerAtCapacityError,
    SessionExpiredError,
    nnInteractiveRemoteInferenceSession,
)
from pydantic import SecretStr

from server.protocols.nninteractive.leases import DoorSettings, LeaseGone


def connect(server, image=None, dtype=np.uint8, **kwargs):
    session = nnInteractiveRemoteInferenceSession(server.url, **kwargs)
    if image is not None:
        session.set_image(image, {"spacing": [0.8, 0.9, 1.5]})
        session.set_target_buffer(np.zeros(image.shape[1:], dtype))
    return session


def server_mask(server, session) -> np.ndarray:
    mask = server.state(session._lease_token).interaction.mask
    return np.zeros(session.target_buffer.shape, bool) if mask is None else mask


def test_every_call_of_the_client_keeps_its_buffer_equal_to_the_servers_mask(server):
    image = image_4d()
    with connect(server) as session:
        assert session.ping()
        assert session.supported_interactions == {"scribble": True, "lasso": True, "points": True,
                                                  "bbox2d": True, "bbox3d": True}
        assert session.supports_undo and session.supports_initial_label
        assert session.channel_mapping["points"] == (1, 2) and session.num_interaction_channels == 4
        assert session.idle_timeout_seconds == 600 and session.liveness_timeout_seconds == 60

        session.set_image(image, {"spacing": np.array([0.8, 0.9, 1.5])})
        assert session.original_image_shape == (1, 40, 48, 32)
        assert server.engine.prepared == 1
        buffer = np.zeros((40, 48, 32), np.uint8)
        session.set_target_buffer(buffer)
        session.set_do_autozoom(False)
        assert session.do_autozoom is False and server.state(session._lease_token).do_autozoom is False

        box = session.add_point_interaction([18, 25, 15], include_interaction=True)
        assert box is not None and buffer.any()
        lo, hi = np.array(box).T
        assert buffer[18, 25, 15] == 1
        np.testing.assert_array_equal([lo, hi], [np.argwhere(buffer).min(0), np.argwhere(buffer).max(0) + 1])  # just what changed
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        session.add_point_interaction([18, 25, 15], include_interaction=False)
        assert buffer[18, 25, 15] == 0
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        session.add_bbox_interaction([[12, 25], [18, 33], [15, 16]], include_interaction=True)  # a 2D box
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        scribble = np.zeros((5, 5, 1), np.uint8)
        scribble[1:4, 2, 0] = 1
        session.add_scribble_interaction(scribble, include_interaction=True,
                                         interaction_bbox=[[16, 21], [22, 27], [14, 15]])
        prompt = server.state(session._lease_token).interaction.prompts[-1]
        assert prompt.kind == "scribble" and sorted(map(tuple, prompt.voxels)) == [(17, 24, 14), (18, 24, 14),
                                                                                   (19, 24, 14)]
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        lasso = np.zeros(buffer.shape, np.uint8)
        lasso[14:22, 20:30, 15] = 1
        session.add_lasso_interaction(lasso, include_interaction=True)
        assert server.state(session._lease_token).interaction.prompts[-1].kind == "lasso"
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        # queued without a prediction, then /predict
        steps = server.engine.steps
        assert session.add_point_interaction([20, 26, 16], include_interaction=True, run_prediction=False) is None
        assert server.engine.steps == steps and len(server.state(session._lease_token).pending) == 1
        session._predict()  # the box of what changed, None when the prediction changed nothing
        assert server.engine.steps > steps and not server.state(session._lease_token).pending
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))
        steps = server.engine.steps
        assert session._predict() is None and server.engine.steps == steps  # nothing queued: nothing ran

        session.reset_interactions()
        assert not buffer.any() and server.state(session._lease_token).interaction.mask is None

        seg = np.zeros(buffer.shape, np.uint8)
        seg[15:22, 22:29, 12:18] = 1
        assert session.add_initial_seg_interaction(seg) is None  # the client copies it; nothing comes back
        np.testing.assert_array_equal(buffer, seg)
        np.testing.assert_array_equal(server_mask(server, session), seg > 0)
        assert session.add_initial_seg_interaction(seg, run_prediction=True) is not None  # the model refines it
        np.testing.assert_array_equal(buffer > 0, server_mask(server, session))

        assert 0 < session.heartbeat() <= 600
        status = session.lease_status()
        assert status["idle_timeout_seconds"] == 600 and 0 < status["remaining_seconds"] <= 600
        token = session._lease_token
    assert len(server.door.leases) == 0  # close() released the lease
    with pytest.raises(LeaseGone):
        server.door.leases.peek(token, MODEL)


def test_bool_and_int16_buffers_get_their_own_dtype(server):
    for dtype in (bool, np.int16):
        with connect(server, image_4d(), dtype=dtype) as session:
            session.add_point_interaction([18, 25, 15], include_interaction=True)
            assert session.target_buffer.dtype == dtype and session.target_buffer[18, 25, 15]


def test_undo_goes_back_exactly_step_by_step_and_then_reports_nothing(server):
    with connect(server, image_4d()) as session:
        buffer = session.target_buffer
        history = [buffer.copy()]
        for coords, positive in (([18, 25, 15], True), ([12, 25, 15], False), ([22, 28, 16], True)):
            session.add_point_interaction(coords, include_interaction=positive)
            history.append(buffer.copy())
        session.add_bbox_interaction([[10, 27], [15, 36], [15, 16]], include_interaction=True)
        history.append(buffer.copy())
        assert len({h.tobytes() for h in history}) >= 3  # the steps did change the mask
        while len(history) > 1:
            history.pop()
            assert session.undo() is True
            np.testing.assert_array_equal(buffer, history[-1])
            np.testing.assert_array_equal(buffer > 0, server_mask(server, session))
        assert session.undo() is False
        np.testing.assert_array_equal(buffer, history[0])

        session.add_point_interaction([18, 25, 15], include_interaction=True, run_prediction=False)
        assert session.undo() is True and not server.state(session._lease_token).pending
        assert session._predict() is None


def test_two_leases_at_once_keep_their_own_images_and_masks(server):
    first = connect(server, image_4d())
    second = connect(server, image_4d(center=(22, 20, 14)))
    try:
        assert len(server.door.leases) == 2
        errors = []

        def click(session, coords):
            try:
                for _ in range(3):
                    session.add_point_interaction(coords, include_interaction=True)
            except (httpx.HTTPError, RuntimeError) as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=click, args=a) for a in ((first, [18, 25, 15]), (second, [22, 20, 14]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for session in (first, second):
            np.testing.assert_array_equal(session.target_buffer > 0, server_mask(server, session))
            assert server.state(session._lease_token).interaction.steps == 3
        assert not np.array_equal(first.target_buffer, second.target_buffer)
        first.reset_interactions()
        assert second.target_buffer.any() and server.state(second._lease_token).interaction.steps == 3
    finally:
        first.close()
        second.close()


def test_a_third_viewer_gets_server_at_capacity_until_one_leaves(server):
    first, second = connect(server), connect(server)
    with pytest.raises(ServerAtCapacityError):
        connect(server)
    first.close()
    third = connect(server)
    third.close()
    second.close()


def test_an_idle_lease_expires_even_with_heartbeats_and_a_dead_one_sooner(server):
    with connect(server, image_4d()) as session:
        server.clock.advance(50)
        session.heartbeat()  # alive...
        server.clock.advance(50)
        assert session.lease_status()["remaining_seconds"] == pytest.approx(500)  # ...but heartbeats are not work
        session.add_point_interaction([18, 25, 15], include_interaction=True)
        assert session.lease_status()["remaining_seconds"] == pytest.approx(600)
        for _ in range(10):  # 550 s of heartbeats without work
            server.clock.advance(55)
            session.heartbeat()
        server.clock.advance(55)  # 605 s since the last click
        with pytest.raises(SessionExpiredError):
            session.heartbeat()
        with pytest.raises(SessionExpiredError):
            session.add_point_interaction([18, 25, 15], include_interaction=True)

    with connect(server, image_4d()) as session:
        server.clock.advance(61)  # no sign of life for longer than the liveness timeout
        with pytest.raises(SessionExpiredError):
            session.lease_status()
        assert len(server.door.leases) == 0


def test_a_named_model_has_its_own_base_url(server):
    with nnInteractiveRemoteInferenceSession(f"{server.url}/{MODEL}") as session:
        session.set_image(image_4d())
        session.set_target_buffer(np.zeros((40, 48, 32), np.uint8))
        session.add_point_interaction([18, 25, 15], include_interaction=True)
        assert session.target_buffer[18, 25, 15] == 1
        # a model the pool does not have is 404 on every route
        assert httpx.post(f"{server.url}/unknown/heartbeat",
                          headers={"X-Lease-Token": session._lease_token}).status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as info:
        nnInteractiveRemoteInferenceSession(f"{server.url}/no_such_model")
    assert info.value.response.status_code == 404


def test_the_bearer_key_is_required_when_configured(monkeypatch):
    monkeypatch.delenv("NN_INTERACTIVE_API_KEY", raising=False)
    app, _, _ = make_app(DoorSettings(api_key=SecretStr("s3cret")))
    with serve_in_thread(app) as port:
        url = f"http://127.0.0.1:{port}/nninteractive"
        for key in (None, "wrong"):
            with pytest.raises(httpx.HTTPStatusError) as info:
                nnInteractiveRemoteInferenceSession(url, api_key=key)
            assert info.value.response.status_code == 401
        assert httpx.get(f"{url}/healthz").json() == {"ok": True}  # the liveness probe needs no key
        assert httpx.get(f"{url}/capabilities").status_code == 401
        with nnInteractiveRemoteInferenceSession(url, api_key="s3cret") as session:
            session.set_image(image_4d())
            session.set_target_buffer(np.zeros((40, 48, 32), np.uint8))
            session.add_point_interaction([18, 25, 15], include_interaction=True)
            assert session.target_buffer[18, 25, 15] == 1
        monkeypatch.setenv("NN_INTERACTIVE_API_KEY", "s3cret")  # the client's own fallback
        nnInteractiveRemoteInferenceSession(url).close()


def test_a_model_that_is_not_interactive_is_refused():
    from helpers import bright_segmentation_net, segmentation_config

    from engines.config.model import ModelConfig
    from engines.tasks.segmentation import SegmentationEngine

    segmentation = SegmentationEngine("segmentation_test", ModelConfig.model_validate(segmentation_config()),
                                      bright_segmentation_net)
    app, _, _ = make_app(DoorSettings(), engines=[segmentation])
    with serve_in_thread(app) as port:
        reply = httpx.post(f"http://127.0.0.1:{port}/nninteractive/segmentation_test/claim")
        assert reply.status_code == 400 and reply.json()["error"] == "WrongModelTypeError"


def test_a_leases_image_is_a_session_in_the_shared_memory_budget(server):
    sessions = server.app.state.sessions
    with connect(server, image_4d()) as session:
        session.add_point_interaction([18, 25, 15], include_interaction=True)
        held = server.state(session._lease_token).session
        assert sessions.stats()["count"] == 1 and sessions.get(held.id) is held
        assert held.prepared is not None and held.interaction.state.steps == 1
        assert sessions.stats()["bytes"] == held.nbytes() + sessions.overhead_bytes and held.nbytes() > held.volume.nbytes * 2
        # the same object is visible through our own interactive API
        assert httpx.get(f"{server.url.rsplit('/', 1)[0]}/v1/interactive/{held.id}").json()["steps"] == 1
        sessions.delete(held.id)  # evicted, as the least recently used session, to make room for others
        with pytest.raises(SessionExpiredError, match="evicted"):
            session.add_point_interaction([18, 25, 15], include_interaction=True)
    with connect(server, image_4d()) as session:
        pass
    assert sessions.stats()["count"] == 0  # a released lease frees its session
