"""The browser viewer (``/``) and admin page (``/admin``), driven by Playwright in Debian's chromium.

The browser tests skip, with the reason, where the ``playwright`` package or ``/usr/bin/chromium`` is
missing (``.ci/run`` installs chromium; ``make test`` installs playwright with the dev extra). The
interactive tests use the server's own ``/v1/interactive/...`` routes with a stand-in interactive
engine where they exist, and otherwise a small fake of the shared contract (same routes and replies);
either way they compare what the page shows with the server's own mask. Extreme points, automatic
segmentation, sessions and the jobs API are always the server's own. Set ``AIAA_SCREENSHOTS=folder`` to keep the screenshots the README shows.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import os
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from helpers import phantom, phantom_points, serve_in_thread
from scipy import ndimage
from viewer_helpers import api_mask, reddish, server_mask, upload

from engines.data.io import read_volume, write_volume
from server.app import create_app
from server.settings import Settings

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra installs it
    sync_playwright = None

CHROMIUM = Path(os.environ.get("AIAA_CHROMIUM", "/usr/bin/chromium"))  # Debian's package by default
TOKEN = "viewer-test-token"

try:  # the interactive routes and their stand-in engine (the interactive issue's branch)
    from helpers import standin_interactive_engine

    import server.protocols.interactive  # noqa: F401
except ImportError:
    standin_interactive_engine = None
INTERACTIVE = "interactive_fake" if standin_interactive_engine is None else "interactive_test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# ---------------------------------------------------------------- the pages are served, the JSON routes are not shadowed


def test_pages_and_assets_are_served_without_shadowing_json_routes(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="gl">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp  # nothing from a CDN can run
    admin = client.get("/admin")
    assert admin.status_code == 200 and 'id="token"' in admin.text
    for asset in ("viewer.js", "admin.js", "style.css", "LICENSES.txt"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    assert "@niivue/niivue 0.69.0 (BSD-2-Clause)" in client.get("/static/LICENSES.txt").text
    assert client.get("/static/../app.py").status_code == 404
    assert isinstance(client.get("/v1/models").json(), list)
    refused = client.get("/admin/jobs")
    assert refused.status_code in (401, 403) and refused.json()["error"]
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the pages are not API routes


def test_built_pages_load_nothing_from_elsewhere():
    static = Path(__file__).resolve().parents[2] / "server" / "static"
    for page in ("index.html", "admin.html"):
        text = (static / page).read_text()
        assert "http://" not in text and "https://" not in text, page
    assert "fonts.googleapis" not in (static / "style.css").read_text()


# ---------------------------------------------------------------- a fake of the interactive API (shared contract)


class FakeInteractive:
    """One object per session: a point adds (or removes) a ball of radius 3, a box fills, a scribble sets voxels."""

    def __init__(self) -> None:
        self.masks: dict[str, np.ndarray] = {}
        self.history: dict[str, list[np.ndarray]] = {}
        self.calls: list[str] = []

    def router(self) -> APIRouter:
        router = APIRouter()

        def shape_of(request: Request, sid: str) -> tuple[int, ...] | JSONResponse:
            session = request.app.state.sessions.get(sid)
            if session is None:
                return JSONResponse({"error": "SessionExpired", "detail": f"session '{sid}' not found"}, 440)
            return session.volume.shape

        def reply(mask: np.ndarray, lo, hi, step: int) -> JSONResponse:
            box = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            data = base64.b64encode(gzip.compress(box.astype(np.uint8).tobytes(order="F"))).decode()
            return JSONResponse({"model": INTERACTIVE, "step": step, "box": [list(lo), list(hi)],
                                 "shape": list(mask.shape), "encoding": "gzip-base64-u8-fortran", "mask": data,
                                 "voxels": int(mask.sum()), "timings": {"infer": 1.5}})

        @router.post("/v1/interactive/{sid}/prompt")
        async def prompt(sid: str, request: Request, model: str = ""):
            self.calls.append("prompt")
            shape = shape_of(request, sid)
            if isinstance(shape, JSONResponse):
                return shape
            if model != INTERACTIVE:
                return JSONResponse({"error": "ModelNotFoundError", "detail": f"no model {model!r}"}, 404)
            body = await request.json()
            for point in body.get("points", []):
                if not all(0 <= x < n for x, n in zip(point, shape)):
                    return JSONResponse({"error": "BadRequest", "detail": f"point {point} is outside the volume"}, 400)
            mask = self.masks.get(sid, np.zeros(shape, np.uint8))
            self.history.setdefault(sid, []).append(mask.copy())
            new = mask.copy()
            value = 1 if body.get("positive", True) else 0
            if body["type"] == "point":
                center = np.array(body["points"][0])
                grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
                ball = sum((grid[d] - center[d]) ** 2 for d in range(3)) <= 9
                new[ball] = value
                lo, hi = np.maximum(center - 3, 0), np.minimum(center + 4, shape)
            elif body["type"] == "scribble":
                lo, hi = np.min(body["points"], axis=0), np.max(body["points"], axis=0) + 1
                for point in body["points"]:
                    new[tuple(point)] = value
            elif body["type"] == "box":
                (a, b) = body["box"]
                lo, hi = np.array(a), np.array(b) + 1
                new[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
            else:
                return JSONResponse({"error": "BadRequest", "detail": f"prompt type {body['type']!r} is not supported"},
                                    400)
            self.masks[sid] = new
            return reply(new, lo.tolist(), hi.tolist(), len(self.history[sid]))

        @router.post("/v1/interactive/{sid}/undo")
        async def undo(sid: str, request: Request):
            self.calls.append("undo")
            if not self.history.get(sid):
                return JSONResponse({"error": "Conflict", "detail": "nothing to undo"}, 409)
            self.masks[sid] = self.history[sid].pop()
            return reply(self.masks[sid], [0, 0, 0], self.masks[sid].shape, len(self.history[sid]))

        @router.post("/v1/interactive/{sid}/reset")
        async def reset(sid: str):
            self.calls.append("reset")
            self.masks.pop(sid, None)
            self.history.pop(sid, None)
            return JSONResponse({"reset": True})

        @router.put("/v1/interactive/{sid}/mask")
        async def put_mask(sid: str, request: Request, model: str = ""):
            self.calls.append("mask")
            form = await request.form()
            volume = read_volume(await form["mask"].read(), "mask.nii.gz")
            self.masks[sid] = (volume.array > 0).astype(np.uint8)
            self.history[sid] = []
            return JSONResponse({"model": model, "voxels": int(self.masks[sid].sum())})

        @router.get("/v1/interactive/{sid}/mask")
        def get_mask(sid: str, format: str = "nii.gz"):
            mask = self.masks[sid]
            data = base64.b64encode(gzip.compress(mask.astype(np.uint8).tobytes(order="F"))).decode()
            return JSONResponse({"model": INTERACTIVE, "shape": list(mask.shape), "encoding": "gzip-base64-u8-fortran",
                                 "mask": data, "voxels": int(mask.sum())})

        @router.get("/v1/models")
        def models(request: Request):
            infos = [engine.info() for engine in request.app.state.pool.engines()]
            return JSONResponse([*infos, {"name": INTERACTIVE, "type": "deepgrow", "labels": ["blob"]}])

        return router


# ---------------------------------------------------------------- a served app and a browser


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("the playwright package is missing (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it as root)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real server (stand-in engines, admin token; the fake interactive routes first where the server has
    none); yields (url, app)."""
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path_factory.mktemp("viewer_state")),
                        admin_token=TOKEN, max_upload_bytes=8 * 1024 * 1024, max_voxels=200_000,
                        session_memory_bytes=64 * 1024 * 1024)
    pool = standin_pool()
    if standin_interactive_engine is not None:
        pool.add(standin_interactive_engine(INTERACTIVE))
    app = create_app(settings, pool)
    if standin_interactive_engine is None:
        app.router.routes[0:0] = FakeInteractive().router().routes
    with serve_in_thread(app) as port:
        app.state.supervisor.stop()  # the admin test writes the job table itself; nothing may run it
        yield f"http://127.0.0.1:{port}", app


