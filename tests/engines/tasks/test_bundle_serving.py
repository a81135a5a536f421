"""A bundle pool entry served by the app: listed, answering /v1/segmentation and /v1/inference like any model."""

from __future__ import annotations

import copy
import json

import numpy as np
from bundle_helpers import SPLEEN_INFERENCE, SPLEEN_METADATA, ct_image, write_bundle
from fastapi.testclient import TestClient

from engines.data.io import read_volume, write_volume
from engines.serving.pool import EnginePool
from server.app import create_app


def test_a_bundle_entry_answers_like_any_segmentation_model(tmp_path, settings):
    write_bundle(tmp_path / "spleen_ct_segmentation", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA)
    pool_file = tmp_path / "engine_pool.json"
    pool_file.write_text(json.dumps([{"name": "spleen", "bundle": "spleen_ct_segmentation",
                                      "overrides": {"inferer#roi_size": [32, 32, 32]}}]))
    pool = EnginePool.from_file(pool_file, warmup=False)
    volume = ct_image()
    upload = write_volume(volume.array, volume.geometry, ".nii.gz", dtype=np.float32)
    # The engine on the decoded upload (NIfTI stores the spacing as float32: the grid the server sees).
    expected = pool.get("spleen").infer(read_volume(upload, "case.nii.gz"), {}).mask
    assert set(np.unique(expected)) == {0, 1}

    with TestClient(create_app(settings, pool)) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models["spleen"]["type"] == "segmentation" and models["spleen"]["labels"] == ["spleen"]
        for route in ("/v1/segmentation", "/v1/inference"):
            reply = client.post(f"{route}?model=spleen&output=image", data={"params": json.dumps({})},
                                files={"image": ("case.nii.gz", upload)})
            assert reply.status_code == 200, reply.text
            mask = read_volume(reply.content, "mask.nii.gz")
            np.testing.assert_array_equal(mask.array, expected)
            np.testing.assert_allclose(mask.geometry.spacing, volume.geometry.spacing, atol=1e-6)
