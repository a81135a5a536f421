"""The SDK's interactive session, sync and async, in-process and over uvicorn; and ``aiaa-client interact``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiaa_client import BadRequest, Client
from aiaa_client.cli import load_replay, main
from conftest import interactive_pool
from fastapi.testclient import TestClient
from helpers import call, dice, opened, phantom

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings

pytestmark = pytest.mark.anyio
MODEL = "interactive_test"


@pytest.fixture(scope="module")
def app():
    return create_app(Settings(config="unused.json", max_voxels=200_000), interactive_pool())


async def test_every_prompt_undo_and_reset_keep_the_client_mask_equal_to_the_servers(api, app):
    volume, truth = phantom()
    async with opened(api.session(volume.array, affine=np.diag([0.8, 0.9, 1.5, 1.0]))) as session:
        obj = session.interactive(MODEL)
        first = await call(obj.add_point([18, 25, 15]))
        assert first["step"] == 1 and "mask" not in first and dice(obj.mask, truth) > 0.85
        after_click = obj.mask.copy()
        await call(obj.add_point([18, 25, 20], positive=False))
        assert obj.mask.sum() < after_click.sum() and not obj.mask[18, 25, 20]
        await call(obj.add_box([10, 15, 15], [26, 35, 15]))
        scribble = np.zeros(truth.shape, bool)
        scribble[17:20, 25, 15] = True
        await call(obj.add_scribble(scribble))
        await call(obj.add_lasso([[8, 14, 15], [28, 14, 15], [28, 36, 15], [8, 36, 15]]))
        await call(obj.add_extreme_points([[10, 25, 15], [26, 25, 15]]))
        await call(obj.set_mask(truth))
        assert obj.step == 7 and (obj.mask == truth.astype(bool)).all()
        server = app.state.sessions.get(session.id).interaction.state
        for _ in range(6):
            await call(obj.undo())
            assert (obj.mask == server.mask).all()
        assert obj.step == 1 and (obj.mask == after_click).all()
        downloaded = read_volume(await call(obj.download()), "m.nii.gz")
        assert (downloaded.array > 0).tolist() == after_click.tolist()
        with pytest.raises(BadRequest):
            await call(obj.add_point([99, 0, 0]))
        assert obj.step == 1
        await call(obj.reset())
        assert obj.mask is None and obj.step == 0
        with pytest.raises(BadRequest):  # nothing to undo: 409
            await call(obj.undo())
        with pytest.raises(ValueError):
            await call(obj.add_scribble([]))


async def test_an_expired_session_is_recreated_with_the_mask_given_back(app):
    volume, truth = phantom()
    with TestClient(app) as test_client:
        client = Client("http://testserver", http_client=test_client)
        with client.session(volume.array) as session:
            obj = session.interactive(MODEL)
            obj.add_point([18, 25, 15])
            kept = obj.mask.copy()
            app.state.sessions.delete(session.id)  # the server forgot the session (expiry)
            obj.add_point([18, 25, 20], positive=False)
            assert session.recreated == 1 and obj.step == 2  # restored mask, then the click
            obj.undo()
            assert (obj.mask == kept).all()


def test_replay_file_formats(tmp_path):
    steps = [{"type": "point", "points": [[1, 2, 3]]}, {"type": "undo"}]
    (tmp_path / "a.json").write_text(json.dumps({"model": "m", "prompts": steps}))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(s) for s in steps))
    assert load_replay(str(tmp_path / "a.json")) == ("m", steps)
    assert load_replay(str(tmp_path / "b.jsonl")) == (None, steps)
    (tmp_path / "c.json").write_text(json.dumps([{"type": "wave"}]))
    with pytest.raises(ValueError, match="type"):
        load_replay(str(tmp_path / "c.json"))


def test_cli_replays_a_file_of_prompts(port, tmp_path, capsys):
    volume, truth = phantom()
    image = tmp_path / "image.nii.gz"
    image.write_bytes(write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32"))
    (tmp_path / "init.nii.gz").write_bytes(write_volume(truth, volume.geometry, ".nii.gz"))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"model": MODEL, "prompts": [
        {"type": "point", "points": [[18, 25, 15]]},
        {"type": "point", "points": [[18, 25, 20]], "positive": False},
        {"type": "undo"},
        {"type": "box", "box": [[10, 15, 15], [26, 35, 15]]},
        {"type": "mask", "file": "init.nii.gz"},
    ]}))
    out = tmp_path / "mask.nii.gz"
    code = main(["--server", f"http://127.0.0.1:{port}", "interact", str(image), "--prompts", str(prompts),
                 "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = [json.loads(line) for line in printed.splitlines()[:5]]
    assert [line["step"] for line in lines] == [1, 2, 1, 2, 3] and lines[2]["type"] == "undo"
    result = read_volume(out.read_bytes(), "mask.nii.gz")
    assert (result.array > 0).tolist() == (truth > 0).tolist()
    np.testing.assert_allclose(result.geometry.spacing, volume.geometry.spacing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"type": "point", "points": [[99, 0, 0]]}]))
    code = main(["--server", f"http://127.0.0.1:{port}", "interact", str(image), "--prompts", str(bad),
                 "--model", MODEL])
    assert code == 1 and "outside" in capsys.readouterr().err