@pytest.fixture()
def page(browser, served):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def volume():
    vol, mask = phantom()
    return vol, mask, write_volume(vol.array, vol.geometry, ".nii.gz", dtype="float32")


def open_session(page, url: str, sid: str) -> None:
    page.goto(f"{url}/?session={sid}")
    page.wait_for_function("() => window.aiaa && window.aiaa.state.base && window.aiaa.state.sessionId")


def click_voxel(page, voxel) -> None:
    """Show the voxel's axial slice, then click it on the canvas with the mouse."""
    x, y = page.evaluate("(v) => window.aiaa.showVoxel(v)", list(voxel))
    box = page.locator("#gl").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def object_mask(page, index: int, shape) -> np.ndarray:
    flat = page.evaluate("(n) => Array.from(window.aiaa.state.objects[n].mask)", index)
    return np.array(flat, np.uint8).reshape(shape, order="F")


def keep(page, name: str) -> None:
    folder = os.environ.get("AIAA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


# ---------------------------------------------------------------- the viewer


def test_extreme_point_clicks_show_the_mask_undo_redo_and_save(page, served, volume):
    url, _ = served
    vol, truth, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    assert page.evaluate("window.aiaa.state.dims") == list(vol.shape)
    page.keyboard.press("e")  # the extreme points tool
    points = phantom_points(truth)
    for point in points[:5]:
        click_voxel(page, point)
    before = page.locator("#gl").screenshot()
    assert page.evaluate("window.aiaa.state.extreme") == points[:5]
    click_voxel(page, points[5])  # the sixth point runs the model
    page.wait_for_function("() => window.aiaa.state.objects.length === 1 && window.aiaa.state.objects[0].voxels > 0")

    expected = api_mask(url, "dextr3d", sid, "annotation_test", {"points": points})
    shown = object_mask(page, 0, vol.shape)
    np.testing.assert_array_equal(shown, expected > 0)
    assert expected.sum() > 0.5 * truth.sum()

    center = [int(c) for c in np.argwhere(truth).mean(axis=0).round()]
    x, y = page.evaluate("(v) => window.aiaa.showVoxel(v)", center)
    after = page.locator("#gl").screenshot()
    red = reddish(after) & ~reddish(before)
    assert red.sum() > 200, "no mask overlay on the canvas"
    near = red[max(0, int(y) - 20):int(y) + 20, max(0, int(x) - 20):int(x) + 20]
    assert near.mean() > 0.3, "the overlay is not where the object is"
    assert "dextr3d (annotation_test)" in page.locator("#timings").inner_text()
    keep(page, "viewer.png")

    page.keyboard.press("Control+z")
    page.wait_for_function("() => window.aiaa.state.objects[0].voxels === 0")
    page.keyboard.press("Control+y")
    page.wait_for_function("() => window.aiaa.state.objects[0].voxels > 0")

    with page.expect_download() as saved:
        page.locator("#save-mask").click()
    assert saved.value.suggested_filename == "phantom_mask.nii.gz"
    image = nib.Nifti1Image.from_bytes(gzip.decompress(Path(saved.value.path()).read_bytes()))
    np.testing.assert_array_equal(np.asarray(image.dataobj), (expected > 0).astype(np.uint8))
    reference = nib.Nifti1Image.from_bytes(gzip.decompress(httpx.get(f"{url}/session/{sid}/image").content))
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-4)


