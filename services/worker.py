"""The worker process: consumes jobs from the Redis stream and runs them against the model roles.

Run: `python -m services.worker` (REDIS_URL must point at the stack's Redis).
A job is acknowledged only after its result is saved; if this process dies, another
worker reclaims the job after `redelivery_idle_s` and runs it again. While a job runs, a
heartbeat keeps it claimed, so a slow job is never stolen from a live worker.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import Context, TaskiqDepends
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task

from services.categorise import run_categorise
from services.critique_revision import run_critique_revision
from services.judge import run_compare
from services.preferences import run_preference
from services.ranking import run_rank
from ucai.queue import (
    MSG_ID_LABEL,
    TASK_CATEGORISE,
    TASK_COMPARE,
    TASK_CRITIQUE,
    TASK_PREFERENCE,
    TASK_RANK,
    BatchStore,
    JobStore,
    ReclaimingStreamBroker,
    make_broker,
)
from ucai.roles import RoleRequestError, Roles, RoleUnavailable
from ucai.schemas import CategoriseJob, CompareJob, CritiqueJob, ErrorDetail, PreferenceJob, RankJob
from ucai.settings import Settings, get_settings

log = logging.getLogger("ucai.worker")

JobPayload = CritiqueJob | CompareJob | RankJob | CategoriseJob | PreferenceJob
CRASH_RETRIES = 2
CANCELLED = ErrorDetail(message="the batch was cancelled", type="cancelled", code="batch_cancelled")
Runner = Callable[[Any, Roles], Awaitable[BaseModel]]


async def _heartbeat(broker: ReclaimingStreamBroker, msg_id: str | None, every_s: float) -> None:
    if not msg_id:
        return
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # a missed beat only risks an early reclaim
            await broker.renew(msg_id)


async def _run_job(context: Context, job: JobPayload, runner: Runner) -> dict[str, Any]:
    """Runs one job to an outcome, however long Redis is away.

    An exception escaping a task makes taskiq save an error result and acknowledge the job, so a
    Redis restart in the middle of the bookkeeping would lose the record. Instead the whole job is
    retried until Redis answers again (each step is idempotent: stored outcome, HSETNX records).
    """
    delay = 0.5
    while True:
        try:
            return await _run_job_once(context, job, runner)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("job %s: redis unavailable (%s); retrying", job.job_id, exc)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        except asyncio.CancelledError:
            # This worker is stopping: hand the job back instead of letting taskiq acknowledge it as failed.
            await _abandon(context, job)
            raise


async def _abandon(context: Context, job: JobPayload) -> None:
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    msg_id = context.message.labels.get(MSG_ID_LABEL)
    if not msg_id:
        return
    broker.abandon(msg_id)
    log.warning("job %s abandoned at shutdown; another worker will rerun it", job.job_id)
    with contextlib.suppress(Exception):  # only the status shown; the unacknowledged stream entry is what reruns it
        await asyncio.wait_for(context.state.store.set_status(job.job_id, "queued"), timeout=2.0)


async def _run_job_once(context: Context, job: JobPayload, runner: Runner) -> dict[str, Any]:
    """Exactly-once bookkeeping around one job; returns {"ok": true, "result"} or {"ok": false, "error"}."""
    state = context.state
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    settings: Settings = state.settings
    store: JobStore = state.store
    task_id = context.message.task_id

    batches: BatchStore = state.batches
    # Redelivered after its result was saved but before the ack: don't run it twice.
    stored = await _stored_outcome(broker, task_id)
    if stored is not None:
        if job.batch:
            await _record(batches, job, stored)
        return stored
    if job.batch and await batches.is_cancelled(job.batch.batch_id):
        await store.set_status(job.job_id, "failed", CANCELLED.model_dump())
        return {"ok": False, "error": CANCELLED.model_dump()}

    await store.incr(job.job_id, "attempts")
    await store.set_status(job.job_id, "running")
    beat = asyncio.create_task(_heartbeat(broker, context.message.labels.get(MSG_ID_LABEL), settings.heartbeat_s))
    try:
        outcome = await _run_with_retries(job, runner, state.roles, store, settings)
    finally:
        beat.cancel()
    if job.batch:
        await _record(batches, job, outcome)
    if outcome["ok"]:
        await _until_redis_answers(lambda: store.incr(job.job_id, "completions"))
        await _until_redis_answers(lambda: store.set_status(job.job_id, "completed"))
    return outcome


async def _stored_outcome(broker: ReclaimingStreamBroker, task_id: str) -> dict[str, Any] | None:
    """This job's saved outcome, if an earlier run saved one (a crash result from taskiq does not count)."""
    if not await broker.result_backend.is_result_ready(task_id):
        return None
    value = (await broker.result_backend.get_result(task_id)).return_value
    return value if isinstance(value, dict) and "ok" in value else None


async def _record(batches: BatchStore, job: JobPayload, outcome: dict[str, Any]) -> None:
    """Exactly once per record (HSETNX), however often this job ran."""
    assert job.batch is not None
    await _until_redis_answers(lambda: batches.record(
        job.batch.batch_id, job.batch.record_id, outcome["ok"], outcome.get("result") or outcome.get("error") or {}))


