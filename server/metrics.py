"""``GET /metrics``: Prometheus text format (``prometheus_client``), one registry per app.

Counted as requests pass (server/middleware.py): requests and latency per route and model,
refusals per model. Network time per model is observed by the inference route. Read at
scrape time: queue depth per model, sessions (count and bytes), jobs by state, model status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "router"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _StateCollector(Collector):
    """Gauges read from the app's state when Prometheus scrapes."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.state
        running = GaugeMetricFamily("aiaa_model_running", "Inferences running per model", labels=["model"])
        queued = GaugeMetricFamily("aiaa_model_queued", "Inferences waiting for a slot per model", labels=["model"])
        for name, gate in sorted(getattr(state.gates, "_gates", {}).items()):
            in_flight = int(getattr(gate, "in_flight", 0))
            busy = min(in_flight, getattr(gate, "max_running", state.gates.max_running))
            running.add_metric([name], busy)
            queued.add_metric([name], in_flight - busy)
        yield running
        yield queued
        stats = state.sessions.stats()
        yield GaugeMetricFamily("aiaa_sessions", "Live sessions", value=stats["count"])
        yield GaugeMetricFamily("aiaa_session_bytes", "Memory counted for live sessions", value=stats["bytes"])
        status = GaugeMetricFamily("aiaa_model_ready", "1 when the model serves, 0 when unavailable",
                                   labels=["model"])
        for record in state.pool.records():
            status.add_metric([record.name], 1.0 if record.status == "ready" else 0.0)
        yield status
        jobs = getattr(state, "jobs", None)
        if jobs is not None:
            from server.jobs.store import STATES

            family = GaugeMetricFamily("aiaa_jobs", "Jobs by state", labels=["state"])
            counts = {s: 0 for s in STATES}
            for row in jobs.list(None, limit=100_000):
                counts[row["state"]] = counts.get(row["state"], 0) + 1
            for name, count in counts.items():
                family.add_metric([name], count)
            yield family


class Metrics:
    """The metrics of one app."""

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aiaa_requests", "Requests by route, method, status and model",
                                ["route", "method", "status", "model"], registry=self.registry)
        self.latency = Histogram("aiaa_request_seconds", "Request latency by route and model",
                                 ["route", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.network = Histogram("aiaa_network_seconds", "Time in the network (inferer) per model",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.refusals = Counter("aiaa_refusals", "Requests refused per model and status (413, 429, 503, ...)",
                                ["model", "status"], registry=self.registry)
        self.registry.register(_StateCollector(state))

    def observe_request(self, route: str, method: str, status: int, model: str, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(route, method, str(status), model).inc()
        self.latency.labels(route, model).observe(seconds)
        if status in (408, 413, 429, 503, 504, 507):
            self.refusals.labels(model, str(status)).inc()

    def observe_network(self, model: str, timings_ms: dict[str, float]) -> None:
        """Record the network stage of one inference (``timings['infer']``, milliseconds)."""
        if "infer" in timings_ms:
            self.network.labels(model).observe(timings_ms["infer"] / 1000.0)

    def render(self) -> bytes:
        """The text exposition."""
        return generate_latest(self.registry)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics (text format): requests, latency, network time, queues, sessions, jobs, models."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
