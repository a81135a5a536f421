"""Fixtures of the jobs tests: a served fast extreme-point model, a few real hippocampus cases, an admin token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import HIPPOCAMPUS, REPO

from engines.data.io import read_volume
from engines.transforms.points import extreme_points
from server.settings import Settings

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "annotation_fast"


def hippocampus_datalist(folder: Path, training: int = 2, validation: int = 2) -> Path:
    """A datalist of the first real cases (absolute paths into ../shared/data)."""
    cases = json.loads((HIPPOCAMPUS / "datalist.json").read_text())
    absolute = lambda items: [{k: str(HIPPOCAMPUS / v) for k, v in i.items()} for i in items]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": absolute(cases["training"][:training]),
                                "validation": absolute(cases["validation"][:validation])}))
    return path


def job_settings(tmp: Path, **overrides) -> Settings:
    """Settings of a server that serves the fast annotation model with jobs in ``tmp``."""
    pool = tmp / "engine_pool.json"
    pool.write_text(json.dumps([{"name": MODEL, "class": "Dextr3dCroppedEngine", "module": "medical.aas.dextr3dcropped",
                                 "config_file": str(REPO / "model_configs" / "annotation_mri_hippocampus_fast.json")}]))
    values = {"config": str(pool), "state_dir": str(tmp / "state"), "admin_token": TOKEN,
              "data_roots": f"{tmp}:{HIPPOCAMPUS}", "job_stop_grace_s": 60, "max_voxels": 10_000_000}
    values.update(overrides)
    return Settings(**values)


def click_request(case_index: int = 0) -> dict:
    """Keyword arguments of a dextr3d request on a validation case with its exact extreme points."""
    case = json.loads((HIPPOCAMPUS / "datalist.json").read_text())["validation"][case_index]
    points = extreme_points(read_volume(HIPPOCAMPUS / case["label"]).array > 0).astype(int).tolist()
    return {"params": {"model": MODEL, "output": "json"},
            "files": {"file": ("image.nii.gz", (HIPPOCAMPUS / case["image"]).read_bytes())},
            "data": {"params": json.dumps({"points": points})}}


def server_process(settings: Settings, cwd: Path) -> tuple[subprocess.Popen, httpx.Client]:
    """``aiaa serve`` of ``settings`` in its own process (a real uvicorn), and a client once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AIAA_STATE_DIR": settings.state_dir, "AIAA_ADMIN_TOKEN": TOKEN,
           "AIAA_DATA_ROOTS": settings.data_roots, "AIAA_WARMUP": "false", "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "server.cli.main", "serve", "--config", settings.config,
                               "--port", str(port), "--log-level", "warning"], env=env, cwd=cwd)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 180  # importing torch and MONAI takes a minute on a loaded 2-core machine
    while True:
        try:
            client.get("/health/live")
            return server, client
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise AssertionError("the server did not start") from None
            time.sleep(0.2)


def wait_for(client: httpx.Client, job_id: str, until, timeout: float = 120.0) -> dict:
    """Poll a job until ``until(job)`` is true; returns the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/admin/jobs/{job_id}", headers=AUTH).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.2)




def phantom_setup(tmp: Path, cases: int = 5, **overrides) -> Settings:
    """Settings of a server with a tiny random annotation model and a phantom dataset (no real data needed)."""
    from helpers import annotation_config, write_model, write_phantom_datalist, write_pool

    data = write_phantom_datalist(tmp / "data", n=cases).parent
    write_model(tmp / "model", "tiny", annotation_config())
    pool = write_pool(tmp, [{"name": "tiny", "class": "Dextr3dCroppedEngine", "module": "medical.aas.dextr3dcropped",
                             "config_file": "model/tiny.json"}])
    # A random tiny model: these tests are about the mechanics, so the quality gate lets any result deploy.
    values = {"config": str(pool), "state_dir": str(tmp / "state"), "admin_token": TOKEN, "data_roots": str(data),
              "job_stop_grace_s": 60, "warmup": False, "job_niceness": 0, "job_max_dice_drop": 1.0}
    values.update(overrides)
    return Settings(**values)


def tiny_job(tmp: Path, epochs: int, kind: str = "finetune", **params) -> dict:
    """A training job of the tiny model on the phantom dataset (one batch per case, validated at the end)."""
    return {"kind": kind, "model": "tiny", "datalist": str(tmp / "data" / "datalist.json"),
            "params": {"epochs": epochs, "batch_size": 1, "val_interval": 100000, **params}}
