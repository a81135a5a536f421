"""Runs blocking model work off the event loop, with a per-model concurrency limit.

At most ``max_running`` inferences of one model run at once and ``max_queued``
wait; beyond that the request is refused with 503 and ``Retry-After`` instead of
piling up memory. A request is admitted (:meth:`ModelGate.admit`) before its body is read
and decoded, so a refusal costs the server nothing. A backend that takes fewer calls at once
(``max_concurrency``, e.g. a CUDA graph with one static output buffer) lowers the running limit.

A model whose network batches concurrent calls (:class:`engines.serving.batching.MicroBatcher`)
gets at least ``max_batch`` running slots, or no batch could ever fill; the batcher itself makes one
backend call at a time. A running call waits in the batcher at most its ``max_wait_ms``, and a
request cancelled meanwhile (client gone, time limit) leaves the batch at once, freeing its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from anyio import CapacityLimiter, from_thread, get_cancelled_exc_class, to_thread
from anyio.lowlevel import checkpoint

from engines.backends.base import max_concurrency
from engines.serving.batching import CANCELLED
from server.errors import Busy

__all__ = ["GateKeeper", "ModelGate"]

T = TypeVar("T")


class ModelGate:
    """Concurrency limit of one model."""

    def __init__(self, name: str, max_running: int, max_queued: int) -> None:
        self.name = name
        self.max_running = max_running
        self.capacity = max_running + max_queued
        self.in_flight = 0
        self._semaphore = asyncio.Semaphore(max_running)
        # Its own worker threads: model calls never wait behind uploads being decoded (the default pool),
        # and a batch can always fill.
        self._threads = CapacityLimiter(max_running)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[ModelGate]:
        """Hold a place among the requests in flight, or refuse at once (503) when there is none.

        Enter it before reading the request's body: a refused request is never read nor decoded.

        Raises:
            Busy: ``max_running + max_queued`` requests are in flight already.
        """
        if self.in_flight >= self.capacity:
            raise Busy(f"model '{self.name}' is busy ({self.in_flight} requests in flight); retry shortly",
                       headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Inside :meth:`admit`: run ``func(*args)`` in a worker thread once a running slot is free."""
        async with self._semaphore:
            try:
                return await to_thread.run_sync(_cancellable, get_cancelled_exc_class(), func, *args,
                                                limiter=self._threads)
            except Exception:
                await checkpoint()  # a cancelled request ends cancelled, whatever its thread raised on the way out
                raise

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Admit, then run ``func(*args)`` in a worker thread once a slot is free."""
        async with self.admit():
            return await self.call(func, *args)


class GateKeeper:
    """One :class:`ModelGate` per model name, created on first use."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._gates: dict[str, ModelGate] = {}

    def __getitem__(self, name: str) -> ModelGate:
        """The gate a model has now (created with the default limits on first use); never replaces one."""
        gate = self._gates.get(name)
        return gate if gate is not None else self.gate(name)

    def for_engine(self, engine: Any) -> ModelGate:
        """The gate of a loaded engine: its running slots capped by its backend's ``max_concurrency``,
        or, when its network batches concurrent calls, at least a full batch of them."""
        batch = getattr(getattr(engine, "network", None), "max_batch", None)
        if batch:
            return self.gate(engine.name, running=max(self.max_running, int(batch)))
        return self.gate(engine.name, max_concurrency(engine.backend))

    def gate(self, name: str, backend_limit: int | None = None, running: int | None = None) -> ModelGate:
        """The gate of a model; ``backend_limit`` (its backend's ``max_concurrency``) caps the running slots,
        ``running`` sets them outright.

        A model whose limit changes (a new version) gets a new gate with the new limit.
        """
        if running is None:
            running = min(self.max_running, backend_limit) if backend_limit else self.max_running
        gate = self._gates.get(name)
        if gate is None or gate.max_running != running:
            gate = self._gates[name] = ModelGate(name, running, self.max_queued)
        return gate


def _cancellable(cancelled_exc: type[BaseException], func: Callable[..., T], *args: Any) -> T:
    """In a worker thread: run ``func`` with a hook telling the engine whether its request was cancelled."""

    def cancelled() -> bool:
        try:
            from_thread.check_cancelled()
        except cancelled_exc:
            return True
        return False

    token = CANCELLED.set(cancelled)
    try:
        return func(*args)
    finally:
        CANCELLED.reset(token)
