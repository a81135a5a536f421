"""``GET /metrics``: Prometheus text with requests, latency, network time, queues, sessions, jobs and models."""

import json

from helpers import phantom, phantom_points
from prometheus_client.parser import text_string_to_metric_families

from engines.data.io import write_volume


def _samples(client) -> dict:
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def test_metrics_count_requests_network_time_sessions_and_models(client):
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    session = client.put("/session/", files={"image": ("a.nii.gz", data)}).json()["session_id"]
    params = json.dumps({"points": phantom_points(mask)})
    for _ in range(2):
        assert client.post(f"/v1/dextr3d?model=annotation_test&session_id={session}&output=json",
                           data={"params": params}).status_code == 200
    client.post("/v1/dextr3d?model=no_such_model", data={"params": "{}"})
    samples = _samples(client)
    ok = (("method", "POST"), ("model", "annotation_test"), ("route", "/v1/dextr3d"), ("status", "200"))
    assert samples[("aiaa_requests_total", ok)] == 2
    assert samples[("aiaa_requests_total", (("method", "POST"), ("model", "other"), ("route", "/v1/dextr3d"),
                                            ("status", "404")))] == 1
    assert samples[("aiaa_request_seconds_count", (("model", "annotation_test"), ("route", "/v1/dextr3d")))] == 2
    assert samples[("aiaa_network_seconds_count", (("model", "annotation_test"),))] == 2
    assert samples[("aiaa_sessions", ())] == 1
    assert samples[("aiaa_session_bytes", ())] >= volume.array.astype("float32").nbytes
    assert samples[("aiaa_model_ready", (("model", "annotation_test"),))] == 1
    assert samples[("aiaa_model_running", (("model", "annotation_test"),))] == 0
    assert samples[("aiaa_model_queued", (("model", "annotation_test"),))] == 0
    assert samples[("aiaa_jobs", (("state", "queued"),))] == 0
    assert session not in client.get("/metrics").text


def test_busy_refusals_are_counted_per_model(client):
    gate = client.app.state.gates["annotation_test"]
    gate.in_flight = gate.capacity  # a full queue
    try:
        reply = client.post("/v1/dextr3d?model=annotation_test", data={"params": "{}"},
                            files={"image": ("a.nii.gz", write_volume(*_small(), ".nii.gz"))})
    finally:
        gate.in_flight = 0
    assert reply.status_code == 503 and reply.headers["retry-after"]
    samples = _samples(client)
    assert samples[("aiaa_refusals_total", (("model", "annotation_test"), ("status", "503")))] == 1


def _small():
    volume, _ = phantom(shape=(8, 8, 8), center=(4, 4, 4), radii=(2, 2, 2))
    return volume.array, volume.geometry
