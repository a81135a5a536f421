"""Many annotators at once: each client opens its own session and clicks; prints JSON.

Usage: python bench/load_test.py [--clients 1,4,16,32] [--clicks 10] [--url http://host:port]

Without ``--url`` a real server (``python -m server.cli serve``, the repo's engine pool) is
started in its own process on a free port and stopped afterwards. Every client uploads one
real hippocampus MRI once (``PUT /session/``), then sends ``--clicks`` extreme-point clicks on
it (``POST /v1/dextr3d`` with its ``session_id``), honouring ``Retry-After`` on 503. A probe
asks ``GET /health/live`` every 100 ms throughout. Per client count: throughput (clicks/s),
click latency p50/p95 (including waits after 503), refusals (503 answers), failures (anything
else but 200), probe latency p50/p95/max.
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
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from engines.data.io import read_volume  # noqa: E402
from engines.transforms.points import extreme_points  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"
MODEL = "annotation_mri_hippocampus"


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def annotator(base: str, image: bytes, points: list, clicks: int, stats: dict) -> None:
    """One client with its own connection: a session, then ``clicks`` clicks with retries on 503."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        reply = await client.put("/session/?expiry=600", files={"image": ("image.nii.gz", image)})
        if reply.status_code != 200:
            stats["failures"].append(f"session {reply.status_code}")
            return
        session = reply.json()["session_id"]
        params = json.dumps({"points": points})
        for _ in range(clicks):
            start = time.perf_counter()
            for _attempt in range(100):
                reply = await client.post(f"/v1/dextr3d?model={MODEL}&session_id={session}&output=json",
                                          data={"params": params})
                if reply.status_code != 503:
                    break
                stats["refusals"] += 1
                await asyncio.sleep(float(reply.headers.get("retry-after", "1")))
            if reply.status_code == 200:
                stats["clicks_ms"].append((time.perf_counter() - start) * 1000)
            else:
                stats["failures"].append(f"click {reply.status_code}")
        await client.delete(f"/session/{session}")


async def probe(base: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """``GET /health/live`` every 100 ms on its own connection."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            reply = await client.get("/health/live")
            if reply.status_code == 200:
                latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.1)


async def run(base: str, clients: int, clicks: int, cases: list[tuple[bytes, list]]) -> dict:
    """One load level: ``clients`` annotators at once."""
    stats: dict = {"clicks_ms": [], "refusals": 0, "failures": []}
    probes: list[float] = []
    stop = asyncio.Event()
    probe_task = asyncio.create_task(probe(base, stop, probes))
    start = time.perf_counter()
    await asyncio.gather(*(annotator(base, *cases[n % len(cases)], clicks, stats) for n in range(clients)))
    wall = time.perf_counter() - start
    stop.set()
    await probe_task
    return {
        "clients": clients, "clicks": len(stats["clicks_ms"]), "wall_s": round(wall, 1),
        "throughput_clicks_per_s": round(len(stats["clicks_ms"]) / wall, 2),
        "click_ms_p50": percentile(stats["clicks_ms"], 50), "click_ms_p95": percentile(stats["clicks_ms"], 95),
        "refusals_503": stats["refusals"], "failures": len(stats["failures"]),
        "failure_kinds": sorted(set(stats["failures"])),
        "probe_ms_p50": percentile(probes, 50), "probe_ms_p95": percentile(probes, 95),
        "probe_ms_max": round(max(probes), 1) if probes else None, "probes": len(probes),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,4,16,32", help="comma-separated client counts, run in turn")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per client")
    parser.add_argument("--cases", type=int, default=8, help="distinct images (clients share them round-robin)")
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--config", default=str(ROOT / "engine_pool.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")
    items = json.loads((DATA / "datalist.json").read_text())["validation"][: args.cases]
    cases = [((DATA / c["image"]).read_bytes(),
              extreme_points(read_volume(DATA / c["label"]).array > 0).astype(int).tolist()) for c in items]
    with tempfile.TemporaryDirectory() as state:
        server, base = (None, args.url) if args.url else start_server(args.config, state)
        try:
            levels = [asyncio.run(run(base, int(n), args.clicks, cases)) for n in args.clients.split(",")]
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
    print(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                      "model": MODEL, "clicks_per_client": args.clicks, "levels": levels}, indent=2))


if __name__ == "__main__":
    main()
