"""Clara's model administration: PUT, GET and DELETE /admin/model/{name}; versions of uploaded models."""

import io
import json

import torch
from fastapi.testclient import TestClient
from helpers import TINY_UNET, annotation_config, phantom, phantom_points
from jobs_helpers import AUTH, phantom_setup

from engines.config.model import ComponentSpec
from engines.data.io import write_volume
from engines.networks import build_network
from server.app import create_app


def _weights(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(build_network(ComponentSpec.model_validate(TINY_UNET)).state_dict(), buffer)
    return buffer.getvalue()


def test_a_model_is_added_served_versioned_and_deleted(tmp_path):
    config = annotation_config(description="uploaded")
    with TestClient(create_app(phantom_setup(tmp_path))) as client:
        reply = client.put("/admin/model/uploaded", headers=AUTH,
                           files={"config": (None, json.dumps(config)), "data": ("model.pt", _weights())})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"model": "uploaded", "version": "1"}
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models["uploaded"]["version"] == "1" and models["uploaded"]["description"] == "uploaded"
        volume, mask = phantom()
        click = client.post("/v1/dextr3d", params={"model": "uploaded", "output": "json"},
                            files={"file": ("x.nii.gz", write_volume(volume.array, volume.geometry, dtype="float32"))},
                            data={"params": json.dumps({"points": phantom_points(mask)})})
        assert click.status_code == 200

        again = client.put("/admin/model/uploaded", headers=AUTH,
                           files={"config": (None, json.dumps(config)), "data": ("model.pt", _weights(1))})
        assert again.json()["version"] == "2"
        info = client.get("/admin/model/uploaded", headers=AUTH).json()
        assert info["serving_version"] == "2" and info["config"]["model_path"] == "model.pt"

        refused = client.put("/admin/model/other", headers=AUTH,
                             files={"config": (None, json.dumps(config)), "data": ("model.pt", b"not weights")})
        assert refused.status_code == 400 and "does not load" in refused.json()["detail"]
        assert client.get("/admin/model/other", headers=AUTH).status_code == 404
        bad_config = client.put("/admin/model/other", headers=AUTH,
                                files={"config": (None, json.dumps({"type": "annotation"})), "data": ("m.pt", b"")})
        assert bad_config.status_code == 400 and "labels" in bad_config.json()["detail"]
        scripted = client.put("/admin/model/other", headers=AUTH, files={
            "config": (None, json.dumps({**config, "model_format": "torchscript"})), "data": ("m.ts", b"")})
        assert scripted.status_code == 400 and "weights-only" in scripted.json()["detail"]
        assert client.put("/admin/model/..bad", headers=AUTH,
                          files={"config": (None, "{}"), "data": ("m.pt", b"")}).status_code == 400

        assert client.delete("/admin/model/uploaded", headers=AUTH).json() == {"deleted": "uploaded"}
        assert "uploaded" not in {m["name"] for m in client.get("/v1/models").json()}
        assert client.delete("/admin/model/uploaded", headers=AUTH).status_code == 404
