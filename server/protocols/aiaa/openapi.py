"""What the OpenAPI document says about bodies the routers read themselves.

The AIAA routes parse their multipart bodies by hand (any file field name, ``params`` as
JSON text, no body with a session), so FastAPI cannot infer them from the signatures. This
module declares them: request bodies, the reply media types (multipart ``params`` + file,
the raw image with ``output=image``, JSON with ``output=json``), the error body with its
status codes, and, at request time, the served model names as the ``model`` parameter's
choices, so that ``/docs`` can upload a volume and get a mask back, and a schema-based
fuzzer sends requests that reach the engines. Documentation only: nothing here changes
what a request or reply looks like on the wire.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from server.protocols.aiaa.wire import OUTPUTS

__all__ = ["ERROR_RESPONSE", "POLYGON_DOCS", "SESSION_DOCS", "SESSION_PUT_DOCS", "ErrorBody", "inference_docs", "install_openapi"]


class ErrorBody(BaseModel):
    """Every error reply."""

    error: str = Field(description="kind of error, e.g. BadRequest, ModelNotFoundError, SessionExpired, Busy")
    detail: str = Field(description="what went wrong, for a person")


# Any status without its own entry (FastAPI's HTTPValidationError does not apply: errors are ErrorBody).
ERROR_RESPONSE: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorBody, "description": "Any error: JSON `{\"error\", \"detail\"}`"},
}

BINARY = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}


def _example_volume(size: int = 12, radius: float = 4.0) -> str:
    """A bright ball in a 12^3 NRRD with ASCII voxels: a real volume that fits in a JSON document."""
    centre = (size - 1) / 2
    voxels = [100 if (i - centre) ** 2 + (j - centre) ** 2 + (k - centre) ** 2 <= radius ** 2 else 0
              for k in range(size) for j in range(size) for i in range(size)]  # i fastest, as NRRD stores them
    return (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {size} {size} {size}\nspacings: 1 1 1\n"
            f"encoding: ascii\n\n{' '.join(map(str, voxels))}\n")


# /docs and fuzzers start from these: the ball's six extreme points, and the ball itself.
EXAMPLE_POINTS = [[2, 6, 6], [9, 6, 6], [6, 2, 6], [6, 9, 6], [6, 6, 2], [6, 6, 9]]
EXAMPLE_VOLUME = _example_volume()
POINT = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3,
         "description": "voxel index [i, j, k] of the uploaded image (NIfTI axis order); "
                        "a point one voxel outside is clipped"}
RESULT_KEYS = {  # null means the default, as for a missing key
    "result_extension": {"type": ["string", "null"], "examples": [".nii.gz", ".nii", ".nrrd", ".mha"],
                         "description": "file format of the returned mask (default: the input's)"},
    "result_dtype": {"enum": ["uint8", "uint16", "int16", "int32", "uint32", "float32", None],
                     "description": "voxel type of the returned mask (default uint8)"},
    "result_compress": {"anyOf": [{"type": ["boolean", "null"]},
                                  {"enum": ["true", "false", "True", "False", "1", "0", 1, 0]}],
                        "description": "compress the returned file"},
}
PARAMS = {
    "dextr3d": {"type": "object", "required": ["points"], "additionalProperties": True,
                "properties": {"points": {"type": "array", "items": POINT, "minItems": 6,
                                          "description": "six or more extreme points of the object"},
                               **RESULT_KEYS},
                "example": {"points": EXAMPLE_POINTS}},
    "segmentation": {"type": "object", "additionalProperties": True, "properties": RESULT_KEYS, "example": {}},
    "deepgrow": {"type": "object", "additionalProperties": True,
                 "properties": {"foreground": {"type": "array", "items": POINT, "description": "positive clicks"},
                                "background": {"type": "array", "items": POINT, "description": "negative clicks"},
                                "current_point": {"description": "the newest click, [i,j,k] or [[i,j,k]] (optional)"},
                                "spatial_size": {"type": "array", "items": {"type": "integer"},
                                                 "description": "accepted and ignored: the model's roi applies"},
                                **RESULT_KEYS},
                 "example": {"foreground": [[6, 6, 6]], "background": []}},
    "inference": {"type": "object", "additionalProperties": True, "properties": RESULT_KEYS, "example": {},
                  "description": "model specific: extreme points for an annotation model, nothing for segmentation"},
}
RESULT_PARAMS = {
    "type": "object", "additionalProperties": True,
    "properties": {
        "points": {"type": "array", "items": POINT, "description": "extreme points of the result (may be empty)"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "string"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"},
                    "description": "milliseconds per stage (decode, pre, infer, post, total, encode)"},
    },
}


def _form(params_schema: dict[str, Any], image_required: bool, image_description: str) -> dict[str, Any]:
    """A multipart body of ``params`` (JSON text) and the image, also accepted as a DICOM series ``image0..N``."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "params": {**params_schema, "description": "JSON object, sent as the text of a form field. "
                       + params_schema.get("description", "")},
            "image": {**BINARY, "description": image_description, "example": EXAMPLE_VOLUME},
        },
        "patternProperties": {"^image[0-9]+$": {**BINARY, "description": "one DICOM instance of a series (OHIF)"}},
        "description": "The image may come under any file field (NVIDIA's Python client sends `datapoint`); "
                       "a DICOM series comes as `image0`, `image1`, ... one instance each.",
    }
    if image_required:
        schema["anyOf"] = [{"required": ["image"]}, {"required": ["image0"]}]
    encoding = {"params": {"contentType": "application/json"}, "image": {"contentType": "application/octet-stream"}}
    return {"multipart/form-data": {"schema": schema, "encoding": encoding}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Bad input: not an image, bad `params` or points, wrong model type, no image and no session",
        404: "Unknown model",
        413: "Body or image over the server's limits",
        440: "Unknown or expired `session_id` (AIAA clients then open a new session)",
        503: "Model unavailable, or busy (with `Retry-After`)",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


def inference_docs(api: str) -> dict[str, Any]:
    """``openapi_extra`` and ``responses`` for ``POST /v1/{api}``."""
    return {
        "openapi_extra": {"requestBody": {
            "required": False,
            "description": "Omit the image (or the whole body) when passing `session_id`.",
            "content": _form(PARAMS[api], False, "the volume: .nii.gz, .nii, .nrrd, .mha or one DICOM file"),
        }},
        "responses": {
            200: {"description": "Default (`output=all`): multipart with a `params` JSON part, then the mask file. "
                                 "`output=image`: the mask file only. `output=json`: the `params` JSON only. "
                                 "`output=png`: a picture of the mask over the image in three views.",
                  "content": {
                      "multipart/form-data": {
                          "schema": {"type": "object", "properties": {"params": RESULT_PARAMS, "image": BINARY}},
                          "encoding": {"params": {"contentType": "application/json"},
                                       "image": {"contentType": "application/octet-stream"}}},
                      "application/octet-stream": {"schema": BINARY},
                      "application/json": {"schema": RESULT_PARAMS},
                      "image/png": {"schema": {"type": "string", "format": "binary", "contentMediaType": "image/png"}},
                  }},
            **_errors(400, 404, 413, 440, 503),
        },
    }


SESSION_INFO = {
    "type": "object", "required": ["session_id"],
    "properties": {"session_id": {"type": "string"},
                   "session_info": {"type": "object", "additionalProperties": True,
                                    "description": "name, image (shape, dtype, spacing, origin, direction, format), "
                                                   "create_ts, last_access_ts, expiry, expires_in"}},
}
SESSION_DOCS: dict[str, Any] = {
    "responses": {200: {"description": "The session", "content": {"application/json": {"schema": SESSION_INFO}}},
                  404: {"model": ErrorBody, "description": "Unknown or expired session"}},
}
SESSION_PUT_DOCS: dict[str, Any] = {
    "openapi_extra": {"requestBody": {
        "required": True,
        "content": _form({"type": "object", "additionalProperties": True, "example": {}}, True,
                         "the volume to keep on the server"),
    }},
    "responses": {200: SESSION_DOCS["responses"][200], **_errors(400, 413)},
}

POLYGON = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}}
POLYGON_DOCS: dict[str, dict[str, Any]] = {
    "mask2polygon": {
        "openapi_extra": {"requestBody": {"required": True, "content": _form(
            {"type": "object", "properties": {"more_points": {
                "type": "number", "exclusiveMinimum": 0,
                "description": "larger gives more vertices (10: polygons within 1 voxel of the outline)"}},
             "example": {"more_points": 10}}, True, "a 3D binary mask (.nii.gz)")}},
        "responses": {200: {"description": "Per slice along k, its polygons of [j, i] points",
                            "content": {"application/json": {"schema": {"type": "array", "items": {
                                "type": "array", "items": POLYGON}}}}},
                      **_errors(400, 413)},
    },
    "fixpolygon": {
        "openapi_extra": {"requestBody": {"required": True, "content": _form(
            {"type": "object", "required": ["poly", "polygon_index", "vertex_index", "vertex_offset"],
             "additionalProperties": True,
             "properties": {"poly": {"type": "array", "description": "2D: polygons of [x, y]; 3D: per slice, "
                                                                     "polygons of [j, i] (as mask2polygon)"},
                            "dimension": {"enum": [2, 3]}, "polygon_index": {"type": "integer"},
                            "vertex_index": {"type": "integer"}, "slice_index": {"type": "integer"},
                            "vertex_offset": {"type": "array", "items": {"type": "number"}},
                            "propagate_neighbor": {"type": "integer"}, "propagate_neighbor_3d": {"type": "integer"}}},
            True, "2D: the slice as PNG; 3D: the volume (.nii.gz)")}},
        "responses": {200: {"description": "Multipart: params `{\"poly\": [...]}` then the refilled mask "
                                           "(PNG for 2D, NIfTI for 3D)",
                            "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                                "params": {"type": "object", "properties": {"poly": {"type": "array"}}},
                                "image": BINARY}}}}},
                      **_errors(400, 413)},
    },
}

