"""The export job kind: `aiaa export` in a worker; a passing export becomes a served version."""

import httpx
from helpers import require_runtime, serve_in_thread
from jobs_helpers import AUTH, phantom_setup, wait_for

from server.app import create_app


def test_an_export_job_verifies_registers_and_serves_the_export_and_a_bad_format_is_refused(tmp_path):
    require_runtime("onnx")
    with serve_in_thread(create_app(phantom_setup(tmp_path))) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        datalist = str(tmp_path / "data" / "datalist.json")
        reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "tiny", "datalist": datalist,
                                                               "params": {"format": "onnx"}})
        assert reply.status_code == 202, reply.text
        job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"), timeout=240)
        assert job["state"] == "succeeded", job
        report = job["result"]["report"]
        assert report["passed"] is True and report["format"] == "onnx"
        assert len(report["members"]) == 1 and report["members"][0]["mask_dice_min"] >= 0.999
        # same weights plus the export: a new version, kept; hot-swapped in only when faster than what serves
        # (PyTorch here), then served through ONNX Runtime by 'auto'
        assert int(job["result"]["version"]) == int(job["result"]["base_version"]) + 1
        backend = client.get("/health").json()["models"]["tiny"]["backend"]
        versions = client.get("/admin/models/tiny/versions", headers=AUTH).json()
        assert versions["versions"][-1]["metrics"]["export"]["format"] == "onnx"
        if report["speedup_vs_pytorch"] > 1:
            assert job["result"]["deployed"] is True and versions["serving"] == job["result"]["version"]
            assert backend == {"runtime": "onnxruntime", "precision": "fp32", "device": "cpu"}
        else:
            assert job["result"]["deployed"] is False and "PyTorch" in job["result"]["not_deployed"]
            assert versions["serving"] == job["result"]["base_version"] and backend["runtime"] == "pytorch"
        bad = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "tiny", "datalist": datalist,
                                                             "params": {"format": "caffe"}})
        assert bad.status_code == 400 and "params.format" in bad.json()["detail"]
