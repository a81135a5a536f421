"""Job life cycle with real worker processes: cancel, kill -9, resume, a server crash and restart."""

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import serve_in_thread
from jobs_helpers import AUTH, TOKEN, phantom_setup, server_process, tiny_job, wait_for

from server.app import create_app
from server.cli.main import main


@pytest.fixture()
def served(tmp_path):
    with serve_in_thread(create_app(phantom_setup(tmp_path))) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, tmp_path


def _submit(client, body) -> str:
    reply = client.post("/admin/jobs", headers=AUTH, json=body)
    assert reply.status_code == 202, reply.text
    return reply.json()["job_id"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_cancel_stops_at_a_batch_with_a_checkpoint_and_resume_finishes_from_the_admin_cli(served, capsys,
                                                                                          monkeypatch):
    client, tmp = served
    monkeypatch.setenv("AIAA_ADMIN_TOKEN", TOKEN)
    cli = ["--server", str(client.base_url)]
    assert main(["jobs", "submit", "finetune", "--model", "tiny", "--datalist", str(tmp / "data" / "datalist.json"),
                 "--param", "epochs=12", "--param", "batch_size=1", "--param", "val_interval=100", *cli]) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]
    running = wait_for(client, job_id, lambda j: (j["epoch"] or 0) >= 2)
    assert running["state"] == "running" and 0 < running["progress"] < 1 and running["eta_s"] is not None
    assert main(["jobs", "cancel", job_id, *cli]) == 0
    job = wait_for(client, job_id, lambda j: j["state"] != "running")
    assert job["state"] == "cancelled" and job["cancelled_by"] == "stop" and job["error"] is None
    assert job["progress"] < 1 and job["pid"] is None
    work = tmp / "state" / "jobs" / job_id
    assert (work / "out" / "model" / "checkpoint_last.pt").is_file()
    assert client.delete(f"/admin/jobs/{job_id}", headers=AUTH).status_code == 409  # already over
    capsys.readouterr()

    assert main(["jobs", "resume", job_id, *cli]) == 0
    assert json.loads(capsys.readouterr().out)["attempt"] == 2
    assert main(["jobs", "show", job_id, "--follow", *cli]) == 0
    followed = capsys.readouterr()
    assert json.loads(followed.out)["state"] == "succeeded" and json.loads(followed.out)["progress"] == 1.0
    assert "succeeded" in followed.err.splitlines()[-1]  # the progress bar's plain lines off a terminal
    done = client.get(f"/admin/jobs/{job_id}", headers=AUTH).json()
    new_version = str(int(done["params"]["base_version"]) + 1)
    assert done["result"]["version"] == new_version and done["attempt"] == 2
    metrics = json.loads((work / "out" / "model" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 13))
    assert (work / "out" / "model" / "tensorboard").is_dir()

    assert main(["jobs", "logs", job_id, "--lines", "1000", *cli]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(["jobs", "list", *cli]) == 0
    assert job_id in capsys.readouterr().out
    assert main(["models", "versions", "tiny", *cli]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listed if v["serving"]] == [new_version]
    assert main(["models", "serve", "tiny", done["params"]["base_version"], *cli]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "tiny", "version": done["params"]["base_version"]}
    assert main(["jobs", "resume", job_id, *cli]) != 0  # a succeeded job does not resume
    assert "only interrupted, cancelled or failed" in capsys.readouterr().err
    assert main(["jobs", "list", "--token", "wrong", *cli]) != 0
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["jobs", "list", "--server", "http://127.0.0.1:9"]) != 0
    assert "aiaa-client:" in capsys.readouterr().err


def test_a_worker_killed_with_sigkill_is_interrupted_within_seconds_and_the_queue_moves_on(served):
    client, tmp = served
    killed = _submit(client, tiny_job(tmp, epochs=5000))
    following = _submit(client, tiny_job(tmp, epochs=1))
    never = _submit(client, tiny_job(tmp, epochs=1))
    job = wait_for(client, killed, lambda j: (j["epoch"] or 0) >= 1)
    assert client.get(f"/admin/jobs/{following}", headers=AUTH).json()["state"] == "queued"  # one job at a time
    assert client.delete(f"/admin/jobs/{never}", headers=AUTH).status_code == 202
    assert wait_for(client, never, lambda j: j["state"] != "queued")["cancelled_by"] == "queue"

    os.kill(job["pid"], signal.SIGKILL)
    job = wait_for(client, killed, lambda j: j["state"] != "running")
    assert job["state"] == "interrupted" and "signal 9" in job["error"]
    started = wait_for(client, following, lambda j: j["state"] == "running" and j["pid"])  # the queue moves on
    os.kill(started["pid"], signal.SIGKILL)
    assert wait_for(client, following, lambda j: j["state"] != "running")["state"] == "interrupted"
    assert client.get(f"/admin/jobs/{never}", headers=AUTH).json()["started_at"] is None
    assert client.get("/health/ready").status_code == 200  # the server kept serving throughout


def test_a_server_crash_leaves_running_jobs_interrupted_and_finished_ones_intact(tmp_path):
    settings = phantom_setup(tmp_path)
    server, client = server_process(settings, tmp_path)
    try:
        finished = _submit(client, {"kind": "evaluate", "model": "tiny",
                                    "datalist": str(tmp_path / "data" / "datalist.json")})
        evaluated = wait_for(client, finished, lambda j: j["state"] not in ("queued", "running"), timeout=120)
        assert evaluated["state"] == "succeeded", evaluated["error"]
        running = _submit(client, tiny_job(tmp_path, epochs=5000))
        worker = wait_for(client, running, lambda j: (j["epoch"] or 0) >= 1)["pid"]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    assert _alive(worker)  # orphaned: nobody follows it any more

    with TestClient(create_app(settings)) as restarted:
        jobs = {j["id"]: j for j in restarted.get("/admin/jobs", headers=AUTH).json()}
        assert jobs[running]["state"] == "interrupted" and "restarted" in jobs[running]["error"]
        assert jobs[finished] == {**evaluated, "updated_at": jobs[finished]["updated_at"]}
        report = jobs[finished]["result"]
        # aiaa evaluate's report: summary.json per label, and Dice per case and label
        assert len(report["cases"]) == 1 and set(report["cases"][0]["dice"]) == {"hippocampus"}
        hippocampus = report["summary"]["hippocampus"]
        assert hippocampus["n"] + hippocampus["n_both_empty"] == 1
        assert hippocampus["dice"] is None or 0 <= hippocampus["dice"] <= 1
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
