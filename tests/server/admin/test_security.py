"""Admin routes: the token, data roots, dataset uploads, names."""

import json
import os

import pytest
from fastapi.testclient import TestClient
from helpers import phantom
from jobs_helpers import AUTH, TOKEN

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings

ADMIN_ROUTES = [("get", "/admin/jobs"), ("post", "/admin/jobs"), ("get", "/admin/jobs/x"),
                ("delete", "/admin/jobs/x"), ("post", "/admin/jobs/x/resume"), ("get", "/admin/jobs/x/logs"),
                ("get", "/admin/jobs/x/events"), ("post", "/admin/datasets"), ("get", "/admin/models/m/versions"),
                ("put", "/admin/models/m/serving"), ("get", "/admin/model/m"), ("put", "/admin/model/m"),
                ("delete", "/admin/model/m")]


@pytest.fixture()
def admin(tmp_path):
    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token=TOKEN,
                        data_roots=str(tmp_path / "data"))
    from conftest import standin_pool

    with TestClient(create_app(settings, standin_pool())) as client:
        yield client, tmp_path


def test_admin_routes_are_disabled_without_a_configured_token(client):
    for method, path in ADMIN_ROUTES:
        reply = getattr(client, method)(path, headers=AUTH)
        assert reply.status_code == 403, (method, path)
        assert "AIAA_ADMIN_TOKEN" in reply.json()["detail"]


def test_admin_routes_need_the_right_bearer_token(admin, caplog):
    client, _ = admin
    for method, path in ADMIN_ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            reply = getattr(client, method)(path, headers=headers)
            assert reply.status_code == 401, (method, path, headers)
            assert reply.headers["www-authenticate"] == "Bearer"
    assert client.get("/admin/jobs", headers=AUTH).json() == []
    assert TOKEN not in caplog.text


def test_the_token_can_come_from_a_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    token_file.chmod(0o600)
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token_file=str(token_file))
    with TestClient(create_app(settings, standin_pool())) as client:
        assert client.get("/admin/jobs", headers={"Authorization": "Bearer from-a-file"}).status_code == 200
        assert client.get("/admin/jobs", headers=AUTH).status_code == 401


def _job(datalist: str) -> dict:
    return {"kind": "evaluate", "model": "annotation_test", "datalist": datalist}


def test_datalists_outside_the_data_roots_are_refused(admin):
    client, tmp = admin
    outside = tmp / "elsewhere"
    outside.mkdir()
    (outside / "datalist.json").write_text(json.dumps({"training": [], "validation": []}))
    data = tmp / "data"
    data.mkdir()
    for value in (str(outside / "datalist.json"), str(data / ".." / "elsewhere" / "datalist.json"), "/etc/passwd"):
        reply = client.post("/admin/jobs", headers=AUTH, json=_job(value))
        assert reply.status_code == 403 and "outside the data roots" in reply.json()["detail"], value
    os.symlink(outside / "datalist.json", data / "link.json")
    assert client.post("/admin/jobs", headers=AUTH, json=_job(str(data / "link.json"))).status_code == 403
    # inside a root, but listing a file outside it
    (data / "sneaky.json").write_text(json.dumps({"training": [{"image": "../elsewhere/x.nii.gz", "label": "y"}]}))
    reply = client.post("/admin/jobs", headers=AUTH, json=_job(str(data / "sneaky.json")))
    assert reply.status_code == 403 and "../elsewhere/x.nii.gz" in reply.json()["detail"]


def test_bad_job_requests_get_clear_4xx(admin):
    client, _ = admin
    assert client.post("/admin/jobs", headers=AUTH, json={"kind": "dance", "model": "m"}).status_code == 422
    reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "train", "model": "../etc", "datalist": "x"})
    assert reply.status_code == 400 and "invalid model name" in reply.json()["detail"]
    reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "nothing"})
    assert reply.status_code == 404 and "nothing" in reply.json()["detail"]
    reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "train", "model": "annotation_test"})
    assert reply.status_code == 400 and "needs a 'datalist'" in reply.json()["detail"]
    assert client.get("/admin/jobs/nope", headers=AUTH).status_code == 404
    assert client.get("/admin/models/..%2Fx/versions", headers=AUTH).status_code in (400, 404)


def test_uploaded_datasets_are_stored_inside_the_state_folder(admin):
    client, tmp = admin
    volume, mask = phantom()
    image = write_volume(volume.array, volume.geometry, dtype="float32")
    label = write_volume(mask, volume.geometry)
    files = [("images", (f"c{i}.nii.gz", image)) for i in range(3)] + \
            [("labels", (f"c{i}.nii.gz", label)) for i in range(3)]
    reply = client.post("/admin/datasets", headers=AUTH, files=files)
    assert reply.status_code == 201, reply.text
    summary = reply.json()
    assert summary["training"] == 2 and summary["validation"] == 1
    stored = tmp / "state" / "datasets" / summary["dataset_id"]
    datalist = json.loads((stored / "datalist.json").read_text())
    assert (stored / datalist["training"][0]["image"]).read_bytes() == image
    bad = [("images", ("../evil.nii.gz", image)), ("images", ("b.nii.gz", image)),
           ("labels", ("a.nii.gz", label)), ("labels", ("b.nii.gz", label))]
    assert client.post("/admin/datasets", headers=AUTH, files=bad).status_code == 400
    uneven = [("images", ("a.nii.gz", image)), ("labels", ("a.nii.gz", label))]
    assert client.post("/admin/datasets", headers=AUTH, files=uneven).status_code == 400


def test_inference_leaves_the_jobs_their_cores():
    cores = os.cpu_count() or 1
    assert Settings(jobs_max_running=1, job_threads=1).inference_thread_count() == max(1, cores - 1)
    assert Settings(jobs_max_running=64, job_threads=4).inference_thread_count() == 1
    assert Settings(inference_threads=3).inference_thread_count() == 3


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_that_others_can_read_is_refused(tmp_path, mode):
    from conftest import standin_pool

    from server.settings import InsecureTokenFile

    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    token_file.chmod(mode)
    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token_file=str(token_file))
    with pytest.raises(InsecureTokenFile, match="chmod 600"):
        create_app(settings, standin_pool())


def test_the_token_file_is_ignored_by_git():
    from helpers import REPO

    ignored = (REPO / ".gitignore").read_text().split()
    assert "admin_token" in ignored and "*.token" in ignored


def test_failed_logins_are_limited_per_client_and_logged_without_the_token(tmp_path, caplog):
    from conftest import standin_pool

    from server.admin.auth import LoginLimiter

    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token=TOKEN)
    now = [1000.0]
    with TestClient(create_app(settings, standin_pool())) as client:
        client.app.state.login_limiter = LoginLimiter(3, 60.0, clock=lambda: now[0])
        for _ in range(3):
            assert client.get("/admin/jobs", headers={"Authorization": "Bearer guess-1234"}).status_code == 401
        locked = client.get("/admin/jobs", headers=AUTH)
        assert locked.status_code == 429 and locked.headers["retry-after"] == "60"
        now[0] += 61  # the window moved on: the right token works again
        assert client.get("/admin/jobs", headers=AUTH).status_code == 200
    assert "failed admin login from testclient" in caplog.text
    assert "guess-1234" not in caplog.text and TOKEN not in caplog.text
