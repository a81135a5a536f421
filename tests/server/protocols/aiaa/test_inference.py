import json

import numpy as np
import pytest
from helpers import dice, phantom, phantom_points
from multipart import parse_like_cpp_client, parse_like_python_client

from engines.data.io import read_volume, write_volume


def nifti(volume, suffix=".nii.gz") -> bytes:
    return write_volume(volume.array, volume.geometry, suffix, dtype="float32")


def test_dextr3d_multipart_reply(client):
    volume, mask = phantom()
    points = phantom_points(mask)
    reply = client.post("/v1/dextr3d?model=annotation_test", data={"params": json.dumps({"points": points})},
                        files={"datapoint": ("tmp/abc/tmpxyz.nii.gz", nifti(volume), "application/octet-stream")})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(reply.headers["content-length"]) == len(reply.content)
    form, files = parse_like_python_client(reply.content, reply.headers["content-type"])
    params = json.loads(form["params"])
    assert params["points"] == points and {"pre", "infer", "post", "decode", "encode"} <= set(params["timings"])
    (name, data), = files.items()
    assert name.endswith(".nii.gz")
    result = read_volume(data, name)
    assert result.shape == volume.shape and result.array.dtype == np.uint8
    np.testing.assert_allclose(result.geometry.spacing, volume.geometry.spacing)
    np.testing.assert_allclose(result.geometry.direction, volume.geometry.direction)
    assert dice(result.array, mask) > 0.95


def test_points_as_a_json_string_and_image_field_and_uncompressed_input(client):
    volume, mask = phantom()
    params = json.dumps({"points": json.dumps(phantom_points(mask))})
    reply = client.post("/v1/dextr3d?model=annotation_test", data={"params": params},
                        files={"image": ("image.nii", nifti(volume, ".nii"))})
    assert reply.status_code == 200, reply.text
    text, data = parse_like_cpp_client(reply.content)
    assert "points" in text
    assert data[:2] != b"\x1f\x8b"  # .nii in, .nii out
    assert dice(read_volume(data, "r.nii").array, mask) > 0.95


def test_segmentation_multipart_and_output_image(client):
    volume, mask = phantom()
    reply = client.post("/v1/segmentation?model=segmentation_test", data={"params": "{}"},
                        files={"image": ("v.nii.gz", nifti(volume))})
    assert reply.status_code == 200, reply.text
    params, data = parse_like_cpp_client(reply.content)
    assert len(params["points"]) == 6
    labels = read_volume(data, "r.nii.gz").array
    assert set(np.unique(labels)) <= {0, 1, 2} and dice(labels > 0, mask) > 0.95

    raw = client.post("/v1/segmentation?model=segmentation_test&output=image",
                      files={"image": ("v.nii.gz", nifti(volume))})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    assert np.array_equal(read_volume(raw.content, "r.nii.gz").array, labels)


def test_inference_dispatches_on_model_type(client):
    volume, mask = phantom()
    seg = client.post("/v1/inference?model=segmentation_test", data={"params": "{}"},
                      files={"image": ("v.nii.gz", nifti(volume))})
    ann = client.post("/v1/inference?model=annotation_test",
                      data={"params": json.dumps({"points": phantom_points(mask)})},
                      files={"image": ("v.nii.gz", nifti(volume))})
    assert seg.status_code == ann.status_code == 200
    assert read_volume(parse_like_cpp_client(seg.content)[1], "a.nii.gz").array.max() == 2
    assert read_volume(parse_like_cpp_client(ann.content)[1], "a.nii.gz").array.max() == 1


@pytest.mark.parametrize("params, suffix, dtype, gz", [
    ({"result_extension": ".nrrd"}, ".nrrd", np.uint8, False),
    ({"result_extension": ".nrrd", "result_compress": True, "result_dtype": "uint16"}, ".nrrd", np.uint16, None),
    ({"result_extension": ".nii", "result_dtype": "uint16"}, ".nii", np.uint16, False),
    ({"result_extension": "nii.gz", "result_compress": "true"}, ".nii.gz", np.uint8, True),
])
def test_result_format_keys(client, params, suffix, dtype, gz):
    volume, _ = phantom()
    reply = client.post("/v1/segmentation?model=segmentation_test", data={"params": json.dumps(params)},
                        files={"image": ("v.nii.gz", nifti(volume))})
    assert reply.status_code == 200, reply.text
    _, files = parse_like_python_client(reply.content, reply.headers["content-type"])
    (name, data), = files.items()
    assert name.endswith(suffix)
    if gz is not None:
        assert (data[:2] == b"\x1f\x8b") is gz
    assert read_volume(data, name).array.dtype == dtype


def test_output_json_returns_params_only(client):
    volume, _ = phantom()
    reply = client.post("/v1/segmentation?model=segmentation_test&output=json",
                        files={"image": ("v.nii.gz", nifti(volume))})
    assert reply.status_code == 200 and "points" in reply.json()
