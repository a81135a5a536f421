"""The viewer in Debian's Firefox ESR, with WebGL2 from Mesa's llvmpipe: three views, the 3D view, prompts.

Playwright drives only its own Firefox build, which is not available here, so this test drives
``firefox-esr`` over WebDriver BiDi (a websocket) with real pointer input. Headless Firefox offers no
WebGL2 without a GPU; a normal window on a virtual X display (``xvfb-run``) gets llvmpipe. Skips,
with the reason, where ``firefox-esr`` or ``xvfb-run`` is missing (``apt-get install firefox-esr xvfb``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import phantom, phantom_points, serve_in_thread, standin_interactive_engine
from PIL import Image
from viewer_helpers import api_mask, server_mask, upload

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
XVFB_RUN = shutil.which("xvfb-run")
pytestmark = pytest.mark.skipif(not (FIREFOX and XVFB_RUN), reason="needs firefox-esr and xvfb-run "
                                "(apt-get install firefox-esr xvfb)")


class Bidi:
    """A minimal WebDriver BiDi client: one browsing context, commands answered in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.context = ""

    async def cmd(self, method: str, params: dict) -> dict:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                assert message.get("type") != "error", message
                return message["result"]

    async def js(self, expression: str):
        """The value of a page expression (promises awaited), through JSON."""
        reply = await self.cmd("script.evaluate", {
            "expression": f"(async () => JSON.stringify((await ({expression})) ?? null))()", "awaitPromise": True,
            "target": {"context": self.context}})
        assert reply["type"] == "success", reply
        return json.loads(reply["result"]["value"])

    async def until(self, expression: str, limit_s: float = 60) -> None:
        """Wait until a page expression is true (a deadline, not a timed assertion: a slow CPU passes)."""
        deadline = time.monotonic() + limit_s
        while not await self.js(expression):
            assert time.monotonic() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.2)

    async def pointer(self, places: list[tuple[float, float]]) -> None:
        """Real pointer input: press at the first place (viewport CSS pixels), move through the rest, release."""
        moves = [{"type": "pointerMove", "x": round(x), "y": round(y), "duration": 0} for x, y in places]
        actions = [moves[0], {"type": "pointerDown", "button": 0}, *moves[1:], {"type": "pointerUp", "button": 0}]
        await self.cmd("input.performActions", {"context": self.context, "actions": [
            {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})

    async def place(self, voxel) -> tuple[float, float]:
        """Show a voxel in the axial view; its position in the viewport."""
        return tuple(await self.js(f"""(() => {{ const [x, y] = window.aiaa.showVoxel({list(voxel)});
            const r = document.getElementById('gl').getBoundingClientRect(); return [r.left + x, r.top + y] }})()"""))

    async def screenshot(self) -> bytes:
        shot = await self.cmd("browsingContext.captureScreenshot", {"context": self.context})
        return base64.b64decode(shot["data"])


def red_tint(png: bytes) -> np.ndarray:
    """Where a screenshot is tinted red, also faintly (the 3D rendering blends the mask with the volume), not yellow."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (rgb[..., 0] - rgb[..., 1] > 25) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def firefox(tmp_path_factory):
    """Firefox ESR in a window on a virtual X display, its BiDi port; stopped (with the display) afterwards."""
    profile = tmp_path_factory.mktemp("firefox_profile")
    port = _free_port()
    env = {**os.environ, "HOME": str(profile), "MOZ_CRASHREPORTER_DISABLE": "1"}
    process = subprocess.Popen([XVFB_RUN, "-a", "-s", "-screen 0 1280x1024x24", FIREFOX, "--no-remote", "--profile",
                                str(profile), "--remote-debugging-port", str(port), "about:blank"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # xvfb-run, its X server and Firefox: the group this test started
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conftest import standin_pool

    settings = Settings(config="unused.json", state_dir=str(tmp_path_factory.mktemp("firefox_state")),
                        max_upload_bytes=8 * 1024 * 1024, max_voxels=200_000, session_memory_bytes=64 * 1024 * 1024)
    pool = standin_pool()
    pool.add(standin_interactive_engine("interactive_test"))
    with serve_in_thread(create_app(settings, pool)) as port:
        yield f"http://127.0.0.1:{port}"


async def _connect(port: int):
    import websockets

    deadline = time.monotonic() + 60
    while True:
        try:
            return await websockets.connect(f"ws://127.0.0.1:{port}/session", max_size=64 * 1024 * 1024)
        except OSError:
            assert time.monotonic() < deadline, "Firefox's WebDriver BiDi port never opened"
            await asyncio.sleep(0.5)


def test_firefox_shows_three_views_and_3d_with_webgl2_and_the_prompts_work(firefox, served, tmp_path):
    vol, truth = phantom()
    sid = upload(served, write_volume(vol.array, vol.geometry, ".nii.gz", dtype="float32"))
    center = (18, 25, 15)

    async def drive() -> dict:
        async with await _connect(firefox) as ws:
            b = Bidi(ws)
            await b.cmd("session.new", {"capabilities": {}})
            b.context = (await b.cmd("browsingContext.getTree", {}))["contexts"][0]["context"]
            await b.cmd("browsingContext.setViewport", {"context": b.context, "viewport": {"width": 1280, "height": 800}})
            await b.cmd("browsingContext.navigate", {"context": b.context, "url": f"{served}/?session={sid}",
                                                     "wait": "complete"})
            await b.until("Boolean(window.aiaa && window.aiaa.state.base && window.aiaa.state.sessionId)")
            seen = {"webgl": await b.js("window.aiaa.nv.gl.getParameter(window.aiaa.nv.gl.VERSION)"),
                    "tiles": await b.js("window.aiaa.nv.screenSlices.map((s) => [s.axCorSag, s.leftTopWidthHeight])"),
                    "canvas": await b.js("Object.values(document.getElementById('gl').getBoundingClientRect().toJSON())"),
                    "dpr": await b.js("window.devicePixelRatio")}
            seen["empty"] = await b.screenshot()
            await b.js("document.querySelector(\"[data-tool='extreme']\").click()")
            for point in phantom_points(truth):  # six clicks run the model
                await b.pointer([await b.place(point)])
            await b.until("window.aiaa.state.objects.length === 1 && window.aiaa.state.objects[0].voxels > 0")
            seen["extreme"] = await b.js("Array.from(window.aiaa.state.objects[0].mask)")
            await b.place(center)
            seen["shown"] = await b.screenshot()

            await b.js("document.getElementById('new-object').click()")
            await b.js("document.querySelector(\"[data-tool='lasso']\").click()")
            ring = [(12, 18, 15), (24, 18, 15), (24, 32, 15), (12, 32, 15), (12, 18, 15)]
            places = [await b.place(v) for v in ring]
            path = [(x0 + (x1 - x0) * s / 8, y0 + (y1 - y0) * s / 8)
                    for (x0, y0), (x1, y1) in itertools.pairwise(places) for s in range(8)] + [places[-1]]
            await b.pointer(path)
            await b.until("window.aiaa.state.objects.length === 2 && window.aiaa.state.objects[1].voxels > 0")
            seen["lasso"] = await b.js("Array.from(window.aiaa.state.objects[1].mask)")
            seen["message"] = await b.js("document.getElementById('message').hidden")
            return seen

    seen = asyncio.run(drive())
    assert seen["webgl"].startswith("WebGL 2.0")
    assert sorted(t[0] for t in seen["tiles"]) == [0, 1, 2, 4]  # axial, coronal, sagittal and the 3D render
    expected = api_mask(served, "dextr3d", sid, "annotation_test", {"points": phantom_points(truth)})
    np.testing.assert_array_equal(np.array(seen["extreme"], np.uint8).reshape(vol.shape, order="F"), expected > 0)
    lasso = np.array(seen["lasso"], np.uint8).reshape(vol.shape, order="F")
    np.testing.assert_array_equal(lasso, server_mask(served, sid))
    assert lasso[center] == 1 and seen["message"]
    # the mask is drawn in every view, the 3D rendering included (screenshot pixels, tile by tile)
    red = red_tint(seen["shown"]) & ~red_tint(seen["empty"])
    left, top = seen["canvas"][0] * seen["dpr"], seen["canvas"][1] * seen["dpr"]  # tiles are in device pixels
    for view, (x, y, w, h) in seen["tiles"]:
        tile = red[int(top + y):int(top + y + h), int(left + x):int(left + x + w)]
        assert tile.sum() > 100, f"no mask in view {view}"
    folder = os.environ.get("AIAA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "viewer-firefox.png").write_bytes(seen["shown"])
