"""Leases: one per connected viewer, as nnInteractive's server hands them out.

``POST /claim`` issues a token that rides on every later request in ``X-Lease-Token``. A lease is
dropped when its viewer stops doing anything for ``idle_timeout_s`` (only real actions count) or stops
showing any sign of life, heartbeats included, for ``liveness_timeout_s``; a request with a dropped or
unknown token gets 410, which the client raises as ``SessionExpiredError``. At ``max_leases`` a claim
gets 503 (``ServerAtCapacityError``). Expiry is checked whenever the registry is used, against an
injectable clock, so no reaper thread is needed. A dropped lease is handed to ``on_drop`` (the door
deletes its image's session there).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.errors import ApiError, Busy
from server.protocols.nninteractive.state import LeaseState

__all__ = ["DoorSettings", "Lease", "LeaseGone", "LeaseRegistry"]


class DoorSettings(BaseSettings):
    """Limits of the nnInteractive door (environment variables ``AIAA_NNINTERACTIVE_*``)."""

    model_config = SettingsConfigDict(env_prefix="AIAA_NNINTERACTIVE_", extra="forbid")

    max_leases: int = Field(8, ge=1, description="viewers connected at once; one more gets 503")
    idle_timeout_s: float = Field(600.0, gt=0, description="a lease without any real action this long is dropped")
    liveness_timeout_s: float = Field(60.0, gt=0, description="a lease without any request this long is dropped")
    api_key: SecretStr | None = Field(None, description="bearer key every route but /healthz requires (unset: none)")


class LeaseGone(ApiError):
    """Unknown, released or expired lease token (nnInteractive's client raises SessionExpiredError)."""

    status = 410


@dataclass
class Lease:
    """One viewer's lease: its model, its state and the two clocks that expire it."""

    token: str
    model: str
    last_active: float
    last_seen: float
    state: LeaseState = field(default_factory=LeaseState)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request of a lease at a time


class LeaseRegistry:
    """Thread-safe map of lease tokens, with capacity and expiry."""

    def __init__(self, settings: DoorSettings, clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[Lease], None] = lambda lease: None) -> None:
        self.settings = settings
        self.clock = clock
        self.on_drop = on_drop
        self._leases: dict[str, Lease] = {}
        self._mutex = threading.Lock()

    def claim(self, model: str) -> Lease:
        """A new lease on ``model``; :class:`~server.errors.Busy` (503) at capacity."""
        with self._mutex:
            self._sweep()
            if len(self._leases) >= self.settings.max_leases:
                raise Busy(f"server is at capacity ({self.settings.max_leases} nnInteractive sessions)",
                           headers={"Retry-After": "10"})
            now = self.clock()
            lease = Lease(uuid.uuid4().hex, model, now, now)
            self._leases[lease.token] = lease
            return lease

    def get(self, token: str | None, model: str, *, active: bool) -> Lease:
        """The live lease of ``token`` on ``model``; ``active`` marks a real action (else only liveness)."""
        with self._mutex:
            self._sweep()
            lease = self._leases.get(token or "")
            if lease is None or lease.model != model:
                raise LeaseGone("lease token missing" if not token else "lease expired or unknown")
            lease.last_seen = self.clock()
            if active:
                lease.last_active = lease.last_seen
            return lease

    def peek(self, token: str | None, model: str) -> Lease:
        """Like :meth:`get` but touching neither clock (``/lease_status``)."""
        with self._mutex:
            self._sweep()
            lease = self._leases.get(token or "")
            if lease is None or lease.model != model:
                raise LeaseGone("lease token missing" if not token else "lease expired or unknown")
            return lease

    def release(self, token: str | None) -> bool:
        """Drop a lease; idempotent."""
        with self._mutex:
            lease = self._leases.pop(token or "", None)
        if lease is not None:
            self.on_drop(lease)
        return lease is not None

    def remaining_s(self, lease: Lease) -> float:
        """Seconds until the idle timeout drops ``lease``."""
        return max(0.0, self.settings.idle_timeout_s - (self.clock() - lease.last_active))

    def __len__(self) -> int:
        with self._mutex:
            self._sweep()
            return len(self._leases)

    def _sweep(self) -> None:
        now = self.clock()
        s = self.settings
        for token in [t for t, x in self._leases.items()
                      if now - x.last_seen > s.liveness_timeout_s or now - x.last_active > s.idle_timeout_s]:
            self.on_drop(self._leases.pop(token))
