"""The gateway's Prometheus metrics (README: Metrics): its registry and the request middleware. The metric families
are in `ucai.metrics`; GET /metrics, with the queue and batch gauges read from Redis at scrape time, is
`gateway.routers.metrics`.
"""
from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.routers import metrics as metrics_router
from ucai.metrics import GatewayMetrics, HttpMetrics

# Any other method is counted as "other": a label value per made-up method would be unbounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_metrics(app: FastAPI) -> GatewayMetrics:
    """The app's registry (app.state.metrics; the lifespan hands its `roles` to the role clients), the request
    middleware (outermost: it also sees answers of the other middlewares, such as 413), and GET /metrics."""
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics.http)
    app.include_router(metrics_router.router)
    return metrics


def route_template(scope: Scope) -> str:
    """The matched route's template (`/jobs/{job_id}`): bounded label values, never the raw path. A request answered
    before routing (e.g. 413 by the body limit) is matched here; none matches: "unmatched"."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status, and times it to the last byte sent. Pure
    ASGI (not BaseHTTPMiddleware), so streamed answers pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app is answered 500 by the server-error middleware outside

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            method = scope.get("method", "GET")
            self.metrics.observe(route_template(scope), method if method in METHODS else "other", status,
                                 time.perf_counter() - started)
