"""The FastAPI gateway: validation, job submission, results. No work at import time.

Run: `uvicorn gateway.app:create_app --factory --host 127.0.0.1 --port 8000` with REDIS_URL set.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from redis.asyncio import BlockingConnectionPool, Redis

from gateway.access import Access, current_caller
from gateway.body_limit import BodySizeLimit
from gateway.errors import document_errors, install_error_handlers
from gateway.jobs import JobService
from gateway.metrics import install_metrics
from gateway.routers import (
    admin,
    batches,
    compare,
    constitutions,
    critique,
    health,
    jobs,
    openai_chat,
    page,
    side_by_side,
)
from gateway.strict_json import StrictJSON
from ucai import chat_adapters
from ucai.constitutions import load_constitutions
from ucai.layout import Layout
from ucai.queue import BatchStore, JobStore, make_broker
from ucai.roles import Roles
from ucai.settings import Settings, get_settings

log = logging.getLogger("ucai.gateway")


def gateway_redis(settings: Settings, url: str) -> Redis:
    """The gateway's Redis client (job records, batches, keys' rate limits): a bounded, blocking pool with the
    queue's socket timeouts. Hundreds of concurrent clients share `gateway_redis_max_connections` connections and
    wait for a free one (a ConnectionError → 503 after the socket timeout) instead of opening one each."""
    pool = BlockingConnectionPool.from_url(url, max_connections=settings.gateway_redis_max_connections,
                                           timeout=settings.redis_socket_timeout_s, **settings.redis_client_options())
    return Redis.from_pool(pool)  # closing the client closes the pool


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: start the whole stack with `ucai up`, "
                               "or point REDIS_URL at Redis")
        app.state.settings = settings
        app.state.layout = Layout.from_settings(settings)
        app.state.constitutions = load_constitutions(settings.constitutions_dir)
        broker = make_broker(settings, settings.redis_connection_url())
        await broker.startup()
        redis = gateway_redis(settings, settings.redis_connection_url())
        app.state.roles = Roles(settings, app.state.metrics.roles)  # its model calls counted (GET /metrics)
        app.state.jobs = JobService(broker, JobStore(redis, settings.job_ttl_s, broker.result_backend),
                                    app.state.constitutions, app.state.roles, settings)
        app.state.batches = BatchStore(redis, settings.job_ttl_s)
        app.state.access = Access(settings, redis)  # API keys, rate limits, audit log
        # Adapters trained while the chat engine was down, or an engine started without them (compose): registered
        # in the background once it answers; requests are served meanwhile.
        registering = asyncio.create_task(chat_adapters.register_when_up(
            app.state.roles.http, settings, app.state.layout, log))
        yield
        registering.cancel()
        await app.state.roles.aclose()
        await redis.aclose()
        await broker.shutdown()

    app = FastAPI(
        title="UCAI gateway",
        description="Constitutional AI as a service: critique → revision under a constitution (and its inversion).",
        version="0.1.0",
        lifespan=lifespan,
        # Every route needs an API key when keys are configured, except gateway.access.OPEN_PATHS.
        dependencies=[Depends(current_caller)],
    )
    app.add_middleware(StrictJSON)  # 400 for hostile JSON; inside BodySizeLimit, so it reads a bounded body
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    document_errors(app)
    install_metrics(app)  # GET /metrics; its middleware outermost, so it counts every answer
    for module in (critique, compare, batches, jobs, constitutions, health, openai_chat, side_by_side, admin, page):
        app.include_router(module.router)
    return app
