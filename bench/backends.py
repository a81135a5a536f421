"""Network latency of every runtime against PyTorch eager, with achieved GFLOP/s and parity; prints JSON.

Usage: python bench/backends.py [--configs model_configs/A.json ...] [--repeats 30]

For each model config (default: the two shipped models) and each of its networks, the input
is what the engine really feeds the network on the first validation case of the config's
datalist. Each network is converted in memory-free temporary folders to ONNX Runtime,
OpenVINO (fp32, and bf16 where the CPU runs it natively) and TorchScript, and every runtime
is timed in the same run as eager PyTorch (medians after warm-up, alternating). FLOPs are
counted by PyTorch's FlopCounterMode on the eager network; the machine's fp32 peak is the
best of several large matrix products measured by this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.backends import TorchBackend, load_artifact  # noqa: E402
from engines.backends.tensorrt import ShapeProfile  # noqa: E402
from engines.config.model import load_model_config  # noqa: E402
from engines.data.datalist import load_datalist  # noqa: E402
from engines.data.io import read_volume  # noqa: E402
from engines.export.exporter import ExportOptions, time_alternately, write_artifact  # noqa: E402
from engines.hardware import detect  # noqa: E402
from engines.tasks.registry import engine_for_type  # noqa: E402
from engines.transforms.points import simulated_params  # noqa: E402

DEFAULT_CONFIGS = ["model_configs/annotation_mri_hippocampus.json", "model_configs/segmentation_mri_hippocampus.json"]


def gemm_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The best fp32 matrix-product rate of this machine with PyTorch's BLAS (GFLOP/s)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return round(2 * size**3 / best / 1e9, 1)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def network_input(config_path: Path) -> list[torch.Tensor]:
    """What each network of the model sees on the first validation case (through the real engine)."""
    config = load_model_config(config_path)
    case = load_datalist(config_path.parent / str(config.datalist))["validation"][0]
    volume, truth = read_volume(case["image"]), read_volume(case["label"]).array
    params = simulated_params(config.type, np.rint(truth))
    seen: list[torch.Tensor] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros((x.shape[0], config.members()[0].network.args["out_channels"], *x.shape[2:]))

    engine_for_type(config.type)("bench", config, record).infer(volume, params)
    return seen


def bench_network(member, eager: TorchBackend, x: torch.Tensor, repeats: int, peak: float) -> dict:
    """Every runtime against eager for one network and input."""
    with FlopCounterMode(display=False) as counter:
        eager(x)
    gflop = counter.get_total_flops() / 1e9
    with torch.no_grad():
        expected = eager(x)
    runtimes = [("onnxruntime", "onnx", "fp32"), ("openvino", "openvino", "fp32"), ("torchscript", "torchscript", "fp32")]
    if "bf16" in detect().native_precisions("cpu"):
        runtimes.append(("openvino", "openvino", "bf16"))
    rows = {}
    eager_times = []
    with tempfile.TemporaryDirectory() as tmp:
        for runtime, fmt, precision in runtimes:
            path = write_artifact(ExportOptions(format=fmt, precision=precision), eager.module, x,
                                  ShapeProfile.build(x.shape), Path(tmp), f"{fmt}_{precision}")
            backend = load_artifact(fmt, path, torch.device("cpu"), precision)
            eager_ms, ms = time_alternately(eager, backend, x, repeats)
            eager_times.append(eager_ms)
            out = backend(x)
            agree = float(((out > 0) == (expected > 0)).float().mean()) if out.shape[1] == 1 else float(
                (out.argmax(1) == expected.argmax(1)).float().mean())
            rows[f"{runtime}_{precision}"] = {
                "latency_ms": round(ms, 2), "speedup_vs_eager": round(eager_ms / ms, 2),
                "gflops_per_s": round(gflop / (ms / 1000), 1), "fraction_of_fp32_peak": round(gflop / (ms / 1000) / peak, 3),
                "max_abs_diff": float(f"{float((out - expected).abs().max()):.3g}"), "voxels_agree": round(agree, 5)}
            backend.close()
    eager_ms = statistics.median(eager_times)
    rows["pytorch_eager_fp32"] = {"latency_ms": round(eager_ms, 2), "speedup_vs_eager": 1.0,
                                  "gflops_per_s": round(gflop / (eager_ms / 1000), 1),
                                  "fraction_of_fp32_peak": round(gflop / (eager_ms / 1000) / peak, 3)}
    return {"network": member.network.name, "input_shape": list(x.shape), "gflop": round(gflop, 2), "runtimes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    peak = gemm_peak_gflops()
    results: dict = {"hardware": detect().summary(), "fp32_gemm_peak_gflops": peak, "models": {}}
    for config_file in args.configs:
        config_path = (ROOT / config_file).resolve()
        config = load_model_config(config_path)
        x = network_input(config_path)[0]
        networks = []
        for member in config.members():
            eager = TorchBackend.from_checkpoint(config_path.parent / str(member.model_path), member, torch.device("cpu"))
            networks.append(bench_network(member, eager, x, args.repeats, peak))
        totals = {}
        for runtime in networks[0]["runtimes"]:
            totals[runtime] = round(sum(n["runtimes"][runtime]["latency_ms"] for n in networks), 2)
        eager_total = totals["pytorch_eager_fp32"]
        results["models"][config_path.stem] = {
            "networks": networks,
            "model_latency_ms": totals,
            "model_speedup_vs_eager": {k: round(eager_total / v, 2) for k, v in totals.items()},
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