def test_drag_and_drop_of_a_file_opens_it_as_a_session(page, served, volume):
    url, app = served
    vol, _, data = volume
    page.goto(url + "/")
    page.wait_for_function("() => window.aiaa && window.aiaa.nv")
    transfer = page.evaluate_handle("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
        const dt = new DataTransfer()
        dt.items.add(new File([bytes], name))
        return dt
    }""", [base64.b64encode(data).decode(), "dropped.nii.gz"])
    page.dispatch_event("#viewport", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => window.aiaa.state.base && window.aiaa.state.sessionId")
    sid = page.evaluate("window.aiaa.state.sessionId")
    assert app.state.sessions.get(sid).name == "dropped.nii.gz"
    assert page.evaluate("window.aiaa.state.dims") == list(vol.shape)
    assert f"session={sid}" in page.url  # the address can be shared
    assert "dropped.nii.gz" in page.locator("#volume-name").inner_text()


def test_automatic_segmentation_refusal_and_unreachable_server(page, served, volume):
    url, _ = served
    vol, _, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    page.locator("#run-auto").click()
    page.wait_for_function("() => window.aiaa.state.objects.length === 2")
    assert page.evaluate("window.aiaa.state.objects.map((o) => o.name)") == ["anterior", "posterior"]
    labels = api_mask(url, "segmentation", sid, "segmentation_test", {})
    for n in range(2):
        np.testing.assert_array_equal(object_mask(page, n, vol.shape), labels == n + 1)
    page.keyboard.press("f")  # outline: the overlay shows the border voxels only, the mask is unchanged
    shown = page.evaluate("window.aiaa.state.objects.map((o) => o.image.img.reduce((a, b) => a + b, 0))")
    for n in range(2):
        border = (labels == n + 1).sum() - ndimage.binary_erosion(labels == n + 1, border_value=0).sum()
        assert shown[n] == border
        np.testing.assert_array_equal(object_mask(page, n, vol.shape), labels == n + 1)
    keep(page, "viewer-automatic.png")

    httpx.delete(f"{url}/session/{sid}")  # the server now refuses: the session is gone
    page.locator("#run-auto").click()
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_contain_text(f"440: session '{sid}' not found or expired")
    expect(page.locator("#unreachable")).to_be_hidden()

    page.route(f"{url}/**", lambda route: route.abort())  # the server is gone: every request fails
    page.locator("#run-auto").click()
    expect(page.locator("#unreachable")).to_be_visible()
    expect(message).to_contain_text("cannot reach the server")


def test_interactive_clicks_undo_and_refine_an_existing_mask(page, served, volume):
    url, _ = served
    vol, _, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    assert page.locator("#model-interactive").input_value() == INTERACTIVE
    page.keyboard.press("p")
    center = (18, 25, 15)
    click_voxel(page, center)
    page.wait_for_function("() => window.aiaa.state.objects.length === 1 && window.aiaa.state.objects[0].voxels > 0")
    first = object_mask(page, 0, vol.shape)
    np.testing.assert_array_equal(first, server_mask(url, sid))
    assert first[center] == 1

    page.keyboard.press("x")  # a negative click at the same place
    click_voxel(page, center)
    page.wait_for_function("(v) => window.aiaa.state.objects[0].mask[v] === 0",
                           arg=center[0] + center[1] * vol.shape[0] + center[2] * vol.shape[0] * vol.shape[1])
    np.testing.assert_array_equal(object_mask(page, 0, vol.shape), server_mask(url, sid))
    page.keyboard.press("Control+z")  # the server's undo
    page.wait_for_function(f"() => window.aiaa.state.objects[0].voxels === {int(first.sum())}")
    np.testing.assert_array_equal(object_mask(page, 0, vol.shape), first)
    np.testing.assert_array_equal(server_mask(url, sid), first)

    page.keyboard.press("o")  # a new object: the server starts afresh
    page.keyboard.press("b")
    click_voxel(page, [12, 17, 15])
    click_voxel(page, [24, 33, 15])
    page.wait_for_function("() => window.aiaa.state.objects.length === 2 && window.aiaa.state.objects[1].voxels > 0")
    second = object_mask(page, 1, vol.shape)
    np.testing.assert_array_equal(second, server_mask(url, sid))  # nothing of the first object is kept
    page.locator("#objects li .count").first.click()  # back to the first: its mask is the server's starting mask
    page.keyboard.press("p")
    click_voxel(page, [18, 25, 19])
    page.wait_for_function("() => window.aiaa.state.objects[0].undo.length === 2")  # the first click, this one
    np.testing.assert_array_equal(object_mask(page, 0, vol.shape), server_mask(url, sid))
    np.testing.assert_array_equal(object_mask(page, 1, vol.shape), second)
    refined = object_mask(page, 0, vol.shape)
    assert refined[first > 0].mean() > 0.9  # refined from the first object's mask, not from nothing


def test_scribble_visibility_opacity_and_the_help_panel(page, served, volume):
    url, _ = served
    _, _, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    page.keyboard.press("s")
    a = page.evaluate("(v) => window.aiaa.showVoxel(v)", [10, 20, 15])
    b = page.evaluate("(v) => window.aiaa.showVoxel(v)", [26, 20, 15])
    box = page.locator("#gl").bounding_box()
    page.mouse.move(box["x"] + a[0], box["y"] + a[1])
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + a[0] + (b[0] - a[0]) * step / 10, box["y"] + a[1] + (b[1] - a[1]) * step / 10)
    page.mouse.up()
    page.wait_for_function("() => window.aiaa.state.objects.length === 1 && window.aiaa.state.objects[0].voxels >= 10")
    mask = server_mask(url, sid)
    np.testing.assert_array_equal(object_mask(page, 0, mask.shape), mask)
    assert mask[12:25, 20, 15].all()  # the stroke, continuous where it crosses the object

    page.evaluate("(v) => window.aiaa.showVoxel(v)", [18, 32, 15])  # the crosshair off the stroke
    shown = reddish(page.locator("#gl").screenshot()).sum()
    assert shown > 20
    page.locator("#objects li input[type=checkbox]").uncheck()  # hide the object
    assert reddish(page.locator("#gl").screenshot()).sum() < shown / 10
    page.locator("#objects li input[type=checkbox]").check()
    page.locator("#opacity").fill("100")
    assert reddish(page.locator("#gl").screenshot()).sum() >= shown

    page.keyboard.press("?")
    help_panel = page.locator("#help")
    expect(help_panel).to_be_visible()
    expect(help_panel).to_contain_text("Ctrl+z")
    expect(help_panel).to_contain_text("lasso tool (draw a closed contour on a slice")
    expect(help_panel).to_contain_text("2D box tool (drag a rectangle on a slice")
    page.keyboard.press("Escape")
    expect(help_panel).to_be_hidden()


def drag(page, voxels, steps: int = 8) -> None:
    """Press at the first voxel's place in the axial view, move through the others (``steps`` moves each), release."""
    box = page.locator("#gl").bounding_box()
    places = [page.evaluate("(v) => window.aiaa.showVoxel(v)", list(v)) for v in voxels]
    page.mouse.move(box["x"] + places[0][0], box["y"] + places[0][1])
    page.mouse.down()
    for (x0, y0), (x1, y1) in itertools.pairwise(places):
        for step in range(1, steps + 1):
            page.mouse.move(box["x"] + x0 + (x1 - x0) * step / steps, box["y"] + y0 + (y1 - y0) * step / steps)
    page.mouse.up()


