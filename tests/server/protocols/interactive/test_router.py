"""Our interactive API: every prompt type, masks, exact undo, reset, changed-box replies, bad input."""

import base64
import gzip
import json

import numpy as np
import pytest
from helpers import GEOMETRY, dice

from engines.data.io import read_volume, write_volume

CLICK = {"type": "point", "points": [[18, 25, 15]]}


def decode(reply: dict) -> np.ndarray:
    """The full mask a client rebuilds from replies (box pasted into the volume)."""
    (lo, hi) = reply["box"]
    size = [b - a for a, b in zip(lo, hi)]
    raw = gzip.decompress(base64.b64decode(reply["mask"]))
    return np.frombuffer(raw, np.uint8).reshape(size, order="F") > 0


def paste(full: np.ndarray, reply: dict) -> np.ndarray:
    (lo, hi) = reply["box"]
    out = full.copy()
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = decode(reply)
    return out


def prompt(client, sid, body, model="interactive_test", **query):
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return client.post(f"/v1/interactive/{sid}/prompt?model={model}{extra}", json=body)


def test_click_then_refine_then_undo_exactly(iclient, session):
    sid, truth = session
    first = prompt(iclient, sid, CLICK)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model"] == "interactive_test" and body["step"] == 1 and body["shape"] == [40, 48, 32]
    assert body["encoding"] == "gzip-base64-u8-fortran" and {"infer", "interact", "total"} <= set(body["timings"])
    mask1 = paste(np.zeros(truth.shape, bool), body)
    assert dice(mask1, truth) > 0.85 and body["voxels"] == int(mask1.sum())
    second = prompt(iclient, sid, {"type": "point", "positive": False, "points": [[18, 25, 20]]}).json()
    mask2 = paste(mask1, second)
    assert second["step"] == 2 and mask2.sum() < mask1.sum() and second["voxels"] == int(mask2.sum())
    changed = np.argwhere(mask1 != mask2)  # the reply's box is exactly what changed
    assert second["box"] == [changed.min(0).tolist(), (changed.max(0) + 1).tolist()]
    full = prompt(iclient, sid, CLICK, reply="full").json()
    assert full["box"] == [[0, 0, 0], [40, 48, 32]] and full["step"] == 3
    undone = iclient.post(f"/v1/interactive/{sid}/undo").json()
    assert undone["step"] == 2 and (paste(decode(full), undone) == mask2).all()
    undone = iclient.post(f"/v1/interactive/{sid}/undo").json()
    assert (paste(mask2, undone) == mask1).all() and undone["step"] == 1
    state = iclient.get(f"/v1/interactive/{sid}").json()
    assert state == {"session_id": sid, "shape": [40, 48, 32], "model": "interactive_test", "steps": 1,
                     "prompts": 1, "has_mask": True}
    got = iclient.get(f"/v1/interactive/{sid}/mask")
    image = read_volume(got.content, "m.nii.gz")
    assert (image.array > 0).tolist() == mask1.tolist() and np.allclose(image.geometry.spacing, GEOMETRY.spacing)
    as_json = iclient.get(f"/v1/interactive/{sid}/mask?format=json").json()
    assert (decode({**as_json, "box": [[0, 0, 0], as_json["shape"]]}) == mask1).all()


@pytest.mark.parametrize("body", [
    {"type": "box", "box": [[10, 15, 15], [26, 35, 15]]},
    {"type": "scribble", "points": [[18, 25, 15], [19, 25, 15], [20, 26, 15]]},
    {"type": "lasso", "points": [[8, 14, 15], [28, 14, 15], [28, 36, 15], [8, 36, 15]]},
    {"type": "extreme_points", "points": [[10, 25, 15], [26, 25, 15], [18, 15, 15], [18, 35, 15]]},
])
def test_every_prompt_type_segments_the_object(iclient, session, body):
    sid, truth = session
    reply = prompt(iclient, sid, body)
    assert reply.status_code == 200, reply.text
    assert dice(paste(np.zeros(truth.shape, bool), reply.json()), truth) > 0.75


