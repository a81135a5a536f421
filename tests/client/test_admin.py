"""Admin methods against a stand-in of the jobs issue's routes (tests/client/fake_admin.py), sync and async."""

from __future__ import annotations

import inspect
import json

import httpx
import pytest
from aiaa_client import AsyncClient, BadRequest, Client, Job, NotFound, Timeout, Unauthorized
from fake_admin import TOKEN, FakeAdmin, create_fake_admin
from fastapi.testclient import TestClient
from helpers import serve_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def state():
    return FakeAdmin()


@pytest.fixture(params=["sync-asgi", "async-asgi", "sync-uvicorn", "async-uvicorn"])
async def admin(request, state):
    """(client, state) with the admin token; in-process or over a loopback socket (real SSE streaming)."""
    app = create_fake_admin(state)
    if request.param == "sync-asgi":
        with TestClient(app) as test_client:
            yield Client("http://testserver", TOKEN, http_client=test_client)
    elif request.param == "async-asgi":
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as http:
            yield AsyncClient("http://testserver", TOKEN, http_client=http)
    elif request.param == "sync-uvicorn":
        with serve_in_thread(app) as port, Client(f"http://127.0.0.1:{port}", TOKEN, timeout=10) as client:
            yield client
    else:
        with serve_in_thread(app) as port:
            async with AsyncClient(f"http://127.0.0.1:{port}", TOKEN, timeout=10) as client:
                yield client


async def call(value):
    return await value if inspect.isawaitable(value) else value


async def test_submit_show_list_logs(admin, state):
    job_id = await call(admin.submit("finetune", "annotation_test", "datalists/site.json", {"epochs": 3}))
    assert state.jobs[job_id].params == {"epochs": 3}
    job = await call(admin.job(job_id))
    assert isinstance(job, Job) and job.id == job_id and job.state == "queued" and job.epochs == 3
    assert job.kind == "finetune" and job.model == "annotation_test" and not job.done
    listed = await call(admin.jobs())
    assert [j.id for j in listed] == [job_id]
    await call(admin.job(job_id))
    await call(admin.job(job_id))
    logs = await call(admin.logs(job_id, lines=1))
    assert logs == "epoch 3/3 loss 0.250\n"  # three reads moved the scripted job to epoch 3


async def test_follow_reports_every_change_and_returns_the_final_job(admin, state):
    job_id = await call(admin.submit("train", "annotation_test", "datalists/site.json"))
    seen = []
    final = await call(admin.follow(job_id, seen.append, poll_interval=0.01))
    assert final.state == "succeeded" and final.result == {"version": "3"} and final.progress == 1.0
    assert seen[0].state == "queued" and [j.epoch for j in seen if j.state == "running"] == [1, 2, 3]
    progress = [j.progress for j in seen]
    assert progress == sorted(progress)
    assert ("GET", f"/admin/jobs/{job_id}/events") in state.requests  # it used the event stream


async def test_follow_falls_back_to_polling_without_an_event_stream(admin, state):
    state.events = False
    job_id = await call(admin.submit("evaluate", "annotation_test", "datalists/site.json"))
    seen = []
    final = await call(admin.follow(job_id, seen.append, poll_interval=0.01))
    assert final.state == "succeeded" and [j.epoch for j in seen if j.state == "running"] == [1, 2, 3]


async def test_wait_polls_until_done_or_times_out(admin):
    job_id = await call(admin.submit("export", "annotation_test", "datalists/site.json"))
    assert (await call(admin.wait(job_id, poll_interval=0.01))).state == "succeeded"
    other = await call(admin.submit("export", "annotation_test", "datalists/site.json"))
    with pytest.raises(Timeout, match="still"):
        await call(admin.wait(other, timeout=0, poll_interval=0.01))


async def test_cancel_and_resume(admin):
    job_id = await call(admin.submit("finetune", "annotation_test", "datalists/site.json"))
    await call(admin.job(job_id))
    cancelled = await call(admin.cancel(job_id))
    assert isinstance(cancelled, Job) and cancelled.state == "cancelled" and cancelled.done
    resumed = await call(admin.resume(job_id))
    assert resumed.state == "queued"
    with pytest.raises(BadRequest) as err:  # 409: only a stopped job resumes
        await call(admin.resume(job_id))
    assert err.value.status == 409 and err.value.error == "Conflict"
    with pytest.raises(NotFound):
        await call(admin.job("no-such-job"))


async def test_versions_and_serving(admin, state):
    versions = await call(admin.versions("annotation_test"))
    assert [(v["version"], v["serving"]) for v in versions] == [("1", False), ("2", True)]
    assert (await call(admin.serve("annotation_test", 1)))["serving"] == "1"
    assert state.serving["annotation_test"] == "1"
    with pytest.raises(NotFound):
        await call(admin.serve("annotation_test", "9"))


async def test_upload_replace_get_delete_model_and_dataset(admin, state, tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x80weights")
    config = {"version": "1", "type": "segmentation", "labels": ["spleen"]}
    added = await call(admin.upload_model("spleen", config, weights))
    assert added["config"] == config and added["weights_bytes"] == 8 and added["version"] == "1"
    replaced = await call(admin.replace_model("spleen", json.dumps(config).encode(), b"new"))
    assert replaced["version"] == "2"
    assert (await call(admin.admin_model("spleen")))["weights_bytes"] == 3
    assert (await call(admin.delete_model("spleen")))["deleted"] is True
    with pytest.raises(NotFound):
        await call(admin.admin_model("spleen"))
    image, label = tmp_path / "case1.nii.gz", tmp_path / "case1_seg.nii.gz"
    image.write_bytes(b"img")
    label.write_bytes(b"lab")
    dataset = await call(admin.upload_dataset([image], [label]))
    assert state.datasets[dataset["dataset_id"]] == {"images": 1, "labels": 1}


async def test_admin_calls_need_the_token(state):
    app = create_fake_admin(state)
    with TestClient(app) as test_client:
        with pytest.raises(Unauthorized) as err:
            Client("http://testserver", http_client=test_client).jobs()
        assert err.value.status == 401 and "Bearer" in err.value.detail
        with pytest.raises(Unauthorized) as err:
            Client("http://testserver", "wrong", http_client=test_client).submit("train", "m", "d.json")
        assert err.value.status == 403
