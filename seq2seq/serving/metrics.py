"""What /metrics says, in the Prometheus text format.

Every app has its own CollectorRegistry: the process-wide default one would refuse a second
app's metrics of the same names (tests build many apps in one process) and would mix the
process's other collectors into ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("seq2seq_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("seq2seq_request_duration_seconds",
                                 "time from a request's arrival to the end of its answer (a stream's last event)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("seq2seq_requests_in_flight", "HTTP requests being answered now", registry=registry)
        self.queue_depth = Gauge("seq2seq_queue_depth", "jobs waiting for the model (translators, classifiers) "
                                 "or requests admitted and not finished (language models, forecasters)",
                                 ["model"], registry=registry)
        self.batch_size = Histogram("seq2seq_batch_size", "texts per model call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.tokens = Counter("seq2seq_tokens_decoded", "target pieces and </s> of the translations returned "
                              "(translators), characters generated (language models)", ["model"], registry=registry)
        self.rejected = Counter("seq2seq_rejected", "requests refused with 503 because the model's queue was full "
                                "(model=any:<task>: every model of the task was)", ["model"], registry=registry)
        self.dropped = Counter("seq2seq_jobs_dropped", "jobs the model did not finish because their deadline "
                               "passed or their client went away: before any work, or stopped part-way",
                               ["model", "reason"], registry=registry)
        self.timeouts = Counter("seq2seq_timeouts", "requests answered 504 (or streams ended) at their deadline",
                                ["model"], registry=registry)

    def watch_depth(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model=model).set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP answer by route template and status, with its latency; pure ASGI, so a
    stream is timed to its last byte and the 401/413 answers of the middlewares inside count too."""

    def __init__(self, app, metrics: Metrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app, self.metrics, self.known_paths = app, metrics, known_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception that escapes before the answer starts is a 500 to the client

        async def recording_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
            route = route_label(scope, self.known_paths)
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - began)


def route_label(scope, known_paths: frozenset[str] = frozenset()) -> str:
    """The matched route's template, never an arbitrary path (unknown paths would grow the label
    set without bound). An answer given before routing (401, 413) names the path when it is a route's."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    return scope.get("path") if scope.get("path") in known_paths else "unmatched"
