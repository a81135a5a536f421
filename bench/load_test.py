"""Many annotators at once: each client opens its own session and clicks; prints JSON.

Usage: python bench/load_test.py [--model interactive_any] [--clients 1,4,16,32] [--clicks 10]
       [--batching 8,5] [--url http://host:port]

Without ``--url`` a real server (``python -m server.cli serve``) is started in its own process
on a free port, serving only ``--model`` from the repo's engine pool, and stopped afterwards.
Every client uploads one real hippocampus MRI once (``PUT /session/``), then sends ``--clicks``
clicks on it with its ``session_id``, honouring ``Retry-After`` on 503:

- ``interactive_any`` (a deepgrow model): a positive click on a voxel of the hippocampus
  (``POST /v1/interactive/{session}/prompt``), each a new object (reset), as a first click is;
- ``annotation_mri_hippocampus`` (DEXTR3D): its six extreme points (``POST /v1/dextr3d``).

A probe asks ``GET /health/live`` every 100 ms throughout. Per client count: throughput
(clicks/s), click latency p50/p95 (including waits after 503), refusals (503 answers), failures
(anything else but 200), probe latency p50/p95/max. With ``--batching MAX_BATCH,MAX_WAIT_MS``
every level runs twice, on a server without and one with the model's micro-batching, side by
side. The machine's load average is printed before each server starts (other work on it counts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from engines.data.io import read_volume
from engines.transforms.points import extreme_points

DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"
MODELS = ("interactive_any", "annotation_mri_hippocampus")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def click(client: httpx.AsyncClient, model: str, session: str, points: list, n: int) -> httpx.Response:
    """The model's click: an interactive point (a new object each time) or the DEXTR3D extreme points."""
    if model == "interactive_any":
        return await client.post(f"/v1/interactive/{session}/prompt?model={model}",
                                 json={"type": "point", "points": [points[n % len(points)]]})
    return await client.post(f"/v1/dextr3d?model={model}&session_id={session}&output=json",
                             data={"params": json.dumps({"points": points})})


async def annotator(base: str, model: str, image: bytes, points: list, clicks: int, stats: dict) -> None:
    """One client with its own connection: a session, then ``clicks`` clicks with retries on 503."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        reply = await client.put("/session/?expiry=600", files={"image": ("image.nii.gz", image)})
        if reply.status_code != 200:
            stats["failures"].append(f"session {reply.status_code}")
            return
        session = reply.json()["session_id"]
        for n in range(clicks):
            if n and model == "interactive_any":  # each click starts a new object (the first click's work)
                await client.post(f"/v1/interactive/{session}/reset")
            start = time.perf_counter()
            for _attempt in range(100):
                reply = await click(client, model, session, points, n)
                if reply.status_code != 503:
                    break
                stats["refusals"] += 1
                await asyncio.sleep(float(reply.headers.get("retry-after", "1")))
            if reply.status_code == 200:
                stats["clicks_ms"].append((time.perf_counter() - start) * 1000)
            else:
                stats["failures"].append(f"click {reply.status_code}")
        await client.delete(f"/session/{session}")


def probe(base: str, stop: threading.Event, latencies: list[float]) -> None:
    """``GET /health/live`` every 100 ms on its own connection and thread (the clients' loop does not delay it)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            reply = client.get("/health/live")
            if reply.status_code == 200:
                latencies.append((time.perf_counter() - start) * 1000)
            stop.wait(0.1)


async def run(base: str, model: str, clients: int, clicks: int, cases: list[tuple[bytes, list]]) -> dict:
    """One load level: ``clients`` annotators at once."""
    stats: dict = {"clicks_ms": [], "refusals": 0, "failures": []}
    probes: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(base, stop, probes))
    prober.start()
    start = time.perf_counter()
    await asyncio.gather(*(annotator(base, model, *cases[n % len(cases)], clicks, stats) for n in range(clients)))
    wall = time.perf_counter() - start
    stop.set()
    prober.join()
    return {
        "clients": clients, "clicks": len(stats["clicks_ms"]), "wall_s": round(wall, 1),
        "throughput_clicks_per_s": round(len(stats["clicks_ms"]) / wall, 2),
        "click_ms_p50": percentile(stats["clicks_ms"], 50), "click_ms_p95": percentile(stats["clicks_ms"], 95),
        "refusals_503": stats["refusals"], "failures": len(stats["failures"]),
        "failure_kinds": sorted(set(stats["failures"])),
        "probe_ms_p50": percentile(probes, 50), "probe_ms_p95": percentile(probes, 95),
        "probe_ms_max": round(max(probes), 1) if probes else None, "probes": len(probes),
    }


