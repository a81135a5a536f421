"""``aiaa-client`` end to end against a real uvicorn: the annotation app, and the admin stand-in for jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from aiaa_client.cli import main
from conftest import standin_pool
from fake_admin import TOKEN, create_fake_admin
from helpers import dice, phantom, phantom_points, serve_in_thread

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


@pytest.fixture(scope="module")
def server():
    app = create_app(Settings(config="unused.json", max_voxels=200_000), standin_pool())
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}", app


@pytest.fixture(scope="module")
def admin_server():
    with serve_in_thread(create_fake_admin()) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    volume, mask = phantom()
    path = tmp_path_factory.mktemp("cli") / "phantom.nii.gz"
    path.write_bytes(write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32"))
    return path, mask, phantom_points(mask)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_models(server, capsys):
    url, _ = server
    code, out, _ = run(capsys, "--server", url, "models")
    assert code == 0 and "annotation_test" in out and "segmentation_test" in out
    code, out, _ = run(capsys, "--server", url, "models", "--type", "segmentation", "--json")
    assert [m["name"] for m in json.loads(out)] == ["segmentation_test"]
    code, out, _ = run(capsys, "--server", url, "models", "--name", "annotation_test", "--json")
    assert json.loads(out)[0]["type"] == "annotation"


def test_dextr3d_and_segment_write_masks(server, case, tmp_path, capsys):
    url, _ = server
    path, mask, points = case
    out_file = tmp_path / "mask.nii.gz"
    code, out, _ = run(capsys, "--server", url, "dextr3d", path, "--model", "annotation_test",
                       "--points", json.dumps(points), "-o", out_file)
    assert code == 0 and json.loads(out)["output"] == str(out_file) and "timings" in json.loads(out)
    assert dice(np.asarray(nib.load(out_file).dataobj), mask) > 0.95
    code, out, _ = run(capsys, "--server", url, "dextr3d", path, "--model", "annotation_test", "--crop",
                       "--points", json.dumps(points), "-o", tmp_path / "cropped.nii")
    assert code == 0 and dice(np.asarray(nib.load(tmp_path / "cropped.nii").dataobj), mask) > 0.95
    code, out, _ = run(capsys, "--server", url, "segment", path, "--model", "segmentation_test",
                       "-o", tmp_path / "seg.nii.gz")
    assert code == 0 and set(np.unique(np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj))) == {0, 1, 2}


def test_session_create_use_show_delete(server, case, tmp_path, capsys):
    url, _ = server
    path, mask, points = case
    code, out, _ = run(capsys, "--server", url, "session", "create", path, "--expiry", "60")
    sid = json.loads(out)["session_id"]
    code, out, _ = run(capsys, "--server", url, "session", "show", sid)
    assert code == 0 and json.loads(out)["session_info"]["expiry"] == 60
    code, _, _ = run(capsys, "--server", url, "dextr3d", "--session", sid, "--model", "annotation_test",
                     "--points", json.dumps(points), "-o", tmp_path / "s.nii.gz")
    assert code == 0 and dice(np.asarray(nib.load(tmp_path / "s.nii.gz").dataobj), mask) > 0.95
    code, out, _ = run(capsys, "--server", url, "session", "delete", sid)
    assert code == 0 and json.loads(out)["deleted"] is True
    code, _, err = run(capsys, "--server", url, "session", "show", sid)
    assert code == 1 and "HTTP 404" in err and sid in err
    code, _, err = run(capsys, "--server", url, "segment", "--session", sid, "--model", "segmentation_test",
                       "-o", tmp_path / "x.nii.gz")
    assert code == 1 and "HTTP 440" in err


def test_errors_are_one_line_and_non_zero(server, case, tmp_path, capsys):
    url, _ = server
    path, _, points = case
    code, _, err = run(capsys, "--server", url, "dextr3d", path, "--model", "missing", "--points",
                       json.dumps(points), "-o", tmp_path / "m.nii.gz")
    assert code == 1 and "HTTP 404 ModelNotFoundError" in err and "missing" in err
    code, _, err = run(capsys, "--server", url, "dextr3d", path, "--model", "annotation_test", "--points", "[[1,2",
                       "-o", tmp_path / "m.nii.gz")
    assert code == 2 and "--points is not valid JSON" in err
    code, _, err = run(capsys, "--server", url, "segment", tmp_path / "absent.nii.gz", "--model", "segmentation_test",
                       "-o", tmp_path / "m.nii.gz")
    assert code == 2 and "absent.nii.gz" in err
    code, _, err = run(capsys, "--server", "http://127.0.0.1:9", "--timeout", "2", "models")
    assert code == 1 and "cannot reach" in err


def test_jobs_submit_follow_show_logs_cancel_resume(admin_server, capsys):
    common = ["--server", admin_server, "--token", TOKEN]
    code, out, _ = run(capsys, *common, "jobs", "submit", "--kind", "finetune", "--model", "annotation_test",
                       "--datalist", "datalists/site.json", "--params", '{"epochs": 3}')
    job_id = json.loads(out)["job_id"]
    code, out, err = run(capsys, *common, "jobs", "show", job_id, "--follow")
    assert code == 0 and json.loads(out)["state"] == "succeeded"
    bar_lines = err.strip().splitlines()  # not a terminal: one line per change
    assert bar_lines[-1].startswith("[" + "#" * 30 + "] 100.0%  succeeded  epoch 3/3")
    assert any("epoch 1/3" in line for line in bar_lines)
    code, out, _ = run(capsys, *common, "jobs", "logs", job_id, "--lines", "2")
    assert out.splitlines() == ["epoch 2/3 loss 0.333", "epoch 3/3 loss 0.250"]
    code, out, _ = run(capsys, *common, "jobs", "list")
    assert code == 0 and job_id in out and "succeeded" in out
    code, out, _ = run(capsys, *common, "jobs", "submit", "--kind", "train", "--model", "m", "--datalist", "d.json")
    other = json.loads(out)["job_id"]
    code, out, _ = run(capsys, *common, "jobs", "cancel", other)
    assert json.loads(out)["state"] == "cancelled"
    code, out, _ = run(capsys, *common, "jobs", "resume", other)
    assert json.loads(out)["state"] == "queued"
    code, out, _ = run(capsys, *common, "versions", "annotation_test", "--serve", "1")
    assert code == 0 and json.loads(out)["serving"] == "1"


def test_console_entry_with_environment_variables(admin_server):
    env = {"PYTHONPATH": str(CLIENT_DIR), "PATH": os.environ["PATH"], "AIAA_SERVER": admin_server}
    done = subprocess.run([sys.executable, "-m", "aiaa_client.cli", "jobs", "list"], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert done.returncode == 1 and "HTTP 401" in done.stderr and "Bearer" in done.stderr
    done = subprocess.run([sys.executable, "-m", "aiaa_client.cli", "jobs", "list", "--json"], capture_output=True,
                          text=True, timeout=60, check=False, env={**env, "AIAA_ADMIN_TOKEN": TOKEN})
    assert done.returncode == 0 and isinstance(json.loads(done.stdout), list)
