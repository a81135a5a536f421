"""PUT /admin/bundle/{name}: a zipped MONAI bundle served by an administrator; unsafe or broken uploads refused."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
from bundle_helpers import SPLEEN_INFERENCE, SPLEEN_METADATA, ct_image, write_bundle
from fastapi.testclient import TestClient
from jobs_helpers import AUTH, phantom_setup
from multipart import parse_like_cpp_client

from engines.data.io import write_volume
from server.app import create_app

OVERRIDES = json.dumps({"inferer#roi_size": [32, 32, 32]})


def _zipped(folder, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder)}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_an_uploaded_bundle_serves_and_unsafe_or_broken_ones_are_refused(tmp_path):
    good = _zipped(write_bundle(tmp_path / "spleen", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA))
    broken_config = copy.deepcopy(SPLEEN_INFERENCE)
    del broken_config["network_def"]
    broken = _zipped(write_bundle(tmp_path / "broken", broken_config, SPLEEN_METADATA,
                                  weights_net=SPLEEN_INFERENCE["network_def"]))
    settings = phantom_setup(tmp_path / "server")
    with TestClient(create_app(settings)) as client:
        put = client.put("/admin/bundle/spleen", headers=AUTH,
                         files={"data": ("spleen.zip", good), "overrides": (None, OVERRIDES)})
        assert put.status_code == 200, put.text
        assert put.json()["labels"] == ["spleen"] and put.json()["version"] == "1"
        volume = ct_image()
        reply = client.post("/v1/segmentation?model=spleen&output=json", data={"params": "{}"},
                            files={"image": ("c.nii.gz", write_volume(volume.array, volume.geometry, dtype=np.float32))})
        assert reply.status_code == 200, reply.text

        unsafe = client.put("/admin/bundle/evil", headers=AUTH,
                            files={"data": ("e.zip", _zipped(tmp_path / "spleen", {"../../evil.py": b"x"}))})
        assert unsafe.status_code == 400 and "outside the bundle folder" in unsafe.json()["detail"]
        code = client.put("/admin/bundle/evil", headers=AUTH,
                          files={"data": ("e.zip", good), "overrides": (None, json.dumps({"inferer#roi_size": "$1"}))})
        assert code.status_code == 400 and "not allowed" in code.json()["detail"]
        assert not (settings.model_store_path() / "evil").exists()
        not_loading = client.put("/admin/bundle/broken", headers=AUTH, files={"data": ("b.zip", broken)})
        assert not_loading.status_code == 400 and "lacks network_def" in not_loading.json()["detail"]
        taken = client.put("/admin/bundle/tiny", headers=AUTH, files={"data": ("s.zip", good)})
        assert taken.status_code == 409
        assert client.put("/admin/bundle/spleen", files={"data": ("s.zip", good)}).status_code in (401, 403)
        names = {m["name"] for m in client.get("/v1/models").json()}
        assert {"spleen", "tiny"} <= names and "broken" not in names and "evil" not in names


def test_uploaded_bundles_are_stored_versions_that_roll_back_and_survive_a_restart(tmp_path):
    first = _zipped(write_bundle(tmp_path / "a" / "spleen", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA))
    second = _zipped(write_bundle(tmp_path / "b" / "spleen", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA, seed=1))
    settings = phantom_setup(tmp_path / "server")
    volume = write_volume(ct_image().array, ct_image().geometry, dtype=np.float32)

    def mask(client) -> bytes:
        reply = client.post("/v1/segmentation?model=spleen", data={"params": "{}"}, files={"image": ("c.nii.gz", volume)})
        assert reply.status_code == 200, reply.text
        return parse_like_cpp_client(reply.content)[1]  # the mask file, without the multipart boundary

    def served(client) -> str:
        return {m["name"]: m for m in client.get("/v1/models").json()}["spleen"]["version"]

    with TestClient(create_app(settings)) as client:
        for data in (first, second):
            put = client.put("/admin/bundle/spleen", headers=AUTH,
                             files={"data": ("s.zip", data), "overrides": (None, OVERRIDES)})
            assert put.status_code == 200, put.text
        assert put.json()["version"] == "2" and served(client) == "2"
        newest = mask(client)
        versions = client.get("/admin/models/spleen/versions", headers=AUTH).json()
        assert [v["version"] for v in versions["versions"]] == ["1", "2"] and versions["serving"] == "2"
        assert client.put("/admin/models/spleen/serving", headers=AUTH, json={"version": "1"}).status_code == 200
        assert served(client) == "1"
        oldest = mask(client)
        assert oldest != newest  # other weights: the rollback really serves version 1
    with TestClient(create_app(settings)) as client:  # a restart serves the version chosen last
        assert served(client) == "1" and mask(client) == oldest
        assert client.get("/admin/models/spleen/versions", headers=AUTH).json()["serving"] == "1"
        shown = client.get("/admin/model/spleen", headers=AUTH).json()
        assert shown["serving_version"] == "1" and shown["metadata"]["version"] == SPLEEN_METADATA["version"]
