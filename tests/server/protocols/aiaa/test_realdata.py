"""The committed models, served through the app, on real validation cases of ../shared/data."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import HIPPOCAMPUS, REPO, dice
from multipart import parse_like_cpp_client

from engines.data.io import read_volume
from engines.evaluation.scoring import dice_per_label
from engines.transforms.points import extreme_points
from server.app import create_app
from server.settings import Settings

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (HIPPOCAMPUS / "datalist.json").is_file(),
                       reason="../shared/data/msd_hippocampus is absent (real data lives beside the repo)"),
]
CASES = 6


@pytest.fixture(scope="module")
def served():
    with TestClient(create_app(Settings(config=str(REPO / "engine_pool.json")))) as client:
        yield client


@pytest.fixture(scope="module")
def cases():
    validation = json.loads((HIPPOCAMPUS / "datalist.json").read_text())["validation"][:CASES]
    return [(HIPPOCAMPUS / c["image"], np.rint(read_volume(HIPPOCAMPUS / c["label"]).array).astype(np.uint8))
            for c in validation]


def test_the_shipped_models_are_served(served):
    models = {m["name"]: m["type"] for m in served.get("/v1/models").json()}
    assert models == {"annotation_mri_hippocampus": "annotation", "segmentation_mri_hippocampus": "segmentation",
                      "interactive_any": "deepgrow"}


def test_extreme_points_give_a_hippocampus_mask(served, cases):
    scores = []
    for image, label in cases:
        points = extreme_points(label > 0).astype(int).tolist()
        reply = served.post("/v1/dextr3d?model=annotation_mri_hippocampus",
                            data={"params": json.dumps({"points": points})},
                            files={"image": (image.name, image.read_bytes())})
        assert reply.status_code == 200, reply.text
        mask = read_volume(parse_like_cpp_client(reply.content)[1], "r.nii.gz").array
        assert mask.shape == label.shape
        scores.append(dice(mask, label > 0))
    assert np.mean(scores) > 0.85, scores


def test_automatic_segmentation_of_head_and_body(served, cases):
    scores = []
    for image, label in cases:
        reply = served.post("/v1/segmentation?model=segmentation_mri_hippocampus", data={"params": "{}"},
                            files={"image": (image.name, image.read_bytes())})
        assert reply.status_code == 200, reply.text
        params, data = parse_like_cpp_client(reply.content)
        assert len(params["points"]) == 6
        scores.append(dice_per_label(read_volume(data, "r.nii.gz").array, label, 2))
    mean = np.mean(scores, axis=0)
    assert mean[0] > 0.8 and mean[1] > 0.8, mean
