"""Micro-batching: concurrent calls of one model with the same input shape run as one backend call.

A :class:`MicroBatcher` wraps a network callable ``(B, C, *spatial) -> (B, ...)``. Each call waits
at most ``max_wait_ms`` (counted from the oldest waiting call) for companions of the same shape,
up to ``max_batch`` inputs; they are concatenated along the batch axis, run once, and the
outputs split back to their callers. Interactive crops are resampled to the model's fixed ROI,
so concurrent clicks on one model always share a shape.

One worker thread runs the batches, one at a time (so a backend that takes one call at a time is
respected), and exits as soon as nothing waits: an idle or replaced engine keeps no thread.

Cancellation: a waiter whose context's :data:`CANCELLED` hook answers True leaves the queue
before its batch is formed; the companions' batch runs without it. Once its batch runs, the
caller waits for it (at most one backend call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CANCELLED", "MicroBatcher"]

# Set by whoever runs the engine in a worker thread (the server's admission gate): answers whether
# the request behind the current thread was cancelled (its client went away, or it timed out).
CANCELLED: ContextVar[Callable[[], bool] | None] = ContextVar("batching_cancelled", default=None)
_CANCEL_POLL_S = 0.02


@dataclass(eq=False)  # identity: calls are told apart, never compared by their tensors
class _Call:
    inputs: torch.Tensor
    arrived: float
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return tuple(self.inputs.shape[1:]), self.inputs.dtype, self.inputs.device


class MicroBatcher:
    """A network callable that batches concurrent calls of the same input shape (see the module docstring).

    ``clock`` (seconds, monotonic) is injectable for tests; waits themselves use the real clock.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_ms: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0; got {max_batch}, {max_wait_ms}")
        self.network = network
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.clock = clock
        self.batch_sizes: list[int] = []  # sizes of the last batches run (observability, tests)
        self._pending: list[_Call] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    def submit(self, inputs: torch.Tensor) -> Future:
        """Queue one input ``(b, C, *spatial)``; the future gets its ``b`` outputs (or the network's error).

        Cancelling the future before its batch is formed takes it out of the batch.
        """
        call = _Call(torch.as_tensor(inputs), self.clock())
        with self._cond:
            self._pending.append(call)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        return call.future

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run ``inputs`` in a batch with concurrent calls; returns this call's outputs.

        Raises:
            CancelledError: the :data:`CANCELLED` hook reported the request cancelled before its batch ran.
        """
        future = self.submit(inputs)
        cancelled = CANCELLED.get()
        while True:
            try:
                return future.result(timeout=_CANCEL_POLL_S if cancelled is not None else None)
            except FutureTimeout:
                if cancelled() and future.cancel():  # type: ignore[misc]
                    with self._cond:
                        self._cond.notify_all()
                    raise CancelledError("the request was cancelled while waiting for its batch") from None

    # the worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if not batch:
                    self._worker = None
                    return
            self._run(batch)

    def _take(self) -> list[_Call]:
        """Under the lock: wait for a full batch or the oldest call's deadline; [] when nothing waits."""
        while True:
            self._pending = [c for c in self._pending if not c.future.cancelled()]
            if not self._pending:
                return []
            first = self._pending[0]
            same = [c for c in self._pending if c.key == first.key]
            wait = first.arrived + self.max_wait_s - self.clock()
            if len(same) >= self.max_batch or wait <= 0:
                taken = same[: self.max_batch]
                self._pending = [c for c in self._pending if c not in taken]
                batch = [c for c in taken if c.future.set_running_or_notify_cancel()]
                if batch:
                    return batch
                continue
            self._cond.wait(wait)

    def _run(self, batch: list[_Call]) -> None:
        sizes = [int(c.inputs.shape[0]) for c in batch]
        self.batch_sizes = (self.batch_sizes + [sum(sizes)])[-100:]
        try:
            inputs = batch[0].inputs if len(batch) == 1 else torch.cat([c.inputs for c in batch])
            outputs = torch.as_tensor(self.network(inputs))
            if outputs.shape[0] != sum(sizes):
                raise RuntimeError(f"the network returned {outputs.shape[0]} outputs for {sum(sizes)} inputs")
            parts: Any = outputs.split(sizes)
        except Exception as exc:  # noqa: BLE001 - every caller gets the error; the worker carries on
            for call in batch:
                call.future.set_exception(exc)
            return
        for call, part in zip(batch, parts):
            call.future.set_result(part)