async def _until_redis_answers(write: Callable[[], Awaitable[Any]], give_up_s: float = 300.0) -> Any:
    """A finished job's bookkeeping must not be lost to a Redis restart: retry until Redis is back."""
    deadline = time.monotonic() + give_up_s
    delay = 0.2
    while True:
        try:
            return await write()
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() > deadline:
                raise  # unacknowledged: the job is rerun and its outcome written then
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


async def _run_with_retries(job: JobPayload, runner: Runner, roles: Roles, store: JobStore,
                            settings: Settings) -> dict[str, Any]:
    waited_since: float | None = None
    crashes = 0
    while True:
        try:
            result = await runner(job, roles)
            return {"ok": True, "result": result.model_dump(mode="json")}
        except RoleUnavailable as exc:
            # Keep the job: report it as waiting and retry until the role is back.
            waited_since = waited_since or time.monotonic()
            error = ErrorDetail(message=str(exc), type="service_unavailable", param=exc.role,
                                code="model_unavailable")
            if time.monotonic() - waited_since > settings.role_wait_max_s:
                await store.set_status(job.job_id, "failed", error.model_dump())
                return {"ok": False, "error": error.model_dump()}
            log.warning("job %s waiting for model role: %s", job.job_id, exc)
            await store.set_status(job.job_id, "waiting_for_model", error.model_dump())
            await asyncio.sleep(settings.role_retry_s)
            await store.set_status(job.job_id, "running")
        except RoleRequestError as exc:
            error = ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.role,
                                code="model_rejected_request")
            await store.set_status(job.job_id, "failed", error.model_dump())
            return {"ok": False, "error": error.model_dump()}
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed engine answer: retry, then report
            crashes += 1
            log.exception("job %s failed (try %d of %d)", job.job_id, crashes, CRASH_RETRIES + 1)
            if crashes > CRASH_RETRIES:
                error = ErrorDetail(message=f"{type(exc).__name__}: {exc}", type="server_error", code="job_error")
                await store.set_status(job.job_id, "failed", error.model_dump())
                return {"ok": False, "error": error.model_dump()}
            await asyncio.sleep(2.0 * 2 ** (crashes - 1))


async def critique_task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
    return await _run_job(context, CritiqueJob.model_validate(payload), run_critique_revision)


async def compare_task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
    return await _run_job(context, CompareJob.model_validate(payload), lambda job, roles: run_compare(job, roles.judge))


async def categorise_task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
    job = CategoriseJob.model_validate(payload)
    return await _run_job(context, job, lambda job, roles: run_categorise(job, roles.judge))


async def preference_task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
    return await _run_job(context, PreferenceJob.model_validate(payload), run_preference)


async def rank_task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
    return await _run_job(context, RankJob.model_validate(payload), lambda job, roles: run_rank(job, roles.judge))


TASKS = {TASK_CRITIQUE: critique_task, TASK_COMPARE: compare_task, TASK_RANK: rank_task,
         TASK_CATEGORISE: categorise_task, TASK_PREFERENCE: preference_task}


async def serve(settings: Settings, concurrency: int) -> None:
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: start the whole stack with `ucai up`, or point REDIS_URL at Redis")
    broker = make_broker(settings, settings.redis_url, concurrency=concurrency)
    for name, task in TASKS.items():
        broker.register_task(task, task_name=name)
    broker.is_worker_process = True
    broker.state.settings = settings
    broker.state.roles = Roles(settings)
    redis = Redis.from_url(settings.redis_url)
    broker.state.store = JobStore(redis, settings.job_ttl_s)
    broker.state.batches = BatchStore(redis, settings.job_ttl_s)
    await broker.startup()
    log.info("worker %s consuming %s (concurrency %d)", broker.consumer_name, settings.queue_name, concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    receiver = asyncio.create_task(
        run_receiver_task(broker, max_async_tasks=concurrency, ack_time=AcknowledgeType.WHEN_SAVED)
    )
    await stop.wait()
    # Unfinished jobs stay unacknowledged in the stream: cancel them while Redis is still reachable (each hands
    # itself back), then release whatever this consumer still holds so the next worker takes it without waiting.
    receiver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiver
    jobs = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for job in jobs:
        job.cancel()
    if jobs:
        await asyncio.wait(jobs, timeout=10)
    try:
        released = await asyncio.wait_for(broker.release_pending(), timeout=5)
        log.info("released %d unfinished job(s) for other workers", released)
    except Exception as exc:  # noqa: BLE001 - they are still reclaimed after redelivery_idle_s
        log.warning("could not release unfinished jobs (%s); they are reclaimed after the redelivery timeout", exc)
    await broker.state.roles.aclose()
    await redis.aclose()
    await broker.shutdown()


async def check(settings: Settings) -> int:
    try:
        async with Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0") as redis:
            await redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("UCAI_WORKER_CONCURRENCY", 8)),
                        help="jobs run at once by this process")
    parser.add_argument("--check", action="store_true", help="exit 0 when Redis answers (container healthcheck)")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.check:
        raise SystemExit(asyncio.run(check(settings)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings, args.concurrency))


if __name__ == "__main__":
    main()
