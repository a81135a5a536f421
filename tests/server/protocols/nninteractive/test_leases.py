"""Leases: capacity, the two expiry clocks, models, dropping (an injected clock: no sleeping)."""

from __future__ import annotations

import pytest
from nnint_standin import Clock

from server.errors import Busy
from server.protocols.nninteractive.leases import DoorSettings, LeaseGone, LeaseRegistry


@pytest.fixture()
def registry() -> LeaseRegistry:
    dropped = []
    registry = LeaseRegistry(DoorSettings(max_leases=2, idle_timeout_s=100, liveness_timeout_s=10), clock=Clock(),
                             on_drop=dropped.append)
    registry.dropped = dropped
    return registry


def test_capacity_counts_live_leases_only(registry):
    first = registry.claim("m")
    registry.claim("m")
    with pytest.raises(Busy) as info:
        registry.claim("m")
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "10"}
    assert registry.release(first.token) and not registry.release(first.token)
    registry.claim("m")
    registry.clock.advance(11)  # both dead now
    assert len(registry) == 0
    registry.claim("m")


def test_liveness_is_kept_by_any_request_idleness_only_by_actions(registry):
    lease = registry.claim("m")
    for _ in range(9):
        registry.clock.advance(9)
        registry.get(lease.token, "m", active=False)  # a heartbeat
    assert registry.remaining_s(lease) == pytest.approx(19)
    registry.clock.advance(9)
    registry.get(lease.token, "m", active=True)  # a click
    assert registry.remaining_s(lease) == pytest.approx(100)
    registry.clock.advance(9)
    assert registry.peek(lease.token, "m") is lease  # peeking keeps nothing alive
    registry.clock.advance(2)
    with pytest.raises(LeaseGone):
        registry.peek(lease.token, "m")


def test_a_lease_belongs_to_its_model_and_unknown_tokens_are_gone(registry):
    lease = registry.claim("m")
    for token, model in ((lease.token, "other"), ("nope", "m"), (None, "m"), ("", "m")):
        with pytest.raises(LeaseGone) as info:
            registry.get(token, model, active=True)
        assert info.value.status == 410


def test_released_and_expired_leases_are_handed_to_on_drop_once(registry):
    first, second = registry.claim("m"), registry.claim("m")
    registry.release(first.token)
    registry.release(first.token)
    registry.clock.advance(11)
    assert len(registry) == 0 and registry.dropped == [first, second]
