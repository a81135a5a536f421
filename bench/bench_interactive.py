"""Interactive segmentation latency per door and prompt type, reply sizes, and the share of work outside the network.

Usage: python bench/bench_interactive.py [--config model_configs/M.json] [--roi 64] [--repeats 5] [--threads 2]

Serves one interactive model with a real uvicorn server in-process and annotates real volumes
from ../shared/data (a BraTS FLAIR volume, 240x240x155; an ACDC cine-MRI stack of 6-18 slices;
a spleen CT), one object each, with every prompt type in turn: a positive click, a negative
click, a 2D box, a scribble, a lasso, extreme points, and an undo. Each is sent through every
door this server has for it:

- ``engine``: :meth:`InteractiveEngine.step` directly (no HTTP), the floor;
- ``own``: ``POST /v1/interactive/{session}/prompt`` (and ``/undo``), reply with the changed box,
  decoded and pasted into the client's mask as the SDK does; ``own_full`` the same with
  ``reply=full`` (the whole mask each time);
- ``aiaa``: ``POST /v1/deepgrow?session_id=`` with all clicks so far (AIAA clients resend them),
  whose multipart reply always carries the whole volume;
- ``nninteractive``: nnInteractive's own client (``nninteractive-client``, when installed) at
  ``/nninteractive/{model}``: clicks, a 2D box, scribble and lasso as whole-volume blosc2 masks (as
  viewers send them), undo; it has no extreme points.

Per door and prompt type it prints (JSON) the median and 90th percentile of the end-to-end
latency seen by the client, the median time spent inside the network (every network call of the
step, zoom-outs included, timed around the engine's backend call whatever door it came through),
the work outside the network (end to end minus network, median in ms) and its share (of the summed
end-to-end time), the server's own ``timings.total`` where the door reports it (``server_ms``), and
the median reply size with the changed box (``reply_bytes``) and with the whole mask
(``reply_bytes_full``: our API's ``reply=full``; for nnInteractive the whole buffer packed as its
replies are). ``overall`` sums each door up over volumes and prompt types (undo runs no network and
is left out of the shares). The load average before and after is in ``machine``.
Without ``--config`` no trained model is needed: the network is a MONAI UNet of a realistic size
that runs on every crop for its cost, while the logits come from an oracle (the tests' stand-in:
bright voxels, never at a negative prompt) on images whose object is brightened (the object
plus a tenth of the real image), so masks, crops and zoom-outs behave as with a good model.
``zooms`` shows how often a step widened its crop. Figures are wall clock on whatever machine
runs it; the machine and threads are in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "client"), str(ROOT / "tests")]

from aiaa_client._interactive import InteractiveState
from helpers import bright_interactive_net, serve_in_thread

from engines.backends import TorchBackend, load_backend
from engines.config.model import ModelConfig, load_model_config
from engines.data.io import Volume, read_volume, write_volume
from engines.networks import build_network
from engines.serving.pool import EnginePool
from engines.tasks.interactive import InteractiveEngine
from engines.transforms.points import extreme_points
from server.app import create_app
from server.protocols.interactive.wire import PromptBody, prompt_builder
from server.protocols.nninteractive.wire import pack
from server.settings import Settings

DATA = ROOT.parent / "shared" / "data"
MODEL = "interactive_bench"


def cases() -> list[tuple[str, Volume, np.ndarray]]:
    """(name, image, object mask) of the benchmark volumes that are present."""
    out = []
    brats = DATA / "brats2013_6cases" / "brats_2013_pat0001_1"
    if brats.is_dir():
        label = read_volume(str(brats / "OTMultiClass.nii.gz")).array
        out.append(("brats_flair_240x240x155", read_volume(str(brats / "Flair_subtrMeanDivStd.nii.gz")), label > 0))
    acdc = DATA / "acdc"
    if acdc.is_dir():
        item = json.loads((acdc / "datalist.json").read_text())["validation"][0]
        label = read_volume(str(acdc / item["label"])).array
        out.append((f"acdc_{Path(item['image']).name.split('.')[0]}", read_volume(str(acdc / item["image"])),
                    label == 3))
    spleen = DATA / "msd_spleen_1case"
    if spleen.is_dir():
        out.append(("spleen_ct", read_volume(str(spleen / "spleen_2_ct.nii.gz")),
                    read_volume(str(spleen / "spleen_2_seg-manual.nii.gz")).array > 0))
    return out


class OracleNetwork:
    """Runs ``backend`` for its cost, answers with the stand-in's logits (see the module docstring)."""

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.backend(x)
        return bright_interactive_net(x)


