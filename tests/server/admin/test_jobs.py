"""The jobs API without workers: removing jobs that are over."""

from fastapi.testclient import TestClient
from jobs_helpers import AUTH, phantom_setup

from server.app import create_app
from server.jobs.store import JobState


def test_a_job_that_is_over_can_be_removed_from_the_list_and_an_active_one_cannot(tmp_path):
    with TestClient(create_app(phantom_setup(tmp_path))) as client:
        jobs = client.app.state.jobs
        work = str(tmp_path / "state" / "jobs")
        interrupted = jobs.create("finetune", "tiny", None, {}, work)
        jobs.update(interrupted["id"], state=JobState.INTERRUPTED)
        running = jobs.create("finetune", "tiny", None, {}, work)
        jobs.update(running["id"], state=JobState.RUNNING)

        reply = client.delete(f"/admin/jobs/{interrupted['id']}", params={"remove": "true"}, headers=AUTH)
        assert reply.status_code == 200 and reply.json() == {"job_id": interrupted["id"], "removed": True}
        assert client.get(f"/admin/jobs/{interrupted['id']}", headers=AUTH).status_code == 404
        assert interrupted["id"] not in {j["id"] for j in client.get("/admin/jobs", headers=AUTH).json()}

        refused = client.delete(f"/admin/jobs/{running['id']}", params={"remove": "true"}, headers=AUTH)
        assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
        assert client.get(f"/admin/jobs/{running['id']}", headers=AUTH).json()["state"] == "running"
        jobs.update(running["id"], state=JobState.FAILED)  # not ours to follow: leave the table tidy