def pool_of(model: str, pool: Path, folder: Path, batching: tuple[int, float] | None) -> Path:
    """An engine pool of ``model`` alone (from ``pool``), its config copied into ``folder`` with absolute
    paths, micro-batching off or, with ``batching``, on with ``(max_batch, max_wait_ms)``."""
    entry = next(e for e in json.loads(pool.read_text()) if e["name"] == model)
    source = (pool.parent / entry["config_file"]).resolve()
    config = json.loads(source.read_text())
    config["model_path"] = str((source.parent / config["model_path"]).resolve())
    config.pop("datalist", None)
    config.pop("batching", None)  # the shipped setting is what is compared: off, then ``batching``
    if batching:
        config["batching"] = {"max_batch": batching[0], "max_wait_ms": batching[1]}
    (folder / "model.json").write_text(json.dumps(config))
    (folder / "engine_pool.json").write_text(json.dumps([{**entry, "config_file": "model.json"}]))
    return folder / "engine_pool.json"


def start_server(config: str, state: str) -> tuple[subprocess.Popen, str]:
    """``python -m server.cli serve`` on a free port, once ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AIAA_STATE_DIR": state, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--config", config, "--port", str(port),
                               "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not become ready")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``): other work on the machine counts."""
    return [round(v, 2) for v in os.getloadavg()]


def serve_and_run(args, cases, state: Path, batching: tuple[int, float] | None) -> dict:
    """Start a server of ``args.model`` (with or without batching), run every level, stop it."""
    folder = state / ("batched" if batching else "plain")
    folder.mkdir()
    pool = pool_of(args.model, Path(args.config), folder, batching)
    load = load_average()
    server, base = start_server(str(pool), str(folder))
    try:
        levels = [asyncio.run(run(base, args.model, int(n), args.clicks, cases)) for n in args.clients.split(",")]
    finally:
        server.terminate()
        server.wait(30)
    return {"batching": {"max_batch": batching[0], "max_wait_ms": batching[1]} if batching else None,
            "load_average_before": load, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=MODELS[0], choices=MODELS)
    parser.add_argument("--clients", default="1,4,16,32", help="comma-separated client counts, run in turn")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per client")
    parser.add_argument("--cases", type=int, default=8, help="distinct images (clients share them round-robin)")
    parser.add_argument("--batching", default=None, help="MAX_BATCH,MAX_WAIT_MS: also run with micro-batching")
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--config", default=str(ROOT / "engine_pool.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")
    items = json.loads((DATA / "datalist.json").read_text())["validation"][: args.cases]
    rng = np.random.default_rng(0)
    cases = []
    for c in items:
        label = read_volume(DATA / c["label"]).array > 0
        if args.model == "interactive_any":  # clicks on voxels of the object, as an annotator's
            inside = np.argwhere(label)
            points = inside[rng.choice(len(inside), size=args.clicks, replace=False)].tolist()
        else:
            points = extreme_points(label).astype(int).tolist()
        cases.append(((DATA / c["image"]).read_bytes(), points))
    report: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                    "model": args.model, "clicks_per_client": args.clicks}
    if args.url:
        report["runs"] = [{"batching": "as configured", "load_average_before": load_average(),
                           "levels": [asyncio.run(run(args.url, args.model, int(n), args.clicks, cases))
                                      for n in args.clients.split(",")]}]
    else:
        batching = tuple(float(v) for v in args.batching.split(",")) if args.batching else None
        with tempfile.TemporaryDirectory() as state:
            report["runs"] = [serve_and_run(args, cases, Path(state), None)]
            if batching:
                report["runs"].append(serve_and_run(args, cases, Path(state), (int(batching[0]), batching[1])))
    report["load_average_after"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
