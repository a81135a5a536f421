"""Sessions: an uploaded volume kept decoded in memory so that later clicks need no upload.

Expiry counts from the last use and is capped by the server maximum; all sessions
together stay within a memory budget (least recently used go first). Expiry is timed on a
monotonic clock (injectable), so a change of the wall clock (NTP, daylight saving, an
administrator) never expires or revives a session; wall-clock times are only shown. A session
may also hold one interactive object (:mod:`server.sessions.interaction`): its normalised
image, mask and undo stack count in the budget and expire with the session.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engines.data.io import Volume
from engines.errors import InputTooLargeError
from engines.tasks.interactive import PreparedImage

__all__ = ["Session", "SessionStore"]


@dataclass
class Session:
    """One uploaded volume and its bookkeeping."""

    id: str
    volume: Volume
    suffix: str
    name: str
    expiry_s: int
    last_used: float  # the store's monotonic clock
    clock: Callable[[], float] = time.monotonic
    create_ts: float = field(default_factory=time.time)  # wall clock, shown only
    last_access_ts: float = field(default_factory=time.time)  # wall clock, shown only
    prepared: PreparedImage | None = None  # the volume normalised once for interactive models
    prepared_key: str = ""  # which normalisation made ``prepared`` (InteractiveEngine.prepare_key)
    interaction: Any = None  # the object being annotated (server.sessions.interaction.Interaction), if any
    # one interaction at a time per session (prompts, undo and reset of one object are a sequence)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def nbytes(self) -> int:
        """Memory held: the volume, its normalised copy, and the interactive object's mask and undo stack."""
        prepared = self.prepared.nbytes if self.prepared is not None else 0
        return self.volume.nbytes + prepared + (self.interaction.nbytes() if self.interaction is not None else 0)

    def expired(self, now: float) -> bool:
        """Whether the session has been idle longer than its expiry (``now`` on the store's clock)."""
        return now - self.last_used > self.expiry_s

    def touch(self, now: float) -> None:
        """Record a use (renews the expiry)."""
        self.last_used = now
        self.last_access_ts = time.time()

    def info(self) -> dict[str, Any]:
        """JSON shape of ``GET /session/{id}`` (MONAI Label's, which AIAA clients accept)."""
        g = self.volume.geometry
        return {
            "session_id": self.id,
            "session_info": {
                "name": self.name,
                "image": {
                    "shape": list(self.volume.shape),
                    "dtype": str(self.volume.array.dtype),
                    "spacing": list(g.spacing),
                    "origin": list(g.origin),
                    "direction": list(g.direction),
                    "format": self.suffix,
                },
                "create_ts": int(self.create_ts),
                "last_access_ts": int(self.last_access_ts),
                "expiry": self.expiry_s,
                "expires_in": max(0, int(self.expiry_s - (self.clock() - self.last_used))),
            },
        }


class SessionStore:
    """Thread-safe, memory-bounded session cache."""

    def __init__(self, default_expiry_s: int, max_expiry_s: int, memory_budget: int, max_sessions: int = 1000,
                 overhead_bytes: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.default_expiry_s = default_expiry_s
        self.max_expiry_s = max_expiry_s
        self.memory_budget = memory_budget
        self.max_sessions = max_sessions
        # What a session costs beyond its voxels (objects, allocator slack), so that many tiny sessions count.
        self.overhead_bytes = overhead_bytes
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def expiry_for(self, requested: int | None) -> int:
        """``0``/missing means the default; anything is capped at the maximum."""
        if not requested or requested <= 0:
            return min(self.default_expiry_s, self.max_expiry_s)
        return min(int(requested), self.max_expiry_s)

    def create(self, volume: Volume, suffix: str, name: str, expiry: int | None = None) -> Session:
        """Store a volume; evicts least recently used sessions to stay within the budget.

        Raises:
            InputTooLargeError: the volume alone exceeds the memory budget.
        """
        cost = volume.nbytes + self.overhead_bytes
        if cost > self.memory_budget:
            raise InputTooLargeError(
                f"the image needs {cost} bytes; sessions may hold at most {self.memory_budget}"
            )
        session = Session(str(uuid.uuid4()), volume, suffix, name, self.expiry_for(expiry), self.clock(), self.clock)
        with self._lock:
            self._purge(self.clock())
            while self._sessions and (self._used() + cost > self.memory_budget
                                      or len(self._sessions) >= self.max_sessions):
                self._sessions.popitem(last=False)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str, touch: bool = True) -> Session | None:
        """The live session, or ``None`` if unknown or expired; ``touch`` renews its expiry."""
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expired(now):
                del self._sessions[session_id]
                return None
            if touch:
                session.touch(now)
                self._sessions.move_to_end(session_id)
            return session

    def make_room(self, session: Session, extra: int = 0) -> None:
        """Evict other least recently used sessions until ``session`` (grown by ``extra`` bytes) fits the budget.

        Raises:
            InputTooLargeError: ``session`` alone would exceed the budget (nothing is evicted then).
        """
        need = session.nbytes() + extra
        if need > self.memory_budget:
            raise InputTooLargeError(f"the session would need {need} bytes; sessions may hold at most "
                                     f"{self.memory_budget}")
        with self._lock:
            for sid in list(self._sessions):
                if self._used() + extra <= self.memory_budget:
                    break
                if sid != session.id:
                    del self._sessions[sid]

    def delete(self, session_id: str) -> bool:
        """Remove a session; ``False`` if it did not exist (or had expired)."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        return session is not None and not session.expired(self.clock())

    def stats(self) -> dict[str, int]:
        """Count and memory of live sessions."""
        with self._lock:
            self._purge(self.clock())
            return {"count": len(self._sessions), "bytes": self._used(), "budget": self.memory_budget}

    def _used(self) -> int:
        return sum(s.nbytes() + self.overhead_bytes for s in self._sessions.values())

    def _purge(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expired(now)]:
            del self._sessions[sid]
