"""AIAA deepgrow as NVIDIA's clients send it: listing, clicks, sessions, /v1/inference dispatch, bad input."""

import json

import pytest
from conftest import interactive_pool
from helpers import dice, phantom, serve_in_thread
from multipart import parse_like_cpp_client, parse_like_python_client, python_client_body, python_client_call

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings

CLICKS = {"foreground": [[18, 25, 15]], "background": [], "current_point": [18, 25, 15]}


def nifti(volume) -> bytes:
    return write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")


@pytest.fixture(scope="module")
def port():
    with serve_in_thread(create_app(Settings(config="unused.json"), interactive_pool())) as p:
        yield p


def test_the_interactive_model_is_listed_as_deepgrow_3d(iclient):
    models = iclient.get("/v1/models?type=deepgrow").json()
    assert {m["name"] for m in models} == {"interactive_test", "interactive_other"}
    one = iclient.get("/v1/models?model=interactive_test").json()
    assert one["type"] == "deepgrow" and one["deepgrow"] == "3D" and isinstance(one["version"], str)
    assert {"name", "labels", "description"} <= set(one)


def test_python_client_deepgrow_over_the_raw_socket(port):
    volume, mask = phantom()
    body = python_client_body({"params": json.dumps(CLICKS)}, {"datapoint": ("/tmp/tmpab12cd.nii.gz", nifti(volume))})
    conn, response = python_client_call(port, "POST", "/v1/deepgrow?model=interactive_test", body)
    assert response.status == 200 and response.getheader("transfer-encoding") is None
    form, files = parse_like_python_client(response, response.getheader("content-type"))
    conn.close()
    params = json.loads(form["params"])
    (name, data), = files.items()
    result = read_volume(data, name)
    assert result.shape == volume.shape and dice(result.array, mask) > 0.85
    (i0, i1), (j0, j1), (k0, k1) = params["crop"]
    assert result.array[i0:i1, j0:j1, k0:k1].sum() == result.array.sum()  # Slicer replaces only the crop
    assert "points" in params and {"infer", "interact"} <= set(params["timings"])


def test_cpp_client_deepgrow_with_string_points_and_the_image_field(iclient):
    volume, mask = phantom()
    params = {"foreground": json.dumps([[18, 25, 15]]), "background": json.dumps([[18, 25, 21]])}
    reply = iclient.post("/v1/deepgrow?model=interactive_test", data={"params": json.dumps(params)},
                         files={"image": ("image.nii.gz", nifti(volume), "application/octet-stream")})
    assert reply.status_code == 200, reply.text
    params, data = parse_like_cpp_client(reply.content)
    result = read_volume(data, "r.nii.gz").array
    assert "points" in params and result[18, 25, 15] == 1 and result[18, 25, 21] == 0 and mask[18, 25, 21] == 1


def test_deepgrow_on_a_session_prepares_the_image_once_and_leaves_the_object_alone(iclient, interactive_app):
    volume, mask = phantom()
    sid = iclient.put("/session/", files={"image": ("image.nii.gz", nifti(volume))}).json()["session_id"]
    first = iclient.post(f"/v1/deepgrow?model=interactive_test&session_id={sid}&output=json",
                         data={"params": json.dumps(CLICKS)})
    assert first.status_code == 200, first.text
    assert "prepare" in first.json()["timings"]
    prepared = interactive_app.state.sessions.get(sid).prepared
    # Slicer's DeepGrow goes through /v1/inference, with current_point nested
    again = iclient.post(f"/v1/inference?model=interactive_test&session_id={sid}",
                         data={"params": json.dumps({**CLICKS, "current_point": [[18, 25, 15]]})})
    assert again.status_code == 200
    params, data = parse_like_cpp_client(again.content)
    assert "prepare" not in params["timings"] and interactive_app.state.sessions.get(sid).prepared is prepared
    assert dice(read_volume(data, "r.nii.gz").array, mask) > 0.85
    assert iclient.get(f"/v1/interactive/{sid}").json()["steps"] == 0


@pytest.mark.parametrize("query, params, status", [
    ("model=interactive_test&session_id=gone", CLICKS, 440),
    ("model=annotation_test", CLICKS, 400),                                   # not a deepgrow model
    ("model=missing", CLICKS, 404),
    ("model=interactive_test", {"foreground": [], "background": []}, 400),   # no click
    ("model=interactive_test", {"foreground": [[99, 0, 0]]}, 400),           # outside
    ("model=interactive_test", {"foreground": "not json"}, 400),
    ("model=interactive_test", {"foreground": [[1, 2]]}, 400),
])
def test_bad_deepgrow_requests(iclient, query, params, status):
    volume, _ = phantom()
    files = None if "session_id" in query else {"datapoint": ("x.nii.gz", nifti(volume))}
    reply = iclient.post(f"/v1/deepgrow?{query}", data={"params": json.dumps(params)}, files=files)
    assert reply.status_code == status, reply.text
    assert set(reply.json()) == {"error", "detail"}
