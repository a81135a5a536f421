"""kill -9 of a real server process during a dataset upload: nothing half-written survives a restart."""

import signal
import threading
import time

import httpx
from fastapi.testclient import TestClient
from helpers import phantom
from jobs_helpers import AUTH, phantom_setup, server_process

from engines.data.io import write_volume
from server.app import create_app


def _cases(count: int) -> list:
    volume, mask = phantom()
    image = write_volume(volume.array, volume.geometry, dtype="float32")
    label = write_volume(mask, volume.geometry)
    return [("images", (f"c{i}.nii.gz", image)) for i in range(count)] + \
           [("labels", (f"c{i}.nii.gz", label)) for i in range(count)]


def test_a_server_killed_while_it_writes_a_dataset_leaves_none_after_restart_and_the_next_upload_works(tmp_path):
    settings = phantom_setup(tmp_path, cases=3)
    datasets = tmp_path / "state" / "datasets"
    server, client = server_process(settings, tmp_path)
    try:
        # Many cases: the server writes and checks them one by one, long enough to be caught at it.
        upload = threading.Thread(target=lambda: _post_ignoring_the_crash(client, _cases(30)))
        upload.start()
        deadline = time.monotonic() + 60
        while not list(datasets.glob(".ds-*.part")):
            assert upload.is_alive() and time.monotonic() < deadline, "the upload ended before the server wrote it"
            time.sleep(0.001)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        upload.join(30)
    finally:
        server.kill()
        client.close()
    assert list(datasets.glob(".ds-*.part"))  # killed half-way: the partial folder is on disk
    assert not list(datasets.glob("ds-*"))  # and no dataset was published

    with TestClient(create_app(settings)) as restarted:
        assert list(datasets.iterdir()) == []  # the restart removed what the crash left
        reply = restarted.post("/admin/datasets", headers=AUTH, files=_cases(3))
        assert reply.status_code == 201, reply.text
        assert [p.name for p in datasets.iterdir()] == [reply.json()["dataset_id"]]
        assert (datasets / reply.json()["dataset_id"] / "datalist.json").is_file()


def _post_ignoring_the_crash(client: httpx.Client, files: list) -> None:
    try:
        client.post("/admin/datasets", headers=AUTH, files=files)
    except httpx.TransportError:
        pass  # the server died under it: what the test wants
