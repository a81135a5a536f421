"""What the OpenAPI document says about the interactive API's bodies and replies (documentation only)."""

from __future__ import annotations

from typing import Any

from server.protocols.aiaa.openapi import BINARY, ErrorBody
from server.protocols.interactive.wire import ENCODING, MaskBody, PromptBody

__all__ = ["GET_MASK", "PROMPT", "SET_MASK", "STATE", "UNDO"]

CHANGE = {
    "type": "object",
    "required": ["model", "step", "box", "shape", "encoding", "mask", "voxels", "timings"],
    "properties": {
        "model": {"type": "string"},
        "step": {"type": "integer", "description": "steps that undo can take back"},
        "prompts": {"type": "integer", "description": "prompts of the object so far"},
        "box": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}, "minItems": 2,
                "maxItems": 2, "description": "[[i0, j0, k0], [i1, j1, k1]] with the upper corner exclusive: "
                                             "where the mask may have changed (the whole volume with reply=full)"},
        "shape": {"type": "array", "items": {"type": "integer"}, "description": "[I, J, K] of the session's image"},
        "encoding": {"const": ENCODING},
        "mask": {"type": "string", "description": "base64 of gzip of the box's uint8 0/1 voxels, i fastest"},
        "voxels": {"type": "integer", "description": "foreground voxels of the whole mask"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"},
                    "description": "milliseconds: build, prepare (first use), infer (network), interact "
                                   "(everything else of the step), encode, total"},
    },
}
STATE_BODY = {"type": "object", "properties": {
    "session_id": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "model": {"type": ["string", "null"]}, "steps": {"type": "integer"}, "prompts": {"type": "integer"},
    "has_mask": {"type": "boolean"}}}
_TEXT = {
    400: "Bad input: a prompt outside the volume, empty or malformed; wrong model type; a mask off the image's grid",
    404: "Unknown model, or no mask yet",
    409: "Nothing to undo",
    413: "Body over the server's limits, or the session over the memory budget",
    440: "Unknown or expired session (create one with PUT /session/)",
    503: "Model unavailable, or busy (with Retry-After)",
}


def _errors(*codes: int) -> dict[int, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _TEXT[code]} for code in codes}


def _ok(schema: dict[str, Any], description: str) -> dict[int, dict[str, Any]]:
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


PROMPT: dict[str, Any] = {
    "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PromptBody.model_json_schema()}}}},
    "responses": {**_ok(CHANGE, "The mask in the changed box"), **_errors(400, 404, 413, 440, 503)},
}
SET_MASK: dict[str, Any] = {
    "openapi_extra": {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "mask": {**BINARY, "description": "a label image on the session image's grid (non-zero = object)"}}}},
        "application/json": {"schema": MaskBody.model_json_schema()}}}},
    "responses": {**_ok(CHANGE, "The mask now"), **_errors(400, 404, 413, 440)},
}
UNDO: dict[str, Any] = {"responses": {**_ok(CHANGE, "The mask one step back"), **_errors(409, 440)}}
STATE: dict[str, Any] = {"responses": {**_ok(STATE_BODY, "The session's object"), **_errors(440)}}
GET_MASK: dict[str, Any] = {"responses": {
    200: {"description": "The whole mask", "content": {"application/octet-stream": {"schema": BINARY},
                                                       "application/json": {"schema": MaskBody.model_json_schema()}}},
    **_errors(400, 404, 440)}}
