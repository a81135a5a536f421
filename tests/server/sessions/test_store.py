import json
import time

import numpy as np
from conftest import standin_pool
from fastapi.testclient import TestClient
from helpers import dice, dicom_series_files, phantom, phantom_points
from multipart import parse_like_cpp_client, parse_like_python_client

from engines.data.io import read_dicom_series, read_volume, write_volume
from server.app import create_app


def upload(client, path="/session/?expiry=0"):
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    reply = client.put(path, files={"image": ("/home/me/image.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    return reply.json(), mask


def test_session_lifecycle_and_inference_without_upload(client):
    info, mask = upload(client)
    sid = info["session_id"]
    assert isinstance(sid, str) and info["session_info"]["image"]["shape"] == [40, 48, 32]
    assert info["session_info"]["name"] == "image.nii.gz"
    assert client.get(f"/session/{sid}").json()["session_id"] == sid
    reply = client.post(f"/v1/dextr3d?model=annotation_test&session_id={sid}",
                        data={"params": json.dumps({"points": phantom_points(mask)})})
    assert reply.status_code == 200, reply.text
    assert dice(read_volume(parse_like_cpp_client(reply.content)[1], "r.nii.gz").array, mask) > 0.95
    # the C++ client sends no params part at all with a session
    assert client.post(f"/v1/segmentation?model=segmentation_test&session_id={sid}").status_code == 200
    assert client.delete(f"/session/{sid}").status_code == 200
    assert client.get(f"/session/{sid}").status_code == 404
    assert client.delete(f"/session/{sid}").status_code == 404


def test_unknown_session_is_440_on_inference_and_404_on_get(client):
    reply = client.post("/v1/segmentation?model=segmentation_test&session_id=nope", data={"params": "{}"})
    assert reply.status_code == 440 and "nope" in reply.json()["detail"]
    assert client.get("/session/nope").status_code == 404


def test_put_without_trailing_slash_and_without_expiry(client):
    info, _ = upload(client, "/session")
    assert info["session_info"]["expiry"] == 3600


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_expiry_is_capped_and_expired_sessions_answer_440(client):
    clock = Clock()
    client.app.state.sessions.clock = clock
    client.app.state.sessions.max_expiry_s = 1
    info, _ = upload(client, "/session/?expiry=100000")
    assert info["session_info"]["expiry"] == 1
    clock.now += 1.2
    sid = info["session_id"]
    assert client.post(f"/v1/segmentation?model=segmentation_test&session_id={sid}").status_code == 440
    assert client.get(f"/session/{sid}").status_code == 404


def test_memory_budget_evicts_oldest_session(client):
    store = client.app.state.sessions
    first, _ = upload(client)
    store.memory_budget = int((first["session_info"]["image"]["shape"][0] * 48 * 32 * 4 + store.overhead_bytes) * 1.5)
    second, _ = upload(client)
    assert client.get(f"/session/{first['session_id']}").status_code == 404
    assert client.get(f"/session/{second['session_id']}").status_code == 200
    store.memory_budget = 100
    volume, _ = phantom()
    too_big = client.put("/session/", files={"image": ("x.nii.gz", write_volume(volume.array, volume.geometry))})
    assert too_big.status_code == 413


def test_clicks_never_modify_the_session_volume(client):
    info, mask = upload(client)
    sid = info["session_id"]
    before = client.app.state.sessions.get(sid).volume.array.copy()
    for _ in range(2):
        client.post(f"/v1/dextr3d?model=annotation_test&session_id={sid}",
                    data={"params": json.dumps({"points": phantom_points(mask)})})
        client.post(f"/v1/segmentation?model=segmentation_test&session_id={sid}")
    assert (client.app.state.sessions.get(sid).volume.array == before).all()


def test_dicom_series_uploaded_as_image0_to_n_like_ohif(settings):
    files = dicom_series_files()
    reference = read_dicom_series(files)
    parts = [(f"image{i}", (f"{i}.dcm", data, "application/dicom")) for i, data in enumerate(files)]
    parts.append(("params", (None, "null")))
    roomy = settings.model_copy(update={"max_upload_bytes": 64 * 1024 * 1024, "max_voxels": 512 * 512 * 64})
    with TestClient(create_app(roomy, standin_pool())) as client:
        reply = client.put("/session/?expiry=0&save_as=.nii", files=parts)
        assert reply.status_code == 200, reply.text
        info = reply.json()
        assert info["session_info"]["image"]["shape"] == [512, 512, 20]
        points = [[200, 250, 2], [300, 250, 2], [250, 200, 2], [250, 300, 2], [250, 250, 0], [250, 250, 19]]
        reply = client.post(f"/v1/dextr3d?model=annotation_test&session_id={info['session_id']}",
                            data={"params": json.dumps({"points": points})})
        assert reply.status_code == 200, reply.text
        _, files_back = parse_like_python_client(reply.content, reply.headers["content-type"])
        (filename, result), = files_back.items()
        assert filename.endswith(".nii.gz")  # a DICOM input's mask comes back as NIfTI
        mask = read_volume(result, filename)
        assert mask.shape == reference.shape and np.any(mask.array)
        np.testing.assert_allclose(mask.geometry.origin, reference.geometry.origin, atol=1e-3)
        np.testing.assert_allclose(mask.geometry.spacing, reference.geometry.spacing)


def test_sessions_expire_on_the_monotonic_clock_not_the_wall_clock(monkeypatch):
    from engines.data.io import Volume
    from server.sessions.store import SessionStore

    clock = Clock()
    store = SessionStore(60, 600, 1 << 20, clock=clock)
    volume, _ = phantom()
    session = store.create(Volume(volume.array[:8, :8, :8].copy(), volume.geometry), ".nii.gz", "x")
    monkeypatch.setattr(time, "time", lambda: 10**10)  # the wall clock jumps years ahead (NTP, an administrator)
    assert store.get(session.id) is not None
    clock.now += 59
    assert store.get(session.id) is not None  # used: expiry counts from here
    clock.now += 59
    assert store.get(session.id, touch=False) is not None
    assert store.get(session.id, touch=False).info()["session_info"]["expires_in"] == 1
    clock.now += 2
    assert store.get(session.id) is None
