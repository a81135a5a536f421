"""Interaction simulation in worker processes, so a GPU trains while the CPU cores place the clicks.

A training pair of an interactive model costs a few forward passes (the simulated corrective
rounds) and some array work (error components, distance transforms, crops); the gradient step
itself is cheap on a GPU. :class:`SimulationWorkers` forks ``workers`` processes that each make
training pairs with :func:`engines.training.interactive.make_example` and a copy of the network,
which they reload whenever the trainer publishes new weights (every few seconds: the rounds
simulate a model a few seconds old, which is what they need). The processes are forked before the
trainer touches CUDA, and each picks its own device, so the network's passes run on the GPU too
when there is one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Self

import numpy as np
import torch

from engines.backends.base import select_device
from engines.backends.pytorch import saved_state_dict
from engines.errors import BackendUnavailableError, TrainingError
from engines.tasks.interaction import network_callable

__all__ = ["SimulationWorkers"]


PairMaker = Callable[[np.random.Generator], Callable[[Callable], tuple[np.ndarray, np.ndarray]]]


def _work(pair_maker: PairMaker, network_factory: Callable[[], torch.nn.Module], weights_file: str, device_name: str,
          seed: int, out: Connection, inherited: list[Connection], trainer: int, autocast: torch.dtype | None) -> None:
    for connection in inherited:  # the trainer's ends: held here, a dead trainer's pipes would never break
        connection.close()
    torch.set_num_threads(1)
    try:
        device = select_device(device_name)
        network = network_factory().to(device).eval()
    except (RuntimeError, BackendUnavailableError):  # this process cannot reach the accelerator: simulate on the CPU
        device = torch.device("cpu")
        network = network_factory().eval()
    run = network_callable(network, device, autocast)
    make_pair = pair_maker(np.random.default_rng(seed))
    loaded = None
    # A trainer killed outright (kill -9, a job runner's stop) cannot stop its workers: they stop when it is gone
    # (its end of the pipe closes, or they see it between pairs).
    while os.getppid() == trainer:
        stamp = os.stat(weights_file).st_mtime_ns
        if stamp != loaded:
            network.load_state_dict(torch.load(weights_file, map_location=device, weights_only=True))
            loaded = stamp
        x, y = make_pair(run)
        try:
            out.send((x.astype(np.float16), y.astype(np.float16)))
        except OSError:  # a broken pipe: the trainer is gone
            return


class SimulationWorkers:
    """``count`` forked processes making training pairs ``(input, target)``, buffered up to ``queue_size``.

    ``pair_maker(rng)`` gives each process its maker of pairs, ``make(network) -> (x, y)``, on its
    own random stream; ``network_factory()`` builds the (untrained) network, whose weights come
    from :meth:`publish`; ``autocast`` (e.g. ``torch.bfloat16``) is the precision its forward passes
    compute in. Call :meth:`close` when done (or use as a context manager).

    Each worker has a pipe of its own, whose only writer it is: a worker that dies, even killed
    mid-message, ends its pipe, and the next :meth:`batch` reports it (a shared queue would wait
    forever for the rest of the message).
    """

    def __init__(self, count: int, pair_maker: PairMaker, network_factory: Callable[[], torch.nn.Module], network: torch.nn.Module, scratch: str | Path,
                 device: str = "auto", seed: int = 0, queue_size: int = 256, autocast: torch.dtype | None = None) -> None:
        self.weights_file = str(Path(scratch) / "simulation_weights.pt")
        self.publish(network)
        context = mp.get_context("fork")  # the volumes are shared with the workers, not copied
        self.processes: list = []
        self.readers: list[Connection] = []
        for n in range(count):
            reader, writer = context.Pipe(duplex=False)
            self.readers.append(reader)
            process = context.Process(target=_work, name=f"simulation-{n}", daemon=True,
                                      args=(pair_maker, network_factory, self.weights_file, device, seed * 1000 + n,
                                            writer, list(self.readers), os.getpid(), autocast))
            process.start()
            writer.close()  # the worker's own: later workers must not inherit it
            self.processes.append(process)
        self.pairs: queue_module.Queue = queue_module.Queue(maxsize=queue_size)
        self.dead: list[str] = []
        self._closing = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="simulation-receiver", daemon=True)
        self._receiver.start()

    def _receive(self) -> None:
        """Move pairs from the workers' pipes into the buffer; note each worker whose pipe ends."""
        open_pipes = dict(zip(self.readers, self.processes, strict=True))
        while open_pipes and not self._closing.is_set():
            for reader in wait(list(open_pipes), timeout=1.0):
                try:
                    pair = reader.recv()
                except (EOFError, OSError):  # the worker is gone, perhaps mid-message
                    self.dead.append(open_pipes.pop(reader).name)
                    continue
                while not self._closing.is_set():
                    try:
                        self.pairs.put(pair, timeout=1.0)
                        break
                    except queue_module.Full:
                        continue

    def publish(self, network: torch.nn.Module) -> None:
        """Hand the network's current weights to the workers (atomically: a worker never reads half a file)."""
        tmp = self.weights_file + ".tmp"
        torch.save(saved_state_dict(network.state_dict(), half=False), tmp)
        os.replace(tmp, self.weights_file)

    def batch(self, size: int, timeout: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
        """``size`` pairs stacked: inputs ``(B, C, *roi)`` and targets ``(B, 1, *roi)``, float32.

        Raises :class:`TrainingError` as soon as a worker is gone, or when none delivers for ``timeout`` s.
        """
        xs, ys = [], []
        deadline = time.monotonic() + timeout
        while len(xs) < size:
            if self.dead:
                raise TrainingError(f"simulation workers stopped delivering ({', '.join(self.dead)} died)")
            try:
                x, y = self.pairs.get(timeout=1.0)
            except queue_module.Empty:
                if time.monotonic() > deadline:
                    raise TrainingError("simulation workers stopped delivering (timeout)") from None
                continue
            xs.append(x)
            ys.append(y[None])
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)

    def close(self) -> None:
        """Stop the workers and remove the weights handed to them."""
        self._closing.set()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=10)
        self._receiver.join(timeout=10)
        for reader in self.readers:
            reader.close()
        Path(self.weights_file).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
