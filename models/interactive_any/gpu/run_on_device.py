"""Train interactive_any on a lent GPU machine from a sources pack, then time the protocol's steps there.

Runs on a machine that has PyTorch and a GPU but neither the datasets nor the server's other
packages: it needs the repository's ``engines`` package, the sources pack that
``aiaa pack-sources`` wrote (``.device/interactive_any_pack.npz``) and the wheels of MONAI and
pydantic. SimpleITK (image files, not read here: the volumes come from the pack) is replaced by an
empty module when it is missing. Writes to ``$OUT``: ``last_fp16.pt`` (the last weights, fp16,
refreshed at every checkpoint so a run cut short still returns weights), ``metrics.json``,
``latency.json`` (ms per protocol step on this device) and prints the training log.

    python3 models/interactive_any/gpu/run_on_device.py [--minutes 7] [--workers 14] [--device cuda] [--init-weights W]
        [--model-config models/interactive_any/experiments/interactive_any_roi96.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))
if importlib.util.find_spec("SimpleITK") is None:
    stub = Path(tempfile.mkdtemp()) / "SimpleITK.py"
    stub.write_text('"""Stand-in: this run reads no image files."""\n')
    sys.path.append(str(stub.parent))

import numpy as np
import torch

from engines.backends.pytorch import load_state_dict
from engines.config.model import load_model_config
from engines.evaluation.interactive import interactive_settings, run_protocol
from engines.inferers import flip_averaged
from engines.networks import build_network
from engines.tasks.interaction import network_callable
from engines.training.interactive import LAST_WEIGHTS, train_interactive
from engines.training.sources import load_sources_pack

MODEL_CONFIG = REPO / "model_configs" / "interactive_any.json"


def save_last(run_dir: Path, out: Path) -> dict:
    """The last checkpoint's weights (fp16, the trainer's ``model_last.pt``) and metrics into ``out``."""
    shutil.copyfile(run_dir / LAST_WEIGHTS, out / "last_fp16.pt")
    shutil.copyfile(run_dir / "metrics.json", out / "metrics.json")
    return json.loads((out / "metrics.json").read_text())


def latency(weights: Path, pack: Path, device: torch.device, objects: int = 12,
            model_config: Path = MODEL_CONFIG) -> dict:
    """The protocol (2D box + 5 clicks) on the first object of each dataset/structure in the pack: ms per step."""
    config = load_model_config(model_config)
    network = build_network(config.network)
    network.load_state_dict(load_state_dict(weights))
    run = network_callable(flip_averaged(network.to(device).eval(), config.tta_flips), device)
    first = {}
    for source in load_sources_pack(pack):
        for name in source.structures:
            first.setdefault((source.dataset, name), source)
    rows = []
    for (dataset, name), source in sorted(first.items())[:objects]:
        steps = run_protocol(run, source.image, source.spacing, source.mask(name), tuple(config.roi), variant="box",
                             n_clicks=5, interactive=interactive_settings(config))
        rows.append({"object": f"{dataset}/{name}", "ms": [round(s[3], 1) for s in steps],
                     "dice": [round(s[1], 3) for s in steps]})
    warm = [ms for row in rows for ms in row["ms"][1:]]  # each object's first step pays for its first crop
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "median_ms": float(np.median(warm)), "p90_ms": float(np.percentile(warm, 90)), "objects": rows}


def main() -> int:
    """Train, then measure; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-config", default=str(HERE / "train_config_gpu.json"))
    parser.add_argument("--model-config", default=str(MODEL_CONFIG),
                        help="model config to train (e.g. experiments/interactive_any_roi96.json: the same "
                             "network at a 96x96x32 ROI)")
    parser.add_argument("--minutes", type=float, default=None, help="training minutes (schedule and budget)")
    parser.add_argument("--workers", type=int, default=None, help="simulation processes")
    parser.add_argument("--device", default=None, help="cuda or cpu (a dry run here)")
    parser.add_argument("--checkpoint-minutes", type=float, default=None)
    parser.add_argument("--init-weights", default=None,
                        help="start from these weights (e.g. an earlier run's last_fp16.pt) instead of the config's")
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", "runs/device_out"))
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.train_config).resolve().parent
    cfg = json.loads(Path(args.train_config).read_text())
    for key, value in (("max_minutes", args.minutes), ("schedule_minutes", args.minutes), ("workers", args.workers),
                       ("device", args.device), ("checkpoint_minutes", args.checkpoint_minutes)):
        if value is not None:
            cfg[key] = value
    if args.init_weights is not None:
        cfg["init_weights"] = str(Path(args.init_weights).resolve())  # absolute: joined to the config's folder as is
    run_config = base / "train_config_run.json"  # beside the original: its relative paths hold
    run_config.write_text(json.dumps(cfg, indent=1))
    run_dir = Path(tempfile.mkdtemp()) / "run"
    start = time.time()

    def progress(message: str) -> None:
        print(f"[{time.time() - start:6.1f} s] {message}", flush=True)
        if message.startswith("{"):  # a checkpoint: hand its weights back now
            save_last(run_dir, out)

    try:
        train_interactive(Path(args.model_config), run_config, None, run_dir, progress=progress)
    finally:
        run_config.unlink(missing_ok=True)
    metrics = save_last(run_dir, out)
    print(f"steps {metrics['steps']}, samples {metrics['samples']}, {metrics['hardware']}", flush=True)
    device = torch.device("cuda" if cfg["device"] != "cpu" and torch.cuda.is_available() else "cpu")
    report = latency(out / "last_fp16.pt", base / cfg["sources_pack"], device, model_config=Path(args.model_config))
    (out / "latency.json").write_text(json.dumps(report, indent=1))
    print(f"latency on {report['device']}: median {report['median_ms']:.1f} ms, p90 {report['p90_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
