"""The SDK against the real app: in-process (ASGI) and over a real socket (uvicorn), sync and async."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from aiaa_client import (
    BadRequest,
    Busy,
    Client,
    NotFound,
    SessionExpired,
    Unauthorized,
    read_nifti,
)
from aiaa_client._images import make_upload
from aiaa_client._operations import infer_call
from conftest import standin_pool
from fastapi.testclient import TestClient
from helpers import call, dice, opened, phantom, phantom_points

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def app():
    return create_app(Settings(config="unused.json", max_voxels=200_000), standin_pool())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The phantom as a .nii.gz file, its mask and extreme points."""
    volume, mask = phantom()
    path = tmp_path_factory.mktemp("case") / "phantom.nii.gz"
    path.write_bytes(write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32"))
    return path, mask, phantom_points(mask)


async def test_models_and_model(api):
    models = await call(api.models())
    assert {m["name"] for m in models} == {"annotation_test", "segmentation_test"}
    assert [m["name"] for m in await call(api.models(type="annotation"))] == ["annotation_test"]
    assert [m["name"] for m in await call(api.models(label="POSTERIOR"))] == ["segmentation_test"]
    one = await call(api.model("annotation_test"))
    assert one["type"] == "annotation" and isinstance(one["version"], str)
    with pytest.raises(NotFound) as err:
        await call(api.model("missing"))
    assert err.value.status == 404 and err.value.error == "ModelNotFoundError" and "missing" in err.value.detail


async def test_dextr3d_from_a_path_returns_mask_affine_params_and_saves(api, case, tmp_path):
    path, mask, points = case
    result = await call(api.dextr3d("annotation_test", path, points))
    assert result.mask.dtype == np.uint8 and result.mask.shape == mask.shape
    assert dice(result.mask, mask) > 0.95
    reference = nib.load(path)
    np.testing.assert_allclose(result.affine, reference.affine, atol=1e-4)
    assert result.params["points"] == points and {"pre", "infer", "post", "total"} <= result.params["timings"].keys()
    saved = result.save(tmp_path / "mask.nii.gz")
    assert saved.read_bytes() == result.data  # the server's file, unchanged
    back = nib.load(saved)
    assert np.array_equal(np.asarray(back.dataobj), result.mask)


async def test_image_as_bytes_array_and_nibabel_image_give_the_same_mask(api, case):
    path, _, points = case
    reference = nib.load(path)
    array = np.asarray(reference.dataobj, dtype=np.float32)
    by_path = await call(api.dextr3d("annotation_test", path, points))
    for image, affine in [(path.read_bytes(), None), (array, reference.affine), (reference, None)]:
        result = await call(api.dextr3d("annotation_test", image, points, affine=affine))
        assert np.array_equal(result.mask, by_path.mask)
        np.testing.assert_allclose(result.affine, reference.affine, atol=1e-4)


async def test_client_side_crop_sends_the_box_and_pastes_the_mask_back(api, case):
    path, mask, points = case
    full = await call(api.dextr3d("annotation_test", path, points))
    cropped = await call(api.dextr3d("annotation_test", path, points, crop=True, pad_mm=6.0))
    assert cropped.mask.shape == mask.shape
    np.testing.assert_allclose(cropped.affine, full.affine, atol=1e-5)
    assert dice(cropped.mask, mask) > 0.95 and dice(cropped.mask, full.mask) > 0.98
    assert cropped.params["points"] == points  # the server's points, back in full-image indices


async def test_segmentation_and_inference(api, case):
    path, mask, _ = case
    seg = await call(api.segmentation("segmentation_test", path))
    assert set(np.unique(seg.mask)) == {0, 1, 2} and seg.params["labels"] == ["anterior", "posterior"]
    assert dice(seg.mask, mask) > 0.9
    generic = await call(api.inference("segmentation_test", path))
    assert np.array_equal(generic.mask, seg.mask)
    json_only = await call(api.inference("segmentation_test", path, params={}))
    assert json_only.has_image
    nrrd = await call(api.segmentation("segmentation_test", path, params={"result_extension": ".nrrd"}))
    assert nrrd.filename.endswith(".nrrd") and not nrrd.decodable
    with pytest.raises(ValueError, match="NIfTI"):
        nrrd.mask  # noqa: B018


async def test_deepgrow_needs_a_deepgrow_model_and_a_server_without_it_is_a_clear_not_found(api, case):
    path, _, points = case
    with pytest.raises(BadRequest, match="deepgrow model"):
        await call(api.deepgrow("annotation_test", path, points[:1]))
    from fastapi import FastAPI

    with TestClient(FastAPI()) as bare:  # an AIAA server of the time before deepgrow
        with pytest.raises(NotFound, match="no /v1/deepgrow"):
            Client("http://testserver", http_client=bare).deepgrow("annotation_test", path, points[:1])


async def test_session_lifecycle_and_transparent_recreation_after_440(api, app, case):
    path, mask, points = case
    async with opened(api.session(path, expiry=60)) as session:
        first_id = session.id
        info = await call(session.info())
        assert info["session_id"] == first_id and info["session_info"]["image"]["shape"] == list(mask.shape)
        result = await call(session.dextr3d("annotation_test", points))
        assert dice(result.mask, mask) > 0.95
        app.state.sessions.delete(first_id)  # the server forgets it: the next call answers 440
        again = await call(session.segmentation("segmentation_test"))
        assert session.recreated == 1 and session.id != first_id
        assert dice(again.mask, mask) > 0.9
        assert (await call(session.inference("segmentation_test"))).has_image
        last_id = session.id
    assert app.state.sessions.get(last_id, touch=False) is None  # deleted on exit


async def test_session_without_the_image_raises_session_expired(api, case):
    path, _, points = case
    info = await call(api.create_session(path))
    sid = info["session_id"]
    assert (await call(api.get_session(sid)))["session_id"] == sid
    result = await call(api.dextr3d("annotation_test", None, points, session_id=sid))
    assert result.mask.any()
    assert (await call(api.delete_session(sid)))["deleted"] is True
    with pytest.raises(SessionExpired) as err:
        await call(api.segmentation("segmentation_test", session_id=sid))
    assert err.value.status == 440
    attached = api.session(session_id=sid)  # no image held: nothing to re-create from
    with pytest.raises(SessionExpired):
        await call(attached.segmentation("segmentation_test"))
    with pytest.raises(NotFound):
        await call(api.get_session(sid))


async def test_bad_input_is_bad_request_with_the_servers_detail(api, case):
    path, _, points = case
    with pytest.raises(BadRequest) as err:
        await call(api.dextr3d("annotation_test", path, points[:3]))
    assert err.value.status == 400 and "6" in err.value.detail
    with pytest.raises(BadRequest) as err:
        await call(api.segmentation("segmentation_test", b"not an image at all"))
    assert err.value.status == 400
    with pytest.raises(BadRequest, match="annotation"):
        await call(api.dextr3d("segmentation_test", path, points))
    with pytest.raises(ValueError, match="voxel indices"):
        await call(api.dextr3d("annotation_test", path, [[1, 2]]))


async def test_too_large_is_bad_request_413(api):
    big = np.zeros((80, 80, 80), np.float32)  # over the app's 200,000-voxel limit
    with pytest.raises(BadRequest) as err:
        await call(api.segmentation("segmentation_test", big))
    assert err.value.status == 413


async def test_busy_model_is_busy_with_retry_after(api, app, case):
    path, _, _ = case
    gate = app.state.gates["segmentation_test"]
    saved = gate.capacity
    api.retry = type(api.retry)(max_retries=0)  # retries are tested with a scripted transport
    gate.capacity = 0  # every request is refused with 503
    try:
        with pytest.raises(Busy) as err:
            await call(api.segmentation("segmentation_test", path))
    finally:
        gate.capacity = saved
    assert err.value.status == 503 and err.value.retry_after == 1.0


def test_points_in_a_multipart_reply_follow_the_protocol(case):
    """What the client puts on the wire, read as NVIDIA's Python client reads multipart (tests/multipart.py)."""
    source = Path(__file__).parents[1] / "multipart.py"
    spec = importlib.util.spec_from_file_location("server_multipart", source)
    multipart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(multipart)

    path, _, points = case
    call_ = infer_call("dextr3d", "m", {"points": points}, make_upload(path))
    form, files = multipart.parse_like_python_client(call_.content, call_.headers["Content-Type"])
    assert json.loads(form["params"]) == {"points": points}
    assert files == {"phantom.nii.gz": path.read_bytes()}
    assert call_.content.startswith(b"--") and b'name="params"\r\n\r\n' in call_.content
    mask, _ = read_nifti(path.read_bytes())
    assert mask.shape == read_volume(path.read_bytes(), "x.nii.gz").shape


async def test_admin_calls_on_a_server_without_an_admin_token_say_how_to_enable_it(api):
    with pytest.raises(Unauthorized, match="AIAA_ADMIN_TOKEN") as refused:
        await call(api.jobs())
    assert refused.value.status == 403
    with pytest.raises(Unauthorized, match="AIAA_ADMIN_TOKEN"):
        await call(api.versions("annotation_test"))


def test_a_dicom_folder_is_sent_as_image0_to_n(tmp_path):
    from helpers import dicom_series_files

    folder = tmp_path / "series"
    folder.mkdir()
    for i, data in enumerate(dicom_series_files()):
        (folder / f"IM{i:04d}").write_bytes(data)
    roomy = Settings(config="unused.json", max_upload_bytes=64 * 1024 * 1024, max_voxels=512 * 512 * 64)
    with TestClient(create_app(roomy, standin_pool())) as test_client:
        client = Client("http://testserver", http_client=test_client)
        info = client.create_session(folder)
        assert info["session_info"]["image"]["shape"] == [512, 512, 20]
        points = [[200, 250, 2], [300, 250, 2], [250, 200, 2], [250, 300, 2], [250, 250, 0], [250, 250, 19]]
        result = client.dextr3d("annotation_test", None, points, session_id=info["session_id"])
        assert result.mask.shape == (512, 512, 20) and result.mask.any()
