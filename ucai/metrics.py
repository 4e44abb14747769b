"""Prometheus metrics (README: Metrics): the metric families of the gateway and the workers, by name, in one place.

The names are a contract — the Grafana dashboard and the Prometheus config use them as they are. Each process builds
its own `CollectorRegistry` (never the global default) when it starts: the gateway in `create_app`
(`gateway.metrics`), a worker in `serve`, which also serves it on its own port (`serve_worker_metrics`). Nothing here
does any work at import time.

Label values are bounded: HTTP routes by their template (`/jobs/{job_id}`, never the raw path), statuses and error
types from small fixed sets, job kinds and roles from the code.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("ucai.metrics")
T = TypeVar("T")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# An HTTP request or a model call: milliseconds (a poll) to minutes (a wait=true job, a long generation).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A job: a judge call (well under a second) to a long critique on a CPU engine (up to ~30 min).
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0)
JOB_OUTCOMES = ("completed", "failed", "abandoned")
BATCH_STATUSES = ("running", "completed", "cancelled")
RECORD_STATES = ("done", "failed", "pending")


def new_registry() -> CollectorRegistry:
    """A registry of this process only, with its process_* metrics (CPU, memory, open files)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of the registry (serve it with `CONTENT_TYPE`)."""
    return generate_latest(registry)


class HttpMetrics:
    """Gateway requests, labelled by route template, method and status (`gateway.metrics.MetricsMiddleware`)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("ucai_http_requests_total", "HTTP requests answered by the gateway.",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram("ucai_http_request_duration_seconds", "Time from request to the response's last "
                                  "byte (a streamed answer: its whole stream).", ["route", "method"],
                                  buckets=LATENCY_BUCKETS, registry=registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)


class RoleMetrics:
    """Every HTTP request to a model role (`ucai.roles.RoleClient`): one per attempt, so retries show."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("ucai_role_requests_total", "HTTP requests to a model role, by answer status "
                                "(\"error\": no answer — connection error or timeout).", ["role", "status"],
                                registry=registry)
        self.duration = Histogram("ucai_role_request_duration_seconds", "Latency of one request to a model role.",
                                  ["role"], buckets=LATENCY_BUCKETS, registry=registry)
        self.errors = Counter("ucai_role_errors_total", "Failed requests to a model role, by type: timeout, "
                              "connection, retryable (429/5xx, retried), rejected (other non-200, not retried), "
                              "bad_response (200 that is not JSON), gave_up (retries used up: the role is "
                              "unavailable).", ["role", "type"], registry=registry)
        self.tokens = Counter("ucai_tokens_total", "Tokens of model calls, from each response's OpenAI `usage`.",
                              ["role", "direction"], registry=registry)

    def answered(self, role: str, status: int, seconds: float) -> None:
        self.requests.labels(role, str(status)).inc()
        self.duration.labels(role).observe(seconds)

    def failed(self, role: str, kind: str, seconds: float | None = None) -> None:
        """A request that got no answer (seconds given: it counts as a request too), or an answer that is an error."""
        if seconds is not None:
            self.requests.labels(role, "error").inc()
            self.duration.labels(role).observe(seconds)
        self.errors.labels(role, kind).inc()

    def usage(self, role: str, usage: Mapping[str, Any] | None) -> None:
        if not isinstance(usage, Mapping):
            return
        for direction in ("prompt", "completion"):
            count = usage.get(f"{direction}_tokens")
            if isinstance(count, int) and count > 0:
                self.tokens.labels(role, direction).inc(count)


class JobMetrics:
    """Jobs run by a worker (`services.runtime.worker.task_for`)."""

    def __init__(self, registry: CollectorRegistry):
        self.in_flight = Gauge("ucai_jobs_in_flight", "Jobs this worker is running now.", ["kind"], registry=registry)
        self.total = Counter("ucai_jobs_total", "Jobs this worker ended, by outcome: completed, failed, or abandoned "
                             "(left to another worker: at shutdown, or its lease held elsewhere).",
                             ["kind", "outcome"], registry=registry)
        self.duration = Histogram("ucai_job_duration_seconds", "Wall time of a job on this worker, from delivery to "
                                  "its outcome written.", ["kind"], buckets=JOB_BUCKETS, registry=registry)

    def ended(self, kind: str, outcome: str, seconds: float) -> None:
        self.total.labels(kind, outcome).inc()
        if outcome != "abandoned":  # an abandoned run says nothing about how long the job takes
            self.duration.labels(kind).observe(seconds)

    async def track(self, kind: str, run: Awaitable[T]) -> T:
        """Await one delivery's run of a job, counted: in flight meanwhile, then its outcome — `completed` or
        `failed` from the returned JobOutcome (`.ok`), `abandoned` when it returns None (the job is another worker's)
        or is cancelled (this worker stops and hands it back); an exception escaping the run counts as failed."""
        started, outcome = time.monotonic(), "abandoned"
        self.in_flight.labels(kind).inc()
        try:
            result = await run
        except asyncio.CancelledError:
            raise
        except Exception:
            outcome = "failed"
            raise
        else:
            if result is not None:
                outcome = "completed" if getattr(result, "ok", False) else "failed"
            return result
        finally:
            self.in_flight.labels(kind).dec()
            self.ended(kind, outcome, time.monotonic() - started)


@dataclass
class QueueSnapshot:
    """The queue and the batches as read from Redis at one scrape (`gateway.metrics.read_queue`)."""

    depth: int = 0  # stream entries not yet delivered to a worker
    pending: int = 0  # delivered, not acknowledged (running, or held by a worker that died)
    oldest_age_s: float = 0.0  # the oldest undelivered-or-pending entry; 0 when there is none
    batches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BATCH_STATUSES, 0))
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_STATES, 0))
    batches_truncated: bool = False  # the bounded scan stopped before it saw every batch


class QueueCollector(Collector):
    """Yields the last `QueueSnapshot` (set just before each render); `None`: Redis did not answer — then only
    `ucai_redis_up 0`, and the queue series are absent rather than stale."""

    def __init__(self) -> None:
        self.snapshot: QueueSnapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # families vary with Redis being up: collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily("ucai_redis_up", "1 when Redis answered this scrape, else 0.", value=int(bool(snap)))
        if snap is None:
            return
        yield GaugeMetricFamily("ucai_queue_depth", "Jobs on the stream not yet delivered to a worker.",
                                value=snap.depth)
        yield GaugeMetricFamily("ucai_queue_pending", "Jobs delivered to a worker and not acknowledged yet.",
                                value=snap.pending)
        yield GaugeMetricFamily("ucai_queue_oldest_job_age_seconds", "Age of the oldest undelivered or pending job "
                                "(from its stream id); 0 when the queue is empty.", value=snap.oldest_age_s)
        batches = GaugeMetricFamily("ucai_batches", "Batches in Redis by status.", labels=["status"])
        for status in BATCH_STATUSES:
            batches.add_metric([status], snap.batches.get(status, 0))
        yield batches
        records = GaugeMetricFamily("ucai_batch_records", "Records of the running batches: done, failed, pending.",
                                    labels=["state"])
        for state in RECORD_STATES:
            records.add_metric([state], snap.records.get(state, 0))
        yield records
        yield GaugeMetricFamily("ucai_batches_scan_truncated", "1 when the batch scan hit its bound "
                                "(UCAI_METRICS_BATCH_SCAN_MAX): the batch gauges then count only part of them.",
                                value=int(snap.batches_truncated))


class GatewayMetrics:
    """The gateway's registry: its requests, its own model calls (chat, context checks), the queue and batches."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.http = HttpMetrics(self.registry)
        self.roles = RoleMetrics(self.registry)
        self.queue = QueueCollector()
        self.registry.register(self.queue)


class WorkerMetrics:
    """A worker's registry: its jobs and its model calls."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.jobs = JobMetrics(self.registry)
        self.roles = RoleMetrics(self.registry)


def serve_worker_metrics(metrics: WorkerMetrics, host: str, port: int) -> Any | None:
    """GET /metrics of a worker on host:port, on a daemon thread (the counters are thread-safe); port 0: off.
    A port in use (several workers on one host with the same port) is logged, not fatal: the worker still runs jobs.
    Returns the server (`.shutdown()` it) or None."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d (%s): give each worker its own UCAI_WORKER_METRICS_PORT",
                    host, port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
