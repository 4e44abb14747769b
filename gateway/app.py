"""The FastAPI gateway: validation, job submission, results. No work at import time.

Run: `uvicorn gateway.app:create_app --factory --host 127.0.0.1 --port 8000` with REDIS_URL set.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from redis.asyncio import Redis

from gateway.access import Access, current_caller
from gateway.body_limit import BodySizeLimit
from gateway.errors import install_error_handlers
from gateway.jobs import JobService
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
from ucai import chat_adapters
from ucai.constitutions import load_constitutions
from ucai.layout import Layout
from ucai.queue import BatchStore, JobStore, make_broker
from ucai.roles import Roles
from ucai.settings import Settings, get_settings

log = logging.getLogger("ucai.gateway")


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
        broker = make_broker(settings, settings.redis_url)
        await broker.startup()
        redis = Redis.from_url(settings.redis_url)
        app.state.roles = Roles(settings)
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for module in (critique, compare, batches, jobs, constitutions, health, openai_chat, side_by_side, admin, page):
        app.include_router(module.router)
    return app
