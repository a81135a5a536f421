"""Dice before and after a real fine-tune of the fast extreme-point UNet; prints JSON.

Usage: python bench/finetune_hippocampus.py dice [--base-epochs 16] [--finetune-epochs 8]
       python bench/finetune_hippocampus.py latency --server URL --token T [--clicks 20]

``dice``: trains ``model_configs/annotation_mri_hippocampus_fast.json``'s network from scratch on
training cases 0..49 (set A), fine-tunes it on cases 50..99 (set B) from A's weights, and scores
both on the whole validation split (30 cases, exact extreme points, through the real engine).
Augmentations are those of the shipped network (its train_config.json), one CPU thread.

``latency``: times dextr3d clicks (one validation case, through the HTTP API) on an idle server,
then while a fine-tune job submitted through ``POST /admin/jobs`` runs (the job is cancelled after),
then idle again; the 1-minute load average is recorded around each phase (other work on the machine
shows there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"
CONFIG = ROOT / "model_configs" / "annotation_mri_hippocampus_fast.json"
SHIPPED_TRAIN = ROOT / "models" / "annotation_mri_hippocampus" / "unet_snapshot2" / "train_config.json"


def _datalist(out: Path, name: str, training: list, validation: list) -> Path:
    def absolute(items):
        return [{k: str(DATA / v) for k, v in item.items()} for item in items]

    path = out / f"{name}.json"
    path.write_text(json.dumps({"training": absolute(training), "validation": absolute(validation)}))
    return path


def dice(args: argparse.Namespace) -> dict:
    from engines.training.trainer import train

    out = ROOT / "runs" / "bench_finetune"
    out.mkdir(parents=True, exist_ok=True)
    cases = json.loads((DATA / "datalist.json").read_text())
    set_a = _datalist(out, "set_a", cases["training"][:50], cases["validation"])
    set_b = _datalist(out, "set_b", cases["training"][50:100], cases["validation"])
    shipped = json.loads(SHIPPED_TRAIN.read_text())
    common = {k: shipped[k] for k in ("augmentations", "augmentations_last", "augment_before", "weight_decay",
                                      "batch_size")}
    base_cfg = out / "train_base.json"
    base_cfg.write_text(json.dumps({**common, "epochs": args.base_epochs, "val_interval": args.base_epochs,
                                    "learning_rate": 1e-3, "num_threads": 1, "seed": 0}))
    tuned_cfg = out / "train_finetune.json"
    tuned_cfg.write_text(json.dumps({**common, "epochs": args.finetune_epochs, "val_interval": args.finetune_epochs,
                                     "learning_rate": 3e-4, "num_threads": 1, "seed": 1,
                                     "init_weights": "base/model.pt"}))
    quiet = lambda _: None  # noqa: E731
    base = train(CONFIG, set_a, base_cfg, out / "base", device="cpu", progress=quiet)
    tuned = train(CONFIG, set_b, tuned_cfg, out / "finetuned", device="cpu", progress=quiet)
    return {
        "model_config": str(CONFIG.relative_to(ROOT)),
        "validation_cases": base["validation_cases"],
        "hardware": base["hardware"],
        "base": {"train_cases": "training[0:50]", "epochs": args.base_epochs, "wall_time_s": base["wall_time_s"],
                 "val_dice": base["final"]["val_mean_dice"]},
        "finetuned": {"train_cases": "training[50:100]", "epochs": args.finetune_epochs, "from": "base",
                      "wall_time_s": tuned["wall_time_s"], "val_dice": tuned["final"]["val_mean_dice"]},
    }


def latency(args: argparse.Namespace) -> dict:
    import httpx
    import numpy as np

    from engines.data.io import read_volume
    from engines.transforms.points import extreme_points

    case = json.loads((DATA / "datalist.json").read_text())["validation"][0]
    label = read_volume(DATA / case["label"]).array > 0
    points = extreme_points(label).astype(int).tolist()
    image = (DATA / case["image"]).read_bytes()
    headers = {"Authorization": f"Bearer {args.token}"}
    client = httpx.Client(base_url=args.server, timeout=120)

    def click() -> float:
        start = time.perf_counter()
        reply = client.post("/v1/dextr3d", params={"model": args.model, "output": "json"},
                            files={"file": ("image.nii.gz", image)}, data={"params": json.dumps({"points": points})})
        reply.raise_for_status()
        return (time.perf_counter() - start) * 1000

    def stats(values: list[float]) -> dict:
        return {"n": len(values), "median_ms": round(statistics.median(values), 1),
                "p90_ms": round(float(np.percentile(values, 90)), 1), "max_ms": round(max(values), 1)}

    def phase(clicks: int, while_running: str | None = None) -> dict:
        load = os.getloadavg()[0]
        times = []
        while len(times) < clicks:
            if while_running and client.get(f"/admin/jobs/{while_running}", headers=headers).json()["state"] != "running":
                break
            times.append(click())
        return {**stats(times), "load_avg_1min_before": round(load, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2)}

    click()  # warm
    idle = phase(args.clicks)
    job = client.post("/admin/jobs", headers=headers, json={
        "kind": "finetune", "model": args.model, "datalist": args.datalist,
        "params": {"epochs": 1, "val_interval": 1, "max_train_cases": 40, "max_val_cases": 2, "deploy": False}})
    job.raise_for_status()
    job_id = job.json()["job_id"]
    while client.get(f"/admin/jobs/{job_id}", headers=headers).json()["state"] == "queued":
        time.sleep(0.2)
    time.sleep(8)  # past the worker's start-up (imports), into training
    busy = phase(args.clicks, while_running=job_id)
    state = client.get(f"/admin/jobs/{job_id}", headers=headers).json()["state"]
    client.delete(f"/admin/jobs/{job_id}", headers=headers)
    while client.get(f"/admin/jobs/{job_id}", headers=headers).json()["state"] == "running":
        time.sleep(0.5)
    after = phase(args.clicks)
    return {"model": args.model, "case": case["image"], "cpu_cores": os.cpu_count(), "idle": idle,
            "during_finetune": busy, "idle_after": after, "job_state_while_measuring": state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    d = sub.add_parser("dice")
    d.add_argument("--base-epochs", type=int, default=16)
    d.add_argument("--finetune-epochs", type=int, default=8)
    lat = sub.add_parser("latency")
    lat.add_argument("--server", default="http://127.0.0.1:5000")
    lat.add_argument("--token", required=True)
    lat.add_argument("--model", default="annotation_mri_hippocampus")
    lat.add_argument("--datalist", required=True, help="a datalist inside the server's AIAA_DATA_ROOTS")
    lat.add_argument("--clicks", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(dice(args) if args.part == "dice" else latency(args), indent=2))


if __name__ == "__main__":
    main()
