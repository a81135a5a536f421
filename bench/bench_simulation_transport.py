"""How many training pairs a second the simulation workers can hand to the trainer, transport alone.

Usage: python bench/bench_simulation_transport.py [--workers 2] [--seconds 10] [--batch 32] [--shape 5x64x64x32]

Each worker makes the same pair over and over (no simulation: a constant array of
interactive_any's input size, its target beside it), so what is timed is the way pairs travel
from :class:`engines.training.simulation_workers.SimulationWorkers` to :meth:`batch`: float16
pickles through the workers' pipes, the receiver thread, the buffer, the float32 stack. Prints
JSON: pairs a second received, MB a second, and the machine. On a lent GPU machine the trainer
needs about 176 pairs a second (5.5 steps of 32); compare that with this figure on the same
machine, not another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.hardware import describe_device
from engines.training.simulation_workers import SimulationWorkers


def constant_maker(shape: tuple[int, ...]):
    """A pair maker whose pairs cost nothing to make: the transport is all that is timed."""

    def maker(rng: np.random.Generator):
        x = np.ones(shape, np.float32)
        y = np.ones(shape[1:], np.float32)
        return lambda run: (x, y)

    return maker


def main() -> int:
    """Run the workers for ``--seconds`` and print what arrived."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shape", default="5x64x64x32", help="one pair's input, channels first")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split("x"))
    pair_mb = (np.prod(shape) + np.prod(shape[1:])) * 2 / 1e6  # float16 on the way
    network = torch.nn.Conv3d(1, 1, 1)
    with tempfile.TemporaryDirectory() as scratch, \
            SimulationWorkers(args.workers, constant_maker(shape), lambda: torch.nn.Conv3d(1, 1, 1), network,
                              scratch, device="cpu") as workers:
        workers.batch(args.batch)  # the workers are up and the buffer primed
        received, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            x, _ = workers.batch(args.batch)
            received += len(x)
        elapsed = time.perf_counter() - start
    print(json.dumps({
        "workers": args.workers, "batch": args.batch, "shape": list(shape), "seconds": round(elapsed, 2),
        "pairs_per_s": round(received / elapsed, 1), "mb_per_s": round(received * pair_mb / elapsed, 1),
        "cpu_count": os.cpu_count(), "machine": describe_device(torch.device("cpu")),
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
