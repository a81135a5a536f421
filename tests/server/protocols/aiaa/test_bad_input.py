"""Every kind of bad input gets a 4xx JSON message, and the server keeps serving."""

import gzip
import json

import numpy as np
import pytest
from helpers import phantom, phantom_points

from engines.data.io import Geometry, write_volume

VOLUME, MASK = phantom()
GOOD = write_volume(VOLUME.array, VOLUME.geometry, ".nii.gz", dtype="float32")
POINTS = json.dumps({"points": phantom_points(MASK)})


def post(client, path, files=None, params=POINTS, **kw):
    data = {"params": params} if params is not None else None
    return client.post(path, data=data, files=files, **kw)


CASES = {
    "not a volume": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", b"hello world")}, POINTS, 400),
    "text file": ("/v1/dextr3d?model=annotation_test", {"image": ("notes.txt", b"hello world")}, POINTS, 400),
    "truncated": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD[: len(GOOD) // 2])}, POINTS, 400),
    "corrupt gzip": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD[:20] + b"\0" * 500)}, POINTS, 400),
    "gzip of garbage": ("/v1/segmentation?model=segmentation_test", {"image": ("a.nii.gz", gzip.compress(b"x" * 600))},
                        "{}", 400),
    "2d image": ("/v1/segmentation?model=segmentation_test",
                 {"image": ("a.nii.gz", write_volume(np.ones((30, 30)), Geometry.identity(2)))}, "{}", 400),
    "4d image": ("/v1/segmentation?model=segmentation_test",
                 {"image": ("a.nii.gz", write_volume(np.ones((3, 20, 20, 20)), Geometry.identity(4)))}, "{}", 400),
    "too many voxels": ("/v1/segmentation?model=segmentation_test",
                        {"image": ("a.nii.gz", write_volume(np.zeros((100, 100, 100)), Geometry.identity()))}, "{}",
                        413),
    "five points": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)},
                    json.dumps({"points": phantom_points(MASK)[:5]}), 400),
    "absurd points": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)},
                      json.dumps({"points": [[1e12, 0, 0]] * 6}), 400),
    "string points": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)},
                      json.dumps({"points": [["a", "b", "c"]] * 6}), 400),
    "no points": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)}, "{}", 400),
    "params not json": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)}, "{points", 400),
    "params a list": ("/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)}, "[1, 2]", 400),
    "unknown model": ("/v1/dextr3d?model=nope", {"image": ("a.nii.gz", GOOD)}, POINTS, 404),
    "no model": ("/v1/dextr3d", {"image": ("a.nii.gz", GOOD)}, POINTS, 400),
    "wrong type for dextr3d": ("/v1/dextr3d?model=segmentation_test", {"image": ("a.nii.gz", GOOD)}, POINTS, 400),
    "wrong type for segmentation": ("/v1/segmentation?model=annotation_test", {"image": ("a.nii.gz", GOOD)}, "{}",
                                    400),
    "no file, no session": ("/v1/dextr3d?model=annotation_test", None, POINTS, 400),
    "bad result_extension": ("/v1/segmentation?model=segmentation_test", {"image": ("a.nii.gz", GOOD)},
                             json.dumps({"result_extension": ".exe"}), 400),
    "bad result_dtype": ("/v1/segmentation?model=segmentation_test", {"image": ("a.nii.gz", GOOD)},
                         json.dumps({"result_dtype": "complex128"}), 400),
    "bad output": ("/v1/segmentation?model=segmentation_test&output=pdf", {"image": ("a.nii.gz", GOOD)}, "{}", 400),
    "two files": ("/v1/segmentation?model=segmentation_test",
                  [("image", ("a.nii.gz", GOOD)), ("label", ("b.nii.gz", GOOD))], "{}", 400),
    "image and image1": ("/v1/segmentation?model=segmentation_test",
                         [("image", ("a.nii.gz", GOOD)), ("image1", ("b.dcm", GOOD))], "{}", 400),
    "series that is not dicom": ("/v1/segmentation?model=segmentation_test",
                                 [("image0", ("0.dcm", GOOD)), ("image1", ("1.dcm", b"junk"))], "{}", 400),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(client, name):
    path, files, params, status = CASES[name]
    reply = post(client, path, files, params)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["detail"] and body["error"]
    ok = post(client, "/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)})
    assert ok.status_code == 200


def test_body_over_the_upload_limit_is_413(client):
    client.app.state.settings.max_upload_bytes = 1000
    reply = post(client, "/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)})
    assert reply.status_code == 413 and "limit" in reply.json()["detail"]


def test_json_body_on_session_is_refused(client):
    reply = client.put("/session/", json={"study_uid": "1.2.3"})
    assert reply.status_code == 400


def test_session_without_file(client):
    assert client.put("/session/", data={"params": "{}"}).status_code == 400


def test_busy_model_answers_503_with_retry_after(client):
    gate = client.app.state.gates["annotation_test"]
    gate.in_flight = gate.capacity
    reply = post(client, "/v1/dextr3d?model=annotation_test", {"image": ("a.nii.gz", GOOD)})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    gate.in_flight = 0
