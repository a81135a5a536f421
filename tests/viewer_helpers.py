"""What the browser tests of the viewer share: sessions, the API's masks, and where a screenshot is red."""

from __future__ import annotations

import base64
import gzip
import io
import json

import httpx
import nibabel as nib
import numpy as np
from PIL import Image


def upload(url: str, data: bytes) -> str:
    """Open a session of the server at ``url`` on a NIfTI volume; returns its id."""
    return httpx.put(f"{url}/session/", files={"image": ("phantom.nii.gz", data)}).json()["session_id"]


def reddish(png: bytes) -> np.ndarray:
    """Where the screenshot shows the first object's colour (red) rather than grey or the yellow crosshair."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (rgb[..., 0] - rgb[..., 1] > 50) & (rgb[..., 0] - rgb[..., 2] > 50)


def server_mask(url: str, sid: str) -> np.ndarray:
    """The session's interactive mask as the server holds it (``GET /v1/interactive/{id}/mask?format=json``)."""
    body = httpx.get(f"{url}/v1/interactive/{sid}/mask", params={"format": "json"}).json()
    flat = np.frombuffer(gzip.decompress(base64.b64decode(body["mask"])), np.uint8)
    return flat.reshape(body["shape"], order="F")


def api_mask(url: str, route: str, sid: str, model: str, params: dict) -> np.ndarray:
    """The mask that ``POST /v1/{route}`` answers for the session's image (what the page must show)."""
    reply = httpx.post(f"{url}/v1/{route}", params={"model": model, "session_id": sid, "output": "image"},
                       files={"params": (None, json.dumps({**params, "result_extension": ".nii.gz"}))})
    assert reply.status_code == 200, reply.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(reply.content)).dataobj)