def overlay_at_object(page, center) -> np.ndarray:
    """The red pixels of the axial view around the object's centre (the crosshair moved off the drawing)."""
    x, y = page.evaluate("(v) => window.aiaa.showVoxel(v)", list(center))
    red = reddish(page.locator("#gl").screenshot())
    return red[max(0, int(y) - 15):int(y) + 15, max(0, int(x) - 15):int(x) + 15]


@pytest.mark.parametrize("tool, key", [("lasso", "c"), ("box2d", "d")])
def test_a_lasso_and_a_2d_box_drawn_on_a_slice_show_the_mask_where_the_object_is(page, served, volume, tool, key):
    url, _ = served
    vol, truth, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    center = (18, 25, 15)
    assert reddish(page.locator("#gl").screenshot()).sum() == 0
    page.keyboard.press(key)
    assert page.locator(f"[data-tool='{tool}']").get_attribute("aria-pressed") == "true"
    corners = [(12, 18, 15), (24, 18, 15), (24, 32, 15), (12, 32, 15)]  # around the object's middle, axial slice 15
    path = [*corners, corners[0]] if tool == "lasso" else [corners[0], corners[2]]
    with page.expect_request("**/v1/interactive/*/prompt**") as sent:
        drag(page, path)
    prompt = sent.value.post_data_json
    if tool == "lasso":
        assert prompt["type"] == "lasso" and prompt["positive"] is True and len(prompt["points"]) >= 4
        assert {p[2] for p in prompt["points"]} == {15}  # one slice
        assert {tuple(c) for c in corners} <= {tuple(p) for p in prompt["points"]}
    else:
        assert prompt == {"type": "box", "positive": True, "box": [[12, 18, 15], [24, 32, 15]]}  # one axis of size 1
    page.wait_for_function("() => window.aiaa.state.objects.length === 1 && window.aiaa.state.objects[0].voxels > 0")
    shown = object_mask(page, 0, vol.shape)
    np.testing.assert_array_equal(shown, server_mask(url, sid))
    assert shown[center] == 1 and (shown & truth).sum() > 0.5 * shown.sum()  # on the object
    assert overlay_at_object(page, center).mean() > 0.3, "no mask overlay where the object is"
    assert page.locator("#sketch *").count() == 0  # the drawing is gone once sent
    keep(page, f"viewer-{tool}.png")