def test_initial_mask_as_image_or_json_then_undo_and_reset(iclient, session):
    sid, truth = session
    data = write_volume(truth, GEOMETRY, ".nii.gz")
    reply = iclient.put(f"/v1/interactive/{sid}/mask?model=interactive_test", files={"mask": ("m.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["voxels"] == int(truth.sum()) and reply.json()["step"] == 1
    half = truth.astype(bool).copy()
    half[:18] = False
    body = {"shape": list(truth.shape), "encoding": "gzip-base64-u8-fortran",
            "mask": base64.b64encode(gzip.compress(half.astype(np.uint8).tobytes(order="F"))).decode()}
    reply = iclient.put(f"/v1/interactive/{sid}/mask", json=body)  # model: the bound one
    assert reply.status_code == 200 and reply.json()["voxels"] == int(half.sum()) and reply.json()["step"] == 2
    assert iclient.post(f"/v1/interactive/{sid}/undo").json()["voxels"] == int(truth.sum())
    reset = iclient.post(f"/v1/interactive/{sid}/reset").json()
    assert reset["model"] is None and reset["steps"] == 0
    assert iclient.post(f"/v1/interactive/{sid}/undo").status_code == 409
    assert iclient.get(f"/v1/interactive/{sid}/mask").status_code == 404


def test_another_model_starts_a_new_object_only_when_its_prompt_succeeds(iclient, session):
    sid, _ = session
    prompt(iclient, sid, CLICK)
    prompt(iclient, sid, CLICK)
    assert prompt(iclient, sid, {"type": "point", "points": [[99, 0, 0]]}, model="interactive_other").status_code == 400
    assert iclient.get(f"/v1/interactive/{sid}").json()["steps"] == 2  # the old object is intact
    other = prompt(iclient, sid, CLICK, model="interactive_other").json()
    assert other["model"] == "interactive_other" and other["step"] == 1


@pytest.mark.parametrize("body, status", [
    ({"type": "point", "points": [[40, 0, 0]]}, 400),                       # outside the volume
    ({"type": "point", "points": [[-1, 0, 0]]}, 400),
    ({"type": "box", "box": [[0, 0, 0], [40, 10, 10]]}, 400),               # outside (corners inclusive)
    ({"type": "scribble", "points": []}, 400),                              # empty
    ({"type": "lasso", "points": [[1, 1, 1], [5, 5, 5], [1, 5, 9]]}, 400),  # not on one slice
    ({"type": "point"}, 400),                                               # no points
    ({"type": "box"}, 400),
    ({"type": "wave", "points": [[1, 1, 1]]}, 400),                         # unknown type
    ({"type": "point", "points": [[1, 1]]}, 400),                           # malformed
    ({"type": "point", "points": [[1, 1, 1]], "extra": 1}, 400),
])
def test_bad_prompts_are_400_and_change_nothing(iclient, session, body, status):
    sid, _ = session
    prompt(iclient, sid, CLICK)
    before = iclient.get(f"/v1/interactive/{sid}/mask?format=json").json()
    reply = prompt(iclient, sid, body)
    assert reply.status_code == status and set(reply.json()) == {"error", "detail"}
    assert iclient.get(f"/v1/interactive/{sid}").json()["steps"] == 1
    assert iclient.get(f"/v1/interactive/{sid}/mask?format=json").json() == before


def test_bad_sessions_models_and_masks(iclient, session):
    sid, truth = session
    assert prompt(iclient, "nope", CLICK).status_code == 440
    assert iclient.post("/v1/interactive/nope/undo").status_code == 440
    assert iclient.get("/v1/interactive/nope").status_code == 440
    assert prompt(iclient, sid, CLICK, model="missing").status_code == 404
    assert prompt(iclient, sid, CLICK, model="segmentation_test").status_code == 400
    assert iclient.post(f"/v1/interactive/{sid}/prompt", json=CLICK).status_code in (400, 422)  # no model
    assert iclient.post(f"/v1/interactive/{sid}/undo").status_code == 409
    assert prompt(iclient, sid, CLICK, reply="all").status_code == 400
    assert iclient.put(f"/v1/interactive/{sid}/mask", json={"shape": [40, 48, 32], "mask": ""}).status_code == 400
    wrong = {"shape": [4, 4, 4], "encoding": "gzip-base64-u8-fortran",
             "mask": base64.b64encode(gzip.compress(bytes(64))).decode()}
    assert iclient.put(f"/v1/interactive/{sid}/mask?model=interactive_test", json=wrong).status_code == 400
    bomb = {"shape": list(truth.shape), "encoding": "gzip-base64-u8-fortran",
            "mask": base64.b64encode(gzip.compress(bytes(100 * truth.size))).decode()}
    assert iclient.put(f"/v1/interactive/{sid}/mask?model=interactive_test", json=bomb).status_code == 400
    off_grid = write_volume(truth[:, :, :30], GEOMETRY, ".nii.gz")
    reply = iclient.put(f"/v1/interactive/{sid}/mask?model=interactive_test", files={"mask": ("m.nii.gz", off_grid)})
    assert reply.status_code == 400
    assert iclient.get(f"/v1/interactive/{sid}").json()["steps"] == 0


def test_the_interaction_counts_in_the_memory_budget_and_expires_with_the_session(interactive_app, iclient, session):
    sid, _ = session
    store = interactive_app.state.sessions
    before = store.stats()["bytes"]
    prompt(iclient, sid, CLICK)
    assert store.stats()["bytes"] > before + 40 * 48 * 32 * 4  # the normalised image and the mask count
    assert iclient.delete(f"/session/{sid}").status_code == 200
    assert prompt(iclient, sid, CLICK).status_code == 440 and store.stats()["bytes"] == 0


def test_openapi_documents_the_interactive_routes(iclient):
    paths = iclient.get("/openapi.json").json()["paths"]
    operation = paths["/v1/interactive/{session_id}/prompt"]["post"]
    assert "application/json" in operation["requestBody"]["content"]
    assert "box" in operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    model = next(p for p in operation["parameters"] if p["name"] == "model")
    assert model["required"] and set(model["schema"]["enum"]) == {"interactive_test", "interactive_other"}
    for path in ("undo", "reset", "mask"):
        assert f"/v1/interactive/{{session_id}}/{path}" in paths
    assert json.dumps(paths["/v1/deepgrow"]["post"]).count("foreground") >= 1
