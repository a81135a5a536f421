"""Every bad input is a 4xx with ``{"error", "detail"}``, never a 500."""

import errno
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy.exc
from fastapi.testclient import TestClient
from helpers import phantom
from jobs_helpers import AUTH, TOKEN

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings

DEXTR = "/v1/dextr3d?model=annotation_test"


@pytest.fixture()
def admin(tmp_path):
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path / "state"), admin_token=TOKEN,
                        data_roots=str(tmp_path / "data"))
    with TestClient(create_app(settings, standin_pool()), raise_server_exceptions=False) as client:
        yield client, tmp_path


@pytest.mark.parametrize("params, detail", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"points": [[1' + "0" * 5000 + ', 1, 1]]}', "digits is out of range"),
    ('{"points": [[1e400, 1, 1]]}', "does not fit a float"),
    ('{"points": [[NaN, 1, 1]]}', "not a valid JSON number"),
])
def test_hostile_params_are_400(client, params, detail):
    reply = client.post(DEXTR, data={"params": params})
    assert reply.status_code == 400 and detail in reply.json()["detail"]


def test_hostile_json_bodies_of_admin_routes_are_4xx_json(admin):
    client, _ = admin
    for body in ('{"kind": "train", "model": "annotation_test", "params": ' + "[" * 50_000 + "]" * 50_000 + "}",
                 '{"kind": "train", "model": "annotation_test", "datalist": "x", "params": {"a": '
                 + "9" * 5000 + "}}"):
        reply = client.post("/admin/jobs", headers={**AUTH, "content-type": "application/json"}, content=body)
        assert reply.status_code == 400 and reply.json()["error"] == "BadRequest"


@pytest.mark.parametrize("version", ["٣", "３", "1e3", 10**40])
def test_non_ascii_or_huge_version_numbers_are_400(admin, version):
    client, _ = admin
    reply = client.post("/admin/jobs", headers=AUTH, json={"kind": "export", "model": "annotation_test",
                                                          "params": {"format": "onnx", "base_version": version}})
    assert reply.status_code == 400 and "ASCII digits" in reply.json()["detail"]


def _datalist(tmp: Path, content) -> str:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    volume, mask = phantom(shape=(8, 8, 8), center=(4, 4, 4), radii=(2, 2, 2))
    (data / "img.nii.gz").write_bytes(write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32"))
    (data / "not_an_image.nii.gz").write_bytes(b"hello")
    (data / "list.json").write_text(json.dumps(content))
    return str(data / "list.json")


@pytest.mark.parametrize("content, detail", [
    ({"training": [{"image": "img.nii.gz"}], "validation": {"image": "img.nii.gz"}}, "'validation' must be a list"),
    ({"training": [{"image": "img.nii.gz"}], "validation": ["img.nii.gz"]}, "'validation' must be a list of objects"),
    ({"training": [{"label": "img.nii.gz"}]}, "with an 'image'"),
    ({"training": [{"image": "missing.nii.gz"}]}, "does not exist"),
    ({"training": [{"image": "not_an_image.nii.gz"}]}, "is not an image"),
])
def test_malformed_datalists_are_400(admin, content, detail):
    client, tmp = admin
    reply = client.post("/admin/jobs", headers=AUTH,
                        json={"kind": "evaluate", "model": "annotation_test", "datalist": _datalist(tmp, content)})
    assert reply.status_code == 400 and detail in reply.json()["detail"], reply.text


def _dataset_parts(n: int = 2):
    volume, mask = phantom(shape=(8, 8, 8), center=(4, 4, 4), radii=(2, 2, 2))
    image = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    label = write_volume(mask, volume.geometry, ".nii.gz")
    return ([("images", (f"case{i}.nii.gz", image)) for i in range(n)]
            + [("labels", (f"case{i}.nii.gz", label)) for i in range(n)])


def test_a_full_disk_is_507_and_leaves_no_half_written_dataset(admin, monkeypatch):
    client, tmp = admin
    datasets = tmp / "state" / "datasets"
    written = []
    real_write = Path.write_bytes

    def write_until_full(self, data):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self)
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_until_full)
    reply = client.post("/admin/datasets", headers=AUTH, files=_dataset_parts())
    assert reply.status_code == 507 and "dataset of 2 cases was not saved" in reply.json()["detail"]
    assert written and not any(datasets.iterdir())


def test_uploaded_datasets_must_hold_images(admin):
    client, _ = admin
    parts = _dataset_parts()
    parts[0] = ("images", ("case0.nii.gz", b"not an image"))
    reply = client.post("/admin/datasets", headers=AUTH, files=parts)
    assert reply.status_code == 400 and "images/case0.nii.gz is not an image" in reply.json()["detail"]


def test_a_locked_job_database_is_503_naming_the_file(admin, monkeypatch):
    client, tmp = admin
    locked = sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))
    monkeypatch.setattr(client.app.state.jobs, "list", lambda *a, **k: (_ for _ in ()).throw(locked))
    reply = client.get("/admin/jobs", headers=AUTH)
    assert reply.status_code == 503
    assert str(tmp / "state" / "jobs.sqlite") in reply.json()["detail"] and "locked" in reply.json()["detail"]


def test_a_corrupt_job_database_stops_the_start_naming_the_file(tmp_path):
    from conftest import standin_pool

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "jobs.sqlite").write_bytes(b"this is not a database" * 100)
    app = create_app(Settings(config="unused.json", state_dir=str(tmp_path / "state")), standin_pool())
    with pytest.raises(RuntimeError, match=r"jobs\.sqlite cannot be opened: file is not a database"):
        with TestClient(app):
            pass
