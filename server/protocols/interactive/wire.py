"""Wire format of our interactive API: prompt bodies in, masks out as gzip + base64 of the changed box.

A mask travels as ``uint8`` 0/1 bytes in Fortran order (``i`` fastest, as NIfTI stores voxels),
gzip-compressed and base64-encoded: the encoding ``gzip-base64-u8-fortran``. A reply carries
only the box ``[lo, hi)`` where the mask may have changed, or the whole volume on request.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.data.io import fortran_order
from engines.errors import InvalidPointsError
from engines.tasks.interactive import box_prompt, lasso_prompt, point_prompt, voxel_prompt
from server.errors import BadRequest, PayloadTooLarge
from server.sessions.interaction import Change, PromptBuilder

__all__ = ["ENCODING", "REPLIES", "MaskBody", "PromptBody", "decode_mask", "encode_mask", "mask_json", "parse_json",
           "prompt_builder", "reply"]

ENCODING = "gzip-base64-u8-fortran"
REPLIES = ("box", "full")
Point = list[int]


class PromptBody(BaseModel):
    """One prompt, in voxel indices ``[i, j, k]`` of the session's image."""

    type: Literal["point", "box", "scribble", "lasso", "extreme_points"] = Field(
        description="point: one or more clicks; box: two inclusive corners (a 2D box has one axis equal); "
                    "scribble: its voxels; lasso: the closed contour's vertices on one slice (filled by the server); "
                    "extreme_points: the object's extreme points")
    positive: bool = Field(True, description="false for a negative click or scribble (background)")
    points: list[Point] | None = Field(None, description="voxels or vertices [[i, j, k], ...]")
    box: list[Point] | None = Field(None, min_length=2, max_length=2,
                                    description="[[i0, j0, k0], [i1, j1, k1]], both corners inclusive")

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"type": "point", "positive": True, "points": [[18, 25, 15]]},
                     {"type": "box", "box": [[10, 15, 15], [26, 35, 15]]},
                     {"type": "lasso", "points": [[8, 14, 15], [28, 14, 15], [28, 36, 15], [8, 36, 15]]}]})


class MaskBody(BaseModel):
    """A full-volume mask as JSON (the reply's encoding)."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=3, max_length=3)
    encoding: Literal["gzip-base64-u8-fortran"] = ENCODING
    mask: str


def parse_json(body: bytes, schema: type[BaseModel]) -> Any:
    """Validate a JSON body; anything malformed is a 400 naming the problem."""
    try:
        return schema.model_validate_json(body or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"malformed {schema.__name__}: {problems}") from None


def prompt_builder(body: PromptBody) -> PromptBuilder:
    """The prompt for a volume of a given shape (checked against it: outside or empty is a 400)."""
    kind, positive = body.type, body.positive
    if kind == "box":
        if body.box is None:
            raise InvalidPointsError("a box prompt needs 'box': [[i0, j0, k0], [i1, j1, k1]] (corners inclusive)")
        lo, hi = body.box
        return lambda shape: box_prompt(lo, hi, positive, shape)
    if not body.points:
        raise InvalidPointsError(f"a {kind} prompt needs 'points': [[i, j, k], ...]")
    points = body.points
    if kind == "point":
        return lambda shape: point_prompt(points, positive, shape)
    if kind == "lasso":
        return lambda shape: lasso_prompt(points, positive, shape)
    return lambda shape: voxel_prompt(kind, points, positive, shape)


def encode_mask(mask: np.ndarray) -> str:
    """``gzip-base64-u8-fortran`` text of a boolean array."""
    raw = fortran_order(mask, np.uint8).reshape(-1)  # a view: gzip reads the buffer, no bytes copy
    return base64.b64encode(gzip.compress(raw, compresslevel=1, mtime=0)).decode("ascii")


def decode_mask(body: MaskBody, shape: tuple[int, ...], max_bytes: int) -> np.ndarray:
    """A full-volume mask from JSON; its declared shape must be the session's (checked before decompressing)."""
    if tuple(body.shape) != tuple(shape):
        raise BadRequest(f"the mask has shape {body.shape}; the session's image has {list(shape)}")
    n = int(np.prod(shape))
    if n > max_bytes:
        raise PayloadTooLarge(f"a mask of {n} voxels exceeds the limit of {max_bytes} bytes")
    try:
        with gzip.GzipFile(fileobj=_Base64(body.mask)) as fh:
            raw = fh.read(n + 1)  # never more than one byte past the declared size: no decompression bombs
    except (OSError, EOFError, ValueError) as exc:
        raise BadRequest(f"'mask' is not {ENCODING}: {exc}") from None
    if len(raw) != n:
        raise BadRequest(f"'mask' holds {len(raw)} voxels; shape {list(shape)} has {n}")
    return np.frombuffer(raw, np.uint8).reshape(shape, order="F") > 0


class _Base64:
    """A file-like reader of base64 text, so gzip never sees more than it asks for."""

    def __init__(self, text: str) -> None:
        try:
            self._data = base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise BadRequest(f"'mask' is not base64: {exc}") from None
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        out = self._data[self._pos:end]
        self._pos += len(out)
        return out


def reply(change: Change, full: bool, timings: dict[str, float]) -> dict[str, Any]:
    """The JSON reply: the changed box (or the whole volume) of the object's mask, and what the object is."""
    shape = change.mask.shape
    lo, hi = (np.zeros(3, np.int64), np.asarray(shape)) if full else (change.lo, change.hi)
    box = change.mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    return {
        "model": change.model,
        "step": change.steps,
        "prompts": change.prompts,
        "box": [[int(v) for v in lo], [int(v) for v in hi]],
        "shape": [int(s) for s in shape],
        "encoding": ENCODING,
        "mask": encode_mask(box),
        "voxels": change.voxels,
        "timings": timings,
    }


def mask_json(model: str, mask: np.ndarray) -> str:
    """``GET .../mask?format=json``: the whole mask."""
    return json.dumps({"model": model, "shape": list(mask.shape), "encoding": ENCODING, "mask": encode_mask(mask),
                       "voxels": int(np.count_nonzero(mask))})

