"""Per-click latency of the served models, end to end over HTTP and per stage; prints JSON.

Usage: python bench/bench_inference.py [--cases 10] [--concurrency 4] [--config engine_pool.json] [--no-baseline]

Runs a real uvicorn server in-process on a free port with the given engine pool and
sends real hippocampus validation volumes from ../shared/data (full upload per click,
and with a session). Unless ``--no-baseline``, the same pool is first measured with every
model forced to PyTorch eager (``model_format: pytorch``), so the optimized engines and
their baseline are compared side by side in one run. Figures are wall-clock medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import serve_in_thread  # noqa: E402

from engines.data.io import read_volume  # noqa: E402
from engines.transforms.points import extreme_points  # noqa: E402
from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--config", default=str(ROOT / "engine_pool.json"))
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="measure only the pool as configured")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")
    cases = json.loads((DATA / "datalist.json").read_text())["validation"][: args.cases]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        pools = {"eager": eager_pool(Path(args.config), Path(tmp))} if args.baseline else {}
        pools["served"] = Path(args.config)
        for label, pool in pools.items():
            with serve_in_thread(create_app(Settings(config=str(pool)))) as port:
                results[label] = measure(f"http://127.0.0.1:{port}", cases, args.concurrency)
    if args.baseline:
        results["speedup_served_vs_eager"] = {
            api: {key: round(results["eager"][api][key] / results["served"][api][key], 2)
                  for key in ("end_to_end_ms_median", "with_session_ms_median")}
            | {"network": round(results["eager"][api]["stages_ms_median"]["infer"]
                                / results["served"][api]["stages_ms_median"]["infer"], 2)}
            for api in ("dextr3d", "segmentation")}
    print(json.dumps(results, indent=2))


def eager_pool(pool_path: Path, folder: Path) -> Path:
    """A copy of the pool whose model configs all serve their PyTorch checkpoints (paths made absolute)."""
    entries = json.loads(pool_path.read_text())
    for entry in entries:
        config_path = (pool_path.parent / entry["config_file"]).resolve()
        config = json.loads(config_path.read_text())
        for holder in [config, *config.get("ensemble", [])]:
            if "model_path" in holder:
                holder["model_path"] = str((config_path.parent / holder["model_path"]).resolve())
        config.update(model_format="pytorch")
        config.pop("exports", None)
        config.pop("datalist", None)
        entry["config_file"] = str(folder / config_path.name)
        (folder / config_path.name).write_text(json.dumps(config))
    (folder / "engine_pool.json").write_text(json.dumps(entries))
    return folder / "engine_pool.json"


def measure(base: str, cases: list[dict], concurrency: int) -> dict:
    """Latency and throughput of both models against the server at ``base``."""
    results: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "cases": len(cases),
    }
    loaded = [((DATA / c["image"]).read_bytes(),
               extreme_points(read_volume(DATA / c["label"]).array > 0).astype(int).tolist()) for c in cases]
    with httpx.Client(base_url=base, timeout=120) as client:
        results["backends"] = {name: model.get("backend") for name, model in client.get("/health").json()["models"].items()}
        for api, model in (("dextr3d", "annotation_mri_hippocampus"), ("segmentation", "segmentation_mri_hippocampus")):
            wall, wall_session, stages = [], [], {}
            requests = [(image, {"points": points} if api == "dextr3d" else {}) for image, points in loaded]
            for image, params in requests:
                client.post(f"/v1/{api}?model={model}", data={"params": json.dumps(params)},
                            files={"image": ("v.nii.gz", image)})  # warm
                start = time.perf_counter()
                reply = client.post(f"/v1/{api}?model={model}&output=json", data={"params": json.dumps(params)},
                                    files={"image": ("v.nii.gz", image)})
                wall.append((time.perf_counter() - start) * 1000)
                for stage, ms in reply.json()["timings"].items():
                    stages.setdefault(stage, []).append(ms)
                sid = client.put("/session/", files={"image": ("v.nii.gz", image)}).json()["session_id"]
                start = time.perf_counter()
                client.post(f"/v1/{api}?model={model}&session_id={sid}", data={"params": json.dumps(params)})
                wall_session.append((time.perf_counter() - start) * 1000)
                client.delete(f"/session/{sid}")

            def one(req):
                image, params = req
                t = time.perf_counter()
                client.post(f"/v1/{api}?model={model}", data={"params": json.dumps(params)},
                            files={"image": ("v.nii.gz", image)})
                return time.perf_counter() - t

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                concurrent = list(pool.map(one, requests * 2))
            elapsed = time.perf_counter() - start
            stage_medians = {k: median(v) for k, v in stages.items()}
            results[api] = {
                "model": model,
                "end_to_end_ms_median": median(wall),
                "end_to_end_ms_p90": round(float(np.percentile(wall, 90)), 2),
                "with_session_ms_median": median(wall_session),
                "stages_ms_median": stage_medians,
                "network_share_of_end_to_end": round(stage_medians["infer"] / median(wall), 3),
                "concurrent_clients": concurrency,
                "throughput_per_s": round(len(concurrent) / elapsed, 2),
                "concurrent_latency_ms_median": median([c * 1000 for c in concurrent]),
            }
    return results


if __name__ == "__main__":
    main()
