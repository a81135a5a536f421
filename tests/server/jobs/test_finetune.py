"""A real fine-tune of the shipped extreme-point model through the HTTP API, with clicks during the switch."""

import threading

import httpx
import pytest
from helpers import HIPPOCAMPUS, serve_in_thread
from jobs_helpers import AUTH, MODEL, click_request, hippocampus_datalist, job_settings, wait_for

from server.app import create_app

pytestmark = pytest.mark.realdata


@pytest.fixture()
def served(tmp_path):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip("../shared/data/msd_hippocampus is absent (real data lives beside the repo)")
    with serve_in_thread(create_app(job_settings(tmp_path))) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client, tmp_path


def test_finetune_registers_and_serves_a_new_version_without_failing_a_click_then_rolls_back(served):
    client, tmp = served
    assert client.get("/v1/models").json()[0]["version"] == "2"  # the shipped config's version, registered
    datalist = hippocampus_datalist(tmp)
    reply = client.post("/admin/jobs", headers=AUTH, json={
        "kind": "finetune", "model": MODEL, "datalist": str(datalist),
        "params": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-4, "val_interval": 1, "max_dice_drop": 1.0}})
    assert reply.status_code == 202
    job_id = reply.json()["job_id"]

    statuses, versions, stop = [], set(), threading.Event()

    def click_all_along():
        request = click_request()
        with httpx.Client(base_url=str(client.base_url), timeout=120) as clicker:
            while not stop.is_set():
                answer = clicker.post("/v1/dextr3d", **request)
                statuses.append(answer.status_code)
                versions.add(clicker.get("/v1/models").json()[0]["version"])
                stop.wait(0.1)  # an annotator's pace: a click loop without pause starves the niced worker on a busy CPU

    clicker = threading.Thread(target=click_all_along)
    clicker.start()
    try:
        seen = wait_for(client, job_id, lambda j: j["state"] == "running" and j["pid"])
        assert seen["pid"] > 0
        job = wait_for(client, job_id, lambda j: j["state"] not in ("queued", "running"), timeout=240)
        # a few clicks on the new version after the switch
        wait_for(client, job_id, lambda j: len(statuses) > 0 and "3" in versions, timeout=60)
    finally:
        stop.set()
        clicker.join()
    assert job["state"] == "succeeded", client.get(f"/admin/jobs/{job_id}/logs", headers=AUTH).text
    assert job["progress"] == 1.0 and job["epoch"] == 1 and job["epochs"] == 1
    assert job["metrics"]["loss"] > 0 and 0 <= job["metrics"]["dice"] <= 1
    assert job["result"] == {**job["result"], "version": "3", "base_version": "2", "deployed": True}
    gate = job["result"]["metrics"]["quality_gate"]  # both through aiaa evaluate on the job's validation cases
    assert gate["passed"] and gate["max_dice_drop"] == 1.0 and 0 < gate["base_dice"] <= 1 and 0 <= gate["dice"] <= 1
    assert job["started_at"] and job["finished_at"] and job["pid"] is None
    assert statuses and set(statuses) == {200}, statuses
    assert {"2", "3"} <= versions
    assert client.get("/v1/models").json()[0]["version"] == "3"

    listed = client.get(f"/admin/models/{MODEL}/versions", headers=AUTH).json()
    assert listed["serving"] == "3"
    new = listed["versions"][-1]
    assert new["version"] == "3" and new["source"]["job_id"] == job_id and new["metrics"]["val_mean_dice"][0] > 0
    logs = client.get(f"/admin/jobs/{job_id}/logs", headers=AUTH, params={"lines": 5}).text
    assert logs.strip() and len(logs.strip().splitlines()) <= 5
    events = client.get(f"/admin/jobs/{job_id}/events", headers=AUTH).text
    assert "event: end" in events and '"succeeded"' in events

    assert client.put(f"/admin/models/{MODEL}/serving", headers=AUTH, json={"version": "2"}).status_code == 200
    assert client.get("/v1/models").json()[0]["version"] == "2"
    assert client.post("/v1/dextr3d", **click_request()).status_code == 200
    missing = client.put(f"/admin/models/{MODEL}/serving", headers=AUTH, json={"version": "9"})
    assert missing.status_code == 404 and client.get("/v1/models").json()[0]["version"] == "2"


def test_a_finetune_worse_than_the_serving_version_is_kept_but_not_deployed(served):
    client, tmp = served
    reply = client.post("/admin/jobs", headers=AUTH, json={
        "kind": "finetune", "model": MODEL, "datalist": str(hippocampus_datalist(tmp)),
        "params": {"epochs": 1, "batch_size": 2, "learning_rate": 5.0, "val_interval": 1}})  # ruins the weights
    assert reply.status_code == 202, reply.text
    job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"), timeout=300)
    assert job["state"] == "succeeded", job["error"]
    gate = job["result"]["metrics"]["quality_gate"]
    assert not gate["passed"] and gate["dice"] < gate["base_dice"] and gate["max_dice_drop"] == 0.0
    assert job["result"]["deployed"] is False and "quality gate" in job["result"]["not_deployed"]
    assert client.get("/v1/models").json()[0]["version"] == "2"  # what served still serves
    listed = client.get(f"/admin/models/{MODEL}/versions", headers=AUTH).json()
    assert listed["serving"] == "2" and listed["versions"][-1]["version"] == job["result"]["version"]  # kept
