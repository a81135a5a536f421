"""The OpenAPI document describes every request body and reply of the AIAA routes."""

from __future__ import annotations

import json

from engines.data.io import read_volume
from server.protocols.aiaa.openapi import EXAMPLE_POINTS, EXAMPLE_VOLUME

INFERENCE = ("/v1/dextr3d", "/v1/segmentation", "/v1/inference")
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def document(client) -> dict:
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def test_inference_routes_declare_their_multipart_body(client):
    paths = document(client)["paths"]
    for path in INFERENCE:
        operation = paths[path]["post"]
        body = operation["requestBody"]
        assert body["required"] is False  # a session_id call sends no file
        form = body["content"]["multipart/form-data"]
        fields = form["schema"]["properties"]
        assert fields["params"]["type"] == "object" and form["encoding"]["params"]["contentType"] == "application/json"
        assert fields["image"]["format"] == "binary"
        assert fields["image"]["contentMediaType"] == "application/octet-stream"
        assert form["schema"]["patternProperties"]["^image[0-9]+$"]["format"] == "binary"
    dextr3d = paths["/v1/dextr3d"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    points = dextr3d["properties"]["params"]["properties"]["points"]
    assert points["minItems"] == 6 and points["items"]["minItems"] == 3


def test_inference_replies_and_errors_are_declared(client):
    doc = document(client)
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail"}
    for path in INFERENCE:
        responses = doc["paths"][path]["post"]["responses"]
        media = {"multipart/form-data", "application/octet-stream", "application/json", "image/png"}
        assert set(responses["200"]["content"]) == media
        assert "timings" in responses["200"]["content"]["application/json"]["schema"]["properties"]
        for status in ("400", "404", "413", "440", "503", "default"):
            assert responses[status]["content"] == {"application/json": {"schema": ERROR_REF}}, (path, status)


def test_every_error_reply_is_the_error_body_never_fastapis_validation_schema(client):
    doc = document(client)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (path, status)


def test_model_parameter_lists_the_served_models_of_the_right_type(client):
    paths = document(client)["paths"]

    def model_param(path):
        return next(p for p in paths[path]["post"]["parameters"] if p["name"] == "model")

    assert model_param("/v1/dextr3d")["schema"]["enum"] == ["annotation_test"]
    assert model_param("/v1/segmentation")["schema"]["enum"] == ["segmentation_test"]
    assert sorted(model_param("/v1/inference")["schema"]["enum"]) == ["annotation_test", "segmentation_test"]
    assert all(model_param(p)["required"] for p in INFERENCE)
    output = next(p for p in paths["/v1/dextr3d"]["post"]["parameters"] if p["name"] == "output")
    assert output["schema"]["enum"] == ["all", "image", "json", "png"]


def test_session_routes(client):
    paths = document(client)["paths"]
    put = paths["/session/"]["put"]
    schema = put["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert put["requestBody"]["required"] is True
    assert schema["anyOf"] == [{"required": ["image"]}, {"required": ["image0"]}]
    assert "session_id" in put["responses"]["200"]["content"]["application/json"]["schema"]["required"]
    assert {"200", "404"} <= paths["/session/{session_id}"]["get"]["responses"].keys()
    assert {"200", "404"} <= paths["/session/{session_id}"]["delete"]["responses"].keys()


def test_the_documented_example_returns_a_mask_as_docs_would_send_it(client):
    """What /docs 'Try it out' sends from the document's own examples: a volume in, a mask out."""
    doc = document(client)
    form = doc["paths"]["/v1/dextr3d"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    params = form["properties"]["params"]["example"]
    assert params == {"points": EXAMPLE_POINTS} and form["properties"]["image"]["example"] == EXAMPLE_VOLUME
    reply = client.post("/v1/dextr3d?model=annotation_test&output=image",
                        data={"params": json.dumps(params)}, files={"image": ("image", EXAMPLE_VOLUME.encode())})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/octet-stream"
    mask = read_volume(reply.content, "mask.nrrd").array
    assert mask.shape == (12, 12, 12) and mask[6, 6, 6] == 1 and mask[0, 0, 0] == 0
    seg = client.post("/v1/segmentation?model=segmentation_test&output=json", data={"params": "{}"},
                      files={"image": ("image", EXAMPLE_VOLUME.encode())})
    assert seg.status_code == 200 and seg.json()["labels"] == ["anterior", "posterior"]
    assert client.get("/docs").status_code == 200
