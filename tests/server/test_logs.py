"""``GET /logs`` is an admin route, and no log line anywhere holds a full session id or query values."""

import json
import logging

import pytest
from fastapi.testclient import TestClient
from helpers import phantom
from jobs_helpers import AUTH, TOKEN

from engines.data.io import write_volume
from server.app import create_app
from server.logbuffer import RedactingFilter, redact
from server.settings import Settings


@pytest.fixture()
def admin_client(tmp_path):
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token=TOKEN,
                        max_voxels=200_000)
    with TestClient(create_app(settings, standin_pool())) as client:
        yield client


def _session(client) -> str:
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    reply = client.put("/session/", files={"image": ("/home/me/image.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"]


def test_logs_show_refused_requests_as_plain_text_to_the_administrator(admin_client):
    assert admin_client.post("/v1/dextr3d?model=nope", data={"params": "{}"}).status_code == 404
    for path in ("/logs", "/logs/?lines=5"):
        reply = admin_client.get(path, headers=AUTH)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
        assert "POST /v1/dextr3d refused with 404 ModelNotFoundError: " in reply.text
    assert len(admin_client.get("/logs?lines=1", headers=AUTH).text.splitlines()) == 1


def test_logs_are_not_public(admin_client, client):
    assert admin_client.get("/logs").status_code == 401
    assert client.get("/logs").status_code == 403  # no admin token configured: no logs over HTTP


def test_logs_line_count_is_bounded(admin_client):
    assert admin_client.get("/logs?lines=0", headers=AUTH).status_code == 422
    assert admin_client.get("/logs?lines=100000", headers=AUTH).status_code == 422


def test_session_ids_are_never_logged_in_full(admin_client, caplog):
    session_id = _session(admin_client)
    unknown = "0d8c2f4e-1111-4222-8333-944445555666"
    admin_client.get(f"/session/{unknown}")
    admin_client.post(f"/v1/dextr3d?model=annotation_test&session_id={unknown}", data={"params": "{}"})
    admin_client.post(f"/v1/dextr3d?model=annotation_test&session_id={session_id}&output=json",
                      data={"params": json.dumps({"points": [[1, 1, 1]] * 6})})
    text = admin_client.get("/logs?lines=1000", headers=AUTH).text
    assert unknown[:8] + "…" in text
    assert unknown not in text and session_id not in text and session_id not in caplog.text
    assert unknown not in caplog.text


def test_access_lines_keep_the_route_and_model_but_not_query_values():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "POST", "/v1/dextr3d?model=spleen&session_id=s3cret&token=abc",
                                "1.1", 200), None)
    assert RedactingFilter().filter(record)
    line = record.getMessage()
    assert "/v1/dextr3d?model=spleen&session_id=…&token=…" in line
    assert "s3cret" not in line and "abc" not in line
    assert redact("GET /session/0d8c2f4e-1111-4222-8333-944445555666 200") == "GET /session/0d8c2f4e… 200"


def test_each_request_has_an_id_on_its_reply_and_its_log_lines(admin_client):
    reply = admin_client.post("/v1/dextr3d?model=nope", data={"params": "{}"}, headers={"X-Request-ID": "abc-123"})
    assert reply.headers["x-request-id"] == "abc-123"
    generated = admin_client.post("/v1/dextr3d?model=nope", data={"params": "{}"},
                                  headers={"X-Request-ID": "bad id\nwith newline"}).headers["x-request-id"]
    assert len(generated) == 32 and "\n" not in generated
    lines = admin_client.get("/logs", headers=AUTH).text.splitlines()
    assert any("[abc-123]" in line and "refused with 404" in line for line in lines)
    assert any(f"[{generated}]" in line for line in lines)


def test_json_logs(tmp_path):
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token=TOKEN,
                        log_format="json")
    with TestClient(create_app(settings, standin_pool())) as client:
        client.post("/v1/dextr3d?model=nope", data={"params": "{}"}, headers={"X-Request-ID": "r1"})
        lines = [json.loads(line) for line in client.get("/logs", headers=AUTH).text.splitlines()]
    refused = [line for line in lines if "refused with 404" in line["message"]]
    assert refused and refused[0]["request_id"] == "r1" and refused[0]["level"] == "WARNING"


def test_public_health_shows_no_file_system_paths(tmp_path):
    from engines.serving.pool import EnginePool

    pool_file = tmp_path / "pool.json"
    pool_file.write_text(json.dumps([{"name": "broken", "class": "SegmentationEngine",
                                      "module": "medical.aas.segmentation",
                                      "config_file": str(tmp_path / "configs" / "missing.json"), "labels": ["a"]}]))
    pool = EnginePool.from_file(pool_file, False)
    with TestClient(create_app(Settings(config="unused.json", state_dir=str(tmp_path / "state")), pool)) as client:
        error = client.get("/health").json()["models"]["broken"]["error"]
    assert "missing.json" in error and str(tmp_path) not in error