PARAMETERS = {
    "model": "Model name (`GET /v1/models` lists them). Required.",
    "session_id": "Use the image of this session (`PUT /session/`) instead of an upload.",
    "output": "`all` (default): multipart params + mask; `image`: the mask file only; `json`: params only.",
    "expiry": "Seconds from the last use; 0 or absent: the server's default; capped by the server's maximum.",
}
MODEL_TYPE_OF_ROUTE = {"/v1/dextr3d": "annotation", "/v1/segmentation": "segmentation", "/v1/deepgrow": "deepgrow",
                       "/v1/interactive/{session_id}/prompt": "deepgrow", "/v1/interactive/{session_id}/mask": "deepgrow"}
# Routes whose model is optional (the session's object is already bound to one).
OPTIONAL_MODEL = ("/v1/interactive/{session_id}/mask",)


ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def _describe(schema: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    outputs = OUTPUTS
    ready = [(engine.name, engine.type) for engine in app.state.pool.engines()]
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2"):  # errors are JSON whatever the route's own media type
                    response["content"] = ERROR_CONTENT
            for parameter in operation.get("parameters", []):
                name = parameter.get("name")
                if name in PARAMETERS:
                    parameter.setdefault("description", PARAMETERS[name])
                if name == "output":
                    parameter["schema"] = {"type": "string", "enum": list(outputs)}
                if name == "model" and path.startswith("/v1/") and path != "/v1/models":
                    wanted = MODEL_TYPE_OF_ROUTE.get(path)
                    names = [n for n, t in ready if wanted is None or t == wanted]
                    parameter["required"] = path not in OPTIONAL_MODEL
                    parameter["schema"] = {"type": "string", **({"enum": names} if names else {})}
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the document with parameter descriptions and the served models, rebuilt on each request.

    Rebuilt because models are loaded at start-up (and may change at run time); it is small.
    """

    def openapi() -> dict[str, Any]:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        return _describe(schema, app)

    app.openapi = openapi  # type: ignore[method-assign]
