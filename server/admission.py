"""Runs blocking model work off the event loop, with a per-model concurrency limit.

At most ``max_running`` inferences of one model run at once and ``max_queued``
wait; beyond that the request is refused with 503 and ``Retry-After`` instead of
piling up memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from anyio import to_thread

from server.errors import Busy

__all__ = ["ModelGate", "GateKeeper"]

T = TypeVar("T")


class ModelGate:
    """Concurrency limit of one model."""

    def __init__(self, name: str, max_running: int, max_queued: int) -> None:
        self.name = name
        self.capacity = max_running + max_queued
        self.in_flight = 0
        self._semaphore = asyncio.Semaphore(max_running)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a worker thread once a slot is free."""
        if self.in_flight >= self.capacity:
            raise Busy(f"model '{self.name}' is busy ({self.in_flight} requests in flight); retry shortly",
                       headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            async with self._semaphore:
                return await to_thread.run_sync(func, *args)
        finally:
            self.in_flight -= 1


class GateKeeper:
    """One :class:`ModelGate` per model name, created on first use."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._gates: dict[str, ModelGate] = {}

    def __getitem__(self, name: str) -> ModelGate:
        if name not in self._gates:
            self._gates[name] = ModelGate(name, self.max_running, self.max_queued)
        return self._gates[name]