def test_an_interactive_refusal_shows_the_servers_text(page, served, volume):
    url, _ = served
    _, _, data = volume
    sid = upload(url, data)
    open_session(page, url, sid)
    page.route("**/v1/interactive/*/prompt**", lambda route: route.continue_(
        post_data=json.dumps({"type": "point", "positive": True, "points": [[400, 25, 15]]})))
    page.keyboard.press("p")
    click_voxel(page, [18, 25, 15])
    expect(page.locator("#message")).to_contain_text("The server refused: 400: ")  # then the server's own words
    assert page.evaluate("window.aiaa.state.objects[0].voxels") == 0  # nothing changed


# ---------------------------------------------------------------- the API documentation, offline


def test_api_docs_render_offline_and_docs_authorises_the_admin_routes(browser, served):
    """/docs and /redoc with every other host unreachable (and the server's own CSP in force)."""
    url, _ = served
    document = httpx.get(f"{url}/openapi.json").json()
    operations = sum(len(ops) for ops in document["paths"].values())
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    elsewhere: list[str] = []

    def local_only(route):
        if route.request.url.startswith(url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    try:
        page.goto(url + "/docs")
        expect(page.locator(".opblock-summary-path[data-path='/v1/models']")).to_be_visible()
        assert page.locator(".opblock").count() == operations
        page.locator(".btn.authorize").first.click()  # the bearer scheme of the admin routes
        page.locator("#auth-bearer-value").fill(TOKEN)
        page.locator(".auth-btn-wrapper .authorize").click()
        page.locator(".auth-btn-wrapper .btn-done").click()
        jobs = page.locator(".opblock-get", has=page.locator(".opblock-summary-path[data-path='/admin/jobs']"))
        jobs.locator(".opblock-summary-control").click()
        jobs.locator(".try-out__btn").click()
        with page.expect_response(lambda r: r.url.split("?")[0] == f"{url}/admin/jobs") as reply:
            jobs.locator(".execute").click()
        assert reply.value.status == 200
        assert reply.value.request.headers["authorization"] == f"Bearer {TOKEN}"
        keep(page, "docs.png")

        page.goto(url + "/redoc")
        expect(page.locator("[data-section-id^='operation/']").first).to_be_attached()
        assert page.locator("[data-section-id^='operation/']").count() == operations
        expect(page.locator("h2", has_text="List Models")).to_be_visible()
    finally:
        context.close()
    assert elsewhere == []


# ---------------------------------------------------------------- the admin page


def test_admin_page_shows_a_running_jobs_progress_moving_and_its_curves(page, served):
    url, app = served
    jobs = app.state.jobs
    row = jobs.create("finetune", "annotation_test", "datalist.json", {"epochs": 4}, str(Path(app.state.settings.state_dir) / "jobs"))
    log = Path(row["log_path"])
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('initialised\n{"epoch": 1, "loss": 0.9, "lr": 0.001}\n'
                   '{"epoch": 2, "loss": 0.6, "lr": 0.001, "val_mean_dice": 0.55}\n')
    jobs.update(row["id"], state="running", started_at=time.time(),
                progress={"progress": 0.25, "epoch": 2, "epochs": 4, "metrics": {"loss": 0.6, "dice": 0.55}})

    page.goto(url + "/admin")
    page.locator("#token").fill(TOKEN)
    page.locator("#token-form button[type=submit]").click()
    bar = page.locator(f"tr[data-job-id='{row['id']}'] progress")
    expect(bar).to_have_attribute("value", "0.25")
    assert page.evaluate("sessionStorage.getItem('aiaa-admin-token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0  # the token stays in this tab

    jobs.update(row["id"], progress={"progress": 0.5, "epoch": 3, "epochs": 4, "metrics": {"loss": 0.4, "dice": 0.7}})
    expect(bar).to_have_attribute("value", "0.5")  # from the event stream
    page.locator(f"tr[data-job-id='{row['id']}'] button").click()
    expect(page.locator("#logs")).to_contain_text('"epoch": 2')
    expect(page.locator("#curves polyline.curve-loss")).to_have_count(1)
    expect(page.locator("#curves polyline.curve-dice")).to_have_count(1)
    assert page.locator("#curves circle").count() >= 5  # epochs 1-3 of loss, 2-3 of Dice
    keep(page, "admin.png")

    jobs.update(row["id"], state="succeeded", finished_at=time.time(), result={"version": "3"},
                progress={"progress": 1.0, "epoch": 4, "epochs": 4, "metrics": {"loss": 0.3, "dice": 0.8}})
    expect(bar).to_have_attribute("value", "1")
    expect(page.locator(f"tr[data-job-id='{row['id']}']")).to_contain_text("succeeded")
    expect(page.locator("#result")).to_contain_text('"version": "3"')


def test_admin_page_shows_the_servers_refusal_of_a_wrong_token(page, served):
    url, _ = served
    page.goto(url + "/admin")
    page.locator("#token").fill("wrong")
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#message")).to_contain_text("401: wrong admin token")



def test_admin_page_serves_and_rolls_back_versions(page, served):
    """The stand-in models have no stored versions, so the versions route answers from the page's network
    layer here, in the real route's shape; the test checks what the page shows and the PUT it sends."""
    url, _ = served
    record = {"serving": "2", "puts": []}

    def versions(route):
        rows = [{"version": str(n), "source": {"kind": kind}, "metrics": {"val_mean_dice": dice},
                 "serving": str(n) == record["serving"]} for n, kind, dice in ((1, "config", 0.81), (2, "finetune", 0.86))]
        route.fulfill(json={"model": "annotation_test", "serving": record["serving"], "versions": rows})

    def serving(route):
        record["puts"].append((route.request.headers["authorization"], route.request.post_data_json))
        record["serving"] = route.request.post_data_json["version"]
        route.fulfill(json={"model": "annotation_test", "serving": record["serving"]})

    page.route("**/admin/models/annotation_test/versions", versions)
    page.route("**/admin/models/annotation_test/serving", serving)
    page.goto(url + "/admin")
    page.locator("#token").fill(TOKEN)
    page.locator("#token-form button[type=submit]").click()
    table = page.locator("table[data-model='annotation_test']")
    expect(table).to_contain_text("serving version 2")
    expect(page.locator("#versions")).to_contain_text("segmentation_test: 404")  # no stored versions: a note
    table.get_by_role("button", name="Roll back to this").click()
    expect(page.locator("#message")).to_contain_text("annotation_test now serves version 1")
    expect(table).to_contain_text("serving version 1")
    assert record["puts"] == [(f"Bearer {TOKEN}", {"version": "1"})]
    expect(page.locator("#submit-model option")).to_have_count(3)  # every served model, the interactive one too


def test_admin_page_submits_a_finetune_and_shows_the_refusal(page, served):
    url, _ = served
    page.goto(url + "/admin")
    page.locator("#token").fill(TOKEN)
    page.locator("#token-form button[type=submit]").click()
    page.locator("#submit-model").select_option("annotation_test")
    page.locator("#datalist").fill("/etc/passwd")
    page.locator("#params").fill('{"epochs": 3}')
    with page.expect_request("**/admin/jobs") as sent:
        page.locator("#submit button[type=submit]").click()
    assert sent.value.post_data_json == {"kind": "finetune", "model": "annotation_test", "datalist": "/etc/passwd",
                                         "params": {"epochs": 3}}
    expect(page.locator("#message")).to_contain_text("403: datalist '/etc/passwd' is outside the data roots")
    page.locator("#params").fill("{epochs")
    page.locator("#submit button[type=submit]").click()
    expect(page.locator("#message")).to_contain_text("params is not JSON")
