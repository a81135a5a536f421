"""The export job kind: `aiaa export` in a worker, its report as the job's result."""

import httpx
from helpers import serve_in_thread
from jobs_helpers import AUTH, phantom_setup, wait_for

from server.app import create_app


def test_an_export_job_writes_a_passing_report_and_a_bad_format_is_refused(tmp_path):
    with serve_in_thread(create_app(phantom_setup(tmp_path))) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        datalist = str(tmp_path / "data" / "datalist.json")
        reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "tiny", "datalist": datalist,
                                                               "params": {"format": "onnx"}})
        assert reply.status_code == 202, reply.text
        job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"), timeout=240)
        assert job["state"] == "succeeded", job
        report = job["result"]["report"] if "report" in job["result"] else job["result"]
        assert report["passed"] is True and report["format"] == "onnx"
        assert len(report["members"]) == 1 and report["members"][0]["mask_dice_min"] >= 0.999
        bad = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "tiny", "datalist": datalist,
                                                             "params": {"format": "caffe"}})
        assert bad.status_code == 400 and "params.format" in bad.json()["detail"]
