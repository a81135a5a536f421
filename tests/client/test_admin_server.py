"""The client's admin calls against the real jobs API (a tiny model on phantom cases, real worker processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiaa_client import BadRequest, Client, NotFound

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import serve_in_thread  # noqa: E402
from jobs_helpers import TOKEN, phantom_setup, tiny_job  # noqa: E402

from server.app import create_app  # noqa: E402


@pytest.fixture()
def admin(tmp_path):
    with serve_in_thread(create_app(phantom_setup(tmp_path))) as port, \
            Client(f"http://127.0.0.1:{port}", TOKEN, timeout=60) as client:
        yield client, tmp_path


def test_submit_follow_versions_serve_and_errors_against_the_real_jobs_api(admin):
    client, tmp = admin
    body = tiny_job(tmp, epochs=1)
    job_id = client.submit(body["kind"], body["model"], body["datalist"], body["params"])
    seen = []
    job = client.follow(job_id, seen.append, poll_interval=0.2)
    assert job.state == "succeeded", job.error
    assert seen and seen[-1].state == "succeeded" and job.progress == pytest.approx(1.0)
    base, new = job.result["base_version"], job.result["version"]
    assert int(new) == int(base) + 1 and job.result["deployed"] is True
    assert any(j.id == job_id for j in client.jobs())
    assert client.logs(job_id, lines=20)
    assert [v["version"] for v in client.versions("tiny")] == [base, new]
    assert client.model("tiny")["version"] == new  # GET /v1/models shows the serving version
    client.serve("tiny", base)  # roll back
    assert client.model("tiny")["version"] == base
    with pytest.raises(NotFound):
        client.serve("tiny", "9")
    with pytest.raises(BadRequest):
        client.submit("finetune", "tiny", body["datalist"], {"epochs": 0})
