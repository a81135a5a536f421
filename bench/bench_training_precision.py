"""What bf16 autocast buys interactive training on this machine: simulation and gradient steps, fp32 against bf16.

Usage: python bench/bench_training_precision.py [--config model_configs/interactive_any.json]
       [--train-config models/interactive_any/train_config_restart8.json] [--cases 2] [--pairs 24] [--steps 6]

With the shipped weights and a few real training volumes of each dataset (``--cases`` per datalist),
it makes the same ``--pairs`` training pairs (``make_example``: first prompt, the simulated
corrective rounds through ``predict_step``, the final crop) with the network's passes in fp32 and
under bf16 autocast, then times ``--steps`` gradient steps (batch of the train config, Dice + BCE,
AdamW) both ways, on one thread each, interleaved (fp32, bf16, fp32, bf16; the faster of each pair
of rounds is kept). It also runs the shipped network on every pair's input both ways and reports how
far the bf16 masks are from the fp32 ones (Dice of ``logits > 0``). Prints JSON. Compare timings
only within one run: other CPUs (without AVX512_BF16 or AMX) gain little or lose.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.backends.pytorch import load_state_dict
from engines.config.model import load_model_config
from engines.evaluation.interactive import interactive_settings
from engines.evaluation.scoring import binary_dice
from engines.hardware import describe_device
from engines.networks import build_network
from engines.tasks.interaction import network_callable
from engines.training.interactive import (
    Sampler,
    gradient_step,
    load_interactive_train_config,
    make_example,
    training_datalists,
)
from engines.training.sources import load_sources

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def make_pairs(network: torch.nn.Module, sampler_args: tuple, cfg, roi, settings, count: int,
               autocast: torch.dtype | None) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """``count`` pairs from a fixed random stream, and the milliseconds a pair took."""
    rng = np.random.default_rng(0)
    sampler = Sampler(*sampler_args, rng, cfg.component_probability, cfg.min_object_voxels)
    run = network_callable(network, "cpu", autocast)
    start = time.perf_counter()
    pairs = []
    for _ in range(count):
        source, _, truth = sampler.sample()
        x, y, _ = make_example(run, source, truth, rng, roi, settings, cfg.first_prompts, cfg.max_rounds)
        pairs.append((x, y))
    return pairs, (time.perf_counter() - start) / count * 1000


def time_steps(network: torch.nn.Module, pairs, batch: int, steps: int, autocast: torch.dtype | None) -> float:
    """Milliseconds per gradient step of ``batch`` pairs, as training takes it."""
    network = copy.deepcopy(network)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    loss_fn = DiceCELoss(sigmoid=True)
    chunks = [[pairs[(n * batch + k) % len(pairs)] for k in range(batch)] for n in range(steps + 1)]
    batches = [(torch.from_numpy(np.stack([p[0] for p in chunk])), torch.from_numpy(np.stack([p[1][None] for p in chunk])))
               for chunk in chunks]  # stacked before the clock starts: only the steps are timed
    for n, (x, y) in enumerate(batches):
        if n == 1:  # the first step warms up the allocator and oneDNN's kernels
            start = time.perf_counter()
        gradient_step(network, optimizer, loss_fn, x, y, autocast)
    return (time.perf_counter() - start) / steps * 1000


def mask_agreement(network: torch.nn.Module, pairs) -> dict:
    """How far the network's bf16 masks are from its fp32 masks on the pairs' inputs."""
    plain, bf16 = network_callable(network, "cpu"), network_callable(network, "cpu", torch.bfloat16)
    dices, diffs = [], []
    for x, _ in pairs:
        a, b = plain(x), bf16(x)
        dice = binary_dice(a > 0, b > 0)
        dices.append(1.0 if math.isnan(dice) else dice)  # both empty: they agree
        diffs.append(float(np.abs(a - b).max()))
    return {"mask_dice_mean": round(float(np.mean(dices)), 4), "mask_dice_min": round(float(np.min(dices)), 4),
            "max_abs_logit_difference": round(float(np.max(diffs)), 3)}


def main() -> None:
    """Parse the arguments, time both precisions, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="model_configs/interactive_any.json")
    parser.add_argument("--train-config", default="models/interactive_any/train_config_restart8.json")
    parser.add_argument("--cases", type=int, default=2, help="training volumes per datalist")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = load_model_config(args.config)
    cfg = load_interactive_train_config(args.train_config)
    lists, weights = training_datalists(cfg, Path(args.train_config).parent)
    sources = load_sources(lists, cfg.min_object_voxels, args.cases, lambda message: None)
    network = build_network(config.network)
    network.load_state_dict(load_state_dict(Path(args.config).parent / config.model_path))
    network.eval()
    roi, settings = tuple(config.roi), interactive_settings(config)

    pair_ms: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    step_ms: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    pairs = []
    for _ in range(2):
        for name, autocast in PRECISIONS.items():
            pairs, ms = make_pairs(network, (sources, weights), cfg, roi, settings, args.pairs, autocast)
            pair_ms[name].append(ms)
            step_ms[name].append(time_steps(network, pairs, cfg.batch_size, args.steps, autocast))
    best_pair = {name: min(v) for name, v in pair_ms.items()}
    best_step = {name: min(v) for name, v in step_ms.items()}
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    print(json.dumps({
        "config": args.config, "train_config": args.train_config, "volumes": len(sources), "pairs": args.pairs,
        "steps": args.steps, "batch_size": cfg.batch_size, "max_rounds": cfg.max_rounds,
        "hardware": describe_device(torch.device("cpu")), "torch": torch.__version__,
        "cpu_bf16_flags": sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16")}),
        "ms_per_pair": {k: round(v, 1) for k, v in best_pair.items()},
        "ms_per_step": {k: round(v, 1) for k, v in best_step.items()},
        "speedup_pair": round(best_pair["fp32"] / best_pair["bf16"], 2),
        "speedup_step": round(best_step["fp32"] / best_step["bf16"], 2),
        "rounds_ms": {"pair": pair_ms, "step": step_ms},
        **mask_agreement(network, pairs),
    }, indent=2))


if __name__ == "__main__":
    main()
