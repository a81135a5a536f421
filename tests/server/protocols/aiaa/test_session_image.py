"""``GET /session/{id}/image``: the session's decoded volume as NIfTI, what the browser viewer displays."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
from conftest import standin_pool
from fastapi.testclient import TestClient
from helpers import dicom_series_files, phantom

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings


def test_the_image_of_a_session_is_its_volume_on_its_grid(client):
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, ".nrrd", dtype="float32")
    sid = client.put("/session/", files={"image": ('scan 1 (T1).nrrd', data)}).json()["session_id"]
    reply = client.get(f"/session/{sid}/image")
    assert reply.status_code == 200
    assert reply.headers["content-disposition"] == 'attachment; filename="scan_1__T1_.nii.gz"'
    back = read_volume(reply.content, "image.nii.gz")
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.spacing, volume.geometry.spacing)
    np.testing.assert_allclose(back.geometry.origin, volume.geometry.origin)
    np.testing.assert_allclose(back.geometry.direction, volume.geometry.direction)
    assert nib.Nifti1Image.from_bytes(gzip.decompress(reply.content)).get_data_dtype() == np.float32


def test_the_image_of_a_dicom_series_session_is_nifti():
    files = dicom_series_files()
    settings = Settings(config="unused.json", max_voxels=6_000_000, session_memory_bytes=64 * 1024 * 1024)
    with TestClient(create_app(settings, standin_pool())) as client:
        sid = client.put("/session/", files=[(f"image{n}", (f"{n}.dcm", f)) for n, f in enumerate(files)]).json()["session_id"]
        back = read_volume(client.get(f"/session/{sid}/image").content, "image.nii.gz")
    assert back.shape == (512, 512, 20)


def test_an_unknown_session_has_no_image(client):
    reply = client.get("/session/not-a-session/image")
    assert reply.status_code == 404
    assert reply.json() == {"error": "SessionNotFound", "detail": "session 'not-a-session' not found or expired"}
