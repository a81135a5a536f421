"""Interaction simulation in worker processes: pairs arrive from the workers, which follow the published weights."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, deepgrow_config, phantom_datalist

from engines.errors import TrainingError
from engines.training.interactive import train_interactive
from engines.training.simulation_workers import SimulationWorkers


def tiny_network() -> torch.nn.Module:
    return torch.nn.Conv3d(1, 1, 1, bias=False)


def pair_maker(rng: np.random.Generator):
    """Pairs whose target is what the worker's network makes of a constant input: it shows the weights it used."""

    def make(run):
        x = np.ones((1, 2, 2, 2), np.float32)
        return x, run(x)

    return make


def test_pairs_come_from_the_workers_and_follow_the_published_weights(tmp_path):
    network = tiny_network()
    with torch.no_grad():
        network.weight.fill_(2.0)
    with SimulationWorkers(2, pair_maker, tiny_network, network, tmp_path, device="cpu", queue_size=4) as workers:
        x, y = workers.batch(3)
        assert x.shape == (3, 1, 2, 2, 2) and y.shape == (3, 1, 2, 2, 2) and x.dtype == np.float32
        assert np.allclose(y, 2.0)
        with torch.no_grad():
            network.weight.fill_(-3.0)
        workers.publish(network)
        for _ in range(500):  # pairs made before the workers saw the new weights drain first
            _, y = workers.batch(1)
            if np.allclose(y, -3.0):
                break
        assert np.allclose(y, -3.0)
    assert not any(p.is_alive() for p in workers.processes)
    assert not Path(workers.weights_file).exists()  # nothing left in the run's folder


def broken_maker(rng):
    def make(run):
        raise ValueError("broken simulation")

    return make


def test_a_dead_worker_is_reported_not_waited_for(tmp_path):
    with (SimulationWorkers(1, broken_maker, tiny_network, tiny_network(), tmp_path, device="cpu") as workers,
          pytest.raises(TrainingError, match="simulation-0")):
        workers.batch(1, timeout=60)


def full_size_maker(rng):
    """Pairs the size of interactive_any's (5 × 64 × 64 × 32): each is many pipe buffers long."""

    def make(run):
        return np.ones((5, 64, 64, 32), np.float32), np.ones((64, 64, 32), np.float32)

    return make


def test_a_worker_killed_mid_message_is_reported_not_waited_for(tmp_path):
    """kill -9 (the OOM killer) lands while a worker is writing a pair: the trainer hears of it, it does not hang."""
    with SimulationWorkers(1, full_size_maker, tiny_network, tiny_network(), tmp_path, device="cpu",
                           queue_size=2) as workers:
        workers.batch(1)
        time.sleep(1.0)  # the buffer is full, so the worker is blocked half-way through writing its next pair
        os.kill(workers.processes[0].pid, signal.SIGKILL)
        outcome: list = []

        def take() -> None:
            try:
                workers.batch(50, timeout=30)
                outcome.append("returned")
            except TrainingError as error:
                outcome.append(str(error))

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        taker.join(60)
        assert outcome and "simulation-0 died" in outcome[0]


TRAINER_KILLED_OUTRIGHT = """
import os, sys, time
import numpy as np, torch
from engines.training.simulation_workers import SimulationWorkers

shape = tuple(int(n) for n in sys.argv[2].split("x"))

def maker(rng):
    def make(run):
        x = np.ones((1, *shape), np.float32)
        return x, run(x)
    return make

workers = SimulationWorkers(2, maker, lambda: torch.nn.Conv3d(1, 1, 1), torch.nn.Conv3d(1, 1, 1), sys.argv[1],
                            device="cpu", queue_size=2)
workers.batch(1)
time.sleep(1.0)  # the buffer fills: large pairs leave the workers half-way through writing the next one
print(" ".join(str(p.pid) for p in workers.processes), flush=True)
os._exit(0)  # as kill -9 would: no close(), no finally
"""


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()  # a zombie has exited
    except OSError:
        return False


@pytest.mark.parametrize("shape", ["2x2x2", "64x64x32"], ids=["small pairs", "full-size pairs"])
def test_workers_stop_when_the_trainer_is_killed_outright(tmp_path, shape):
    done = subprocess.run([sys.executable, "-c", TRAINER_KILLED_OUTRIGHT, str(tmp_path), shape], check=False,
                          capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2, done.stderr
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_running(pid) for pid in pids)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interactive_training_with_simulation_workers(tmp_path, precision):
    config = deepgrow_config(tmp_path)
    datalist = phantom_datalist(tmp_path / "data")
    (tmp_path / "train.json").write_text(json.dumps({
        "interactive": True, "batch_size": 2, "max_steps": 3, "max_rounds": 2, "num_threads": 1, "workers": 2,
        "min_object_voxels": 5, "val_objects_per_dataset": 1, "val_clicks": 1, "weights_sync_seconds": 0.01,
        "datasets": [{"datalist": str(datalist)}], "precision": precision}))
    metrics = train_interactive(config, tmp_path / "train.json", None, tmp_path / "run", progress=lambda m: None,
                                device="cpu")
    assert metrics["steps"] == 3 and metrics["samples"] == 6
    assert metrics["train_config"]["precision"] == precision
    assert all(math.isfinite(entry["loss"]) for entry in metrics["history"] if entry["loss"] is not None)
    assert metrics["hardware"].endswith("2 simulation workers")
    assert "phantom_final" in metrics["history"][-1]
    assert (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_interactive_training_on_cuda_with_workers_simulating_on_the_gpu_too(tmp_path):
    config = deepgrow_config(tmp_path)
    datalist = phantom_datalist(tmp_path / "data")
    (tmp_path / "train.json").write_text(json.dumps({
        "interactive": True, "batch_size": 4, "max_steps": 3, "max_rounds": 2, "workers": 2, "device": "cuda",
        "min_object_voxels": 5, "val_objects_per_dataset": 1, "val_clicks": 1,
        "datasets": [{"datalist": str(datalist)}]}))
    metrics = train_interactive(config, tmp_path / "train.json", None, tmp_path / "run", progress=lambda m: None)
    assert metrics["steps"] == 3 and metrics["hardware"].startswith(torch.cuda.get_device_name(0))
    state = torch.load(tmp_path / "run" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert all(v.device.type == "cpu" for v in state["network"].values())  # loads anywhere