def oracle_image(volume: Volume, mask: np.ndarray) -> Volume:
    """The object made bright over a tenth of the real image (what the oracle's threshold finds)."""
    real = volume.array.astype(np.float32)
    real = (real - real.mean()) / (real.std() + 1e-6)
    return Volume(mask.astype(np.float32) * 4.0 + 0.1 * real, volume.geometry)


def build_engine(config_path: str | None, roi: int) -> InteractiveEngine:
    """The configured model, or a UNet of realistic size with the oracle's answers."""
    if config_path:
        config = load_model_config(config_path)
        return InteractiveEngine(MODEL, config, load_backend(config, Path(config_path).parent))
    config = ModelConfig.model_validate({
        "type": "deepgrow", "labels": ["object"], "model_path": "none.pt", "roi": [roi] * 3,
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 5, "out_channels": 1,
                                             "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                                             "num_res_units": 2, "norm": "instance"}}})
    torch.manual_seed(0)
    return InteractiveEngine(MODEL, config, OracleNetwork(TorchBackend(build_network(config.network))))


def prompts_for(mask: np.ndarray) -> list[tuple[str, dict]]:
    """The prompt sequence on one object: own-API bodies, derived from its mask."""
    nz = np.argwhere(mask)
    centre = nz[np.argmin(((nz - nz.mean(0)) ** 2).sum(1))].tolist()  # an object voxel near its centroid
    k = centre[2]
    plane = np.argwhere(mask[:, :, k])
    lo, hi = plane.min(0), plane.max(0)
    outside = [int(min(hi[0] + 3, mask.shape[0] - 1)), centre[1], k]
    scribble = [[i, centre[1], k] for i in range(int(lo[0]), int(hi[0]) + 1) if mask[i, centre[1], k]]
    lasso = [[int(lo[0]), int(lo[1]), k], [int(hi[0]), int(lo[1]), k], [int(hi[0]), int(hi[1]), k],
             [int(lo[0]), int(hi[1]), k]]
    return [
        ("point", {"type": "point", "points": [centre]}),
        ("negative_point", {"type": "point", "positive": False, "points": [outside]}),
        ("box_2d", {"type": "box", "box": [[int(lo[0]), int(lo[1]), k], [int(hi[0]), int(hi[1]), k]]}),
        ("scribble", {"type": "scribble", "points": scribble or [centre]}),
        ("lasso", {"type": "lasso", "points": lasso}),
        ("extreme_points", {"type": "extreme_points",
                            "points": extreme_points(mask).astype(int).tolist()}),
        ("undo", {"type": "undo"}),
    ]


class NetworkClock:
    """Wraps an engine's network callable and sums the time spent inside it (every zoom-out included)."""

    def __init__(self, network) -> None:
        self.network = network
        self.ms = 0.0

    def __call__(self, x):
        start = time.perf_counter()
        try:
            return self.network(x)
        finally:
            self.ms += (time.perf_counter() - start) * 1000.0

    def take(self) -> float:
        """Milliseconds in the network since the last call."""
        ms, self.ms = self.ms, 0.0
        return ms


def timed(clock: NetworkClock, call, *args, **kwargs) -> tuple[dict, object]:
    """``call(*args, **kwargs)`` timed end to end (from the client's side), with the network time it caused."""
    clock.take()
    start = time.perf_counter()
    out = call(*args, **kwargs)
    total = (time.perf_counter() - start) * 1000.0
    return {"total_ms": total, "network_ms": clock.take()}, out


def summarise(rows: list[dict]) -> dict:
    """Median and p90 end to end, median network, work outside the network (ms and share), reply sizes."""
    total = [r["total_ms"] for r in rows]
    network = [r["network_ms"] for r in rows]
    outside = [t - n for t, n in zip(total, network)]
    out = {"n": len(rows), "median_ms": round(statistics.median(total), 1),
           "p90_ms": round(float(np.percentile(total, 90)), 1),
           "network_ms": round(statistics.median(network), 1), "outside_network_ms": round(statistics.median(outside), 1),
           "outside_share": round(sum(outside) / max(sum(total), 1e-9), 3)}
    for key in ("server_ms", "reply_bytes", "reply_bytes_full"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = round(statistics.median(values), 1 if key == "server_ms" else None)
    zooms = [r["zooms"] for r in rows if "zooms" in r]
    if zooms:
        out["zooms_mean"] = round(float(np.mean(zooms)), 2)
    return out


def run_engine(engine: InteractiveEngine, clock: NetworkClock, volume: Volume, mask: np.ndarray,
               repeats: int) -> dict[str, list[dict]]:
    """The floor: engine.step on the prepared image, no HTTP, no state."""
    prepared = engine.prepare(volume)
    shape = prepared.shape
    rows: dict[str, list[dict]] = {}
    for _ in range(repeats):
        current = None
        so_far = []
        for name, body in prompts_for(mask):
            if name == "undo":
                continue
            prompt = prompt_builder(PromptBody.model_validate(body))(shape)
            so_far.append(prompt)
            row, result = timed(clock, engine.step, prepared, so_far, current)
            current = result.mask
            rows.setdefault(name, []).append({**row, "zooms": result.zooms})
    return rows


def own_call(http: httpx.Client, state: InteractiveState, sid: str, reply: str, body: dict) -> httpx.Response:
    """One prompt (or undo) through our API, its reply pasted into the client's mask as the SDK does."""
    if body["type"] == "undo":
        r = http.post(f"/v1/interactive/{sid}/undo?reply={reply}")
    else:
        r = http.post(f"/v1/interactive/{sid}/prompt?model={MODEL}&reply={reply}", json=body)
    r.raise_for_status()
    state.apply(r.json())
    return r


def run_own(http: httpx.Client, clock: NetworkClock, sid: str, mask: np.ndarray,
            repeats: int) -> dict[str, dict[str, list[dict]]]:
    """Our API as the SDK uses it: each reply decoded and pasted into the client's mask (changed box and whole)."""
    doors: dict[str, dict[str, list[dict]]] = {"own": {}, "own_full": {}}
    for _ in range(repeats):
        for door, reply in (("own", "box"), ("own_full", "full")):
            http.post(f"/v1/interactive/{sid}/reset")
            state = InteractiveState(MODEL)
            for name, body in prompts_for(mask):
                row, r = timed(clock, own_call, http, state, sid, reply, body)
                row["server_ms"] = r.json()["timings"]["total"]
                row["reply_bytes" if door == "own" else "reply_bytes_full"] = len(r.content)
                doors[door].setdefault(name, []).append(row)
    for name, rows in doors["own_full"].items():  # one door, two reply sizes
        for row, full in zip(doors["own"][name], rows):
            row["reply_bytes_full"] = full["reply_bytes_full"]
    return doors


def run_aiaa(http: httpx.Client, clock: NetworkClock, sid: str, mask: np.ndarray, repeats: int) -> dict[str, list[dict]]:
    """AIAA deepgrow on the session: all clicks so far each time, the whole volume back (no changed-box reply)."""
    rows: dict[str, list[dict]] = {}
    for _ in range(repeats):
        clicks: dict[str, list] = {"foreground": [], "background": []}
        for name, body in prompts_for(mask)[:2]:  # deepgrow takes clicks only
            clicks["foreground" if body.get("positive", True) else "background"] += body["points"]

            row, r = timed(clock, http.post, f"/v1/deepgrow?model={MODEL}&session_id={sid}",
                           data={"params": json.dumps(clicks)})
            r.raise_for_status()
            params = json.loads(r.content.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
            rows.setdefault(name, []).append({**row, "server_ms": params["timings"]["total"],
                                              "reply_bytes": len(r.content), "reply_bytes_full": len(r.content)})
    return rows


def nninteractive_calls(session, mask: np.ndarray) -> list[tuple[str, object]]:
    """The prompt sequence through nnInteractive's client; scribble and lasso as whole-volume masks, as viewers send them."""
    calls = []
    for name, body in prompts_for(mask):
        if name in ("point", "negative_point"):
            calls.append((name, partial(session.add_point_interaction, body["points"][0],
                                        include_interaction=body.get("positive", True))))
        elif name == "box_2d":
            (a, b) = np.asarray(body["box"]).min(0), np.asarray(body["box"]).max(0) + 1
            calls.append((name, partial(session.add_bbox_interaction, [[int(x), int(y)] for x, y in zip(a, b)],
                                        include_interaction=True)))
        elif name in ("scribble", "lasso"):
            prompt = prompt_builder(PromptBody.model_validate(body))(mask.shape)  # the lasso filled, as viewers send it
            drawn = np.zeros(mask.shape, np.uint8)
            drawn[tuple(prompt.voxels.T)] = 1
            add = session.add_scribble_interaction if name == "scribble" else session.add_lasso_interaction
            calls.append((name, partial(add, drawn, include_interaction=True)))
        elif name == "undo":
            calls.append((name, session.undo))
    return calls  # nnInteractive has no extreme-points interaction


def run_nninteractive(url: str, clock: NetworkClock, volume: Volume, mask: np.ndarray,
                      repeats: int) -> dict[str, list[dict]]:
    """nnInteractive's own client (``nninteractive-client``): blosc2 bodies, changed-box replies pasted into its buffer."""
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    rows: dict[str, list[dict]] = {}
    replies: list[int] = []
    with nnInteractiveRemoteInferenceSession(f"{url}/nninteractive/{MODEL}") as session:
        apply = session._apply_prediction_response  # the client's own reply handling, with the body's size noted

        def noted(response):
            replies.append(len(response.content))
            return apply(response)

        session._apply_prediction_response = noted
        session.set_image(volume.array[None].astype(np.float32), {"spacing": list(volume.geometry.spacing)})
        buffer = np.zeros(volume.shape, np.uint8)
        session.set_target_buffer(buffer)
        for _ in range(repeats):
            session.reset_interactions()
            buffer[:] = 0
            for name, call in nninteractive_calls(session, mask):
                row, _ = timed(clock, call)
                rows.setdefault(name, []).append({**row, "reply_bytes": replies[-1],
                                                  "reply_bytes_full": len(pack(buffer))})
    return rows


def nninteractive_client_installed() -> bool:
    """Whether ``nninteractive-client`` is importable (the nnInteractive door is measured only then)."""
    try:
        import nnInteractive.inference.remote  # noqa: F401
    except ImportError:
        return False
    return True


def run_case(url: str, engine: InteractiveEngine, clock: NetworkClock, volume: Volume, mask: np.ndarray,
             repeats: int) -> dict[str, dict[str, list[dict]]]:
    """Rows per door and prompt type for one volume."""
    doors: dict[str, dict[str, list[dict]]] = {"engine": run_engine(engine, clock, volume, mask, repeats)}
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    with httpx.Client(base_url=url, timeout=600) as http:
        sid = http.put("/session/", files={"image": ("image.nii.gz", data)}).json()["session_id"]
        http.post(f"/v1/interactive/{sid}/prompt?model={MODEL}", json=prompts_for(mask)[0][1])  # prepares once
        doors.update(run_own(http, clock, sid, mask, repeats))
        doors["aiaa"] = run_aiaa(http, clock, sid, mask, repeats)
        http.delete(f"/session/{sid}")
    if nninteractive_client_installed():
        doors["nninteractive"] = run_nninteractive(url, clock, volume, mask, repeats)
    return doors


def overall(cases: dict, door: str) -> dict:
    """One door over every volume: median of the per-prompt medians, and the outside-network share of prompts
    that run the network (undo does not)."""
    rows = [r for c in cases.values() for p, r in c["doors"].get(door, {}).items() if p != "undo"]
    if not rows:
        return {}
    shares = [r["outside_share"] for r in rows]
    return {"median_of_medians_ms": round(statistics.median(r["median_ms"] for r in rows), 1),
            "network_median_ms": round(statistics.median(r["network_ms"] for r in rows), 1),
            "outside_share_mean": round(float(np.mean(shares)), 3),
            "outside_share_range": [min(shares), max(shares)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="an interactive model config (default: untrained UNet)")
    parser.add_argument("--roi", type=int, default=64, help="ROI edge of the default network (default 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volumes = cases()
    if not volumes:
        sys.exit(f"benchmark data not found under {DATA}")
    engine = build_engine(args.config, args.roi)
    engine.warmup()
    clock = NetworkClock(engine.network_fn)
    engine.network_fn = clock  # the engine's every network call, whichever door it came through
    pool = EnginePool()
    pool.add(engine)
    app = create_app(Settings(config="unused.json", warmup=False, max_voxels=512 * 512 * 512,
                              max_upload_bytes=1024**3, session_memory_bytes=2 * 1024**3), pool)
    report: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "model": {"config": args.config or "oracle answers; cost of a UNet (16,32,64,128), 2 res units, instance norm",
                  "roi": list(engine.roi), "interactive": engine.options.model_dump()},
        "cases": {},
    }
    with serve_in_thread(app) as port:
        for name, volume, mask in volumes:
            volume = volume if args.config else oracle_image(volume, mask)
            doors = run_case(f"http://127.0.0.1:{port}", engine, clock, volume, mask, args.repeats)
            report["cases"][name] = {"shape": list(volume.shape), "spacing": [round(s, 3) for s in volume.geometry.spacing],
                                     "doors": {door: {p: summarise(rows) for p, rows in per.items()}
                                               for door, per in doors.items()}}
            print(f"{name}: done", file=sys.stderr, flush=True)
    report["overall"] = {door: overall(report["cases"], door)
                         for door in ("engine", "own", "own_full", "aiaa", "nninteractive")}
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
