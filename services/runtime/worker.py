"""The worker process: consumes jobs from the Redis stream and runs them against the model roles.

Run: `python -m services.runtime.worker` (REDIS_URL must point at the stack's Redis).
A job is acknowledged only after its result is saved; if this process dies, another
worker reclaims the job after `redelivery_idle_s` and runs it again. While a job runs, a
heartbeat keeps it claimed, so a slow job is never stolen from a live worker.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import Context, TaskiqDepends
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task

from services.job_kinds import KINDS, JobKind, Runner
from ucai.queue import MSG_ID_LABEL, BatchStore, JobOutcome, JobStatus, JobStore, ReclaimingStreamBroker, make_broker
from ucai.roles import RoleRequestError, Roles, RoleUnavailable
from ucai.schemas import ErrorDetail, QueuedJob
from ucai.settings import Settings, get_settings

log = logging.getLogger("ucai.worker")

CRASH_RETRIES = 2
CANCELLED = ErrorDetail(message="the batch was cancelled", type="cancelled", code="batch_cancelled")


async def _heartbeat(broker: ReclaimingStreamBroker, msg_id: str | None, every_s: float) -> None:
    if not msg_id:
        return
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # a missed beat only risks an early reclaim
            await broker.renew(msg_id)


async def _run_job(context: Context, job: QueuedJob, runner: Runner) -> JobOutcome:
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


async def _abandon(context: Context, job: QueuedJob) -> None:
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    msg_id = context.message.labels.get(MSG_ID_LABEL)
    if not msg_id:
        return
    broker.abandon(msg_id)
    log.warning("job %s abandoned at shutdown; another worker will rerun it", job.job_id)
    with contextlib.suppress(Exception):  # only the status shown; the unacknowledged stream entry is what reruns it
        await asyncio.wait_for(context.state.store.transition(job.job_id, JobStatus.QUEUED), timeout=2.0)


async def _run_job_once(context: Context, job: QueuedJob, runner: Runner) -> JobOutcome:
    """Exactly-once bookkeeping around one job."""
    state = context.state
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    settings: Settings = state.settings
    store: JobStore = state.store
    batches: BatchStore = state.batches
    # Redelivered after its outcome was saved but before the ack: don't run it twice.
    stored = await store.outcome(context.message.task_id)
    if stored is not None:
        if job.batch:
            await _record(batches, job, stored)
        return stored
    if job.batch and await batches.is_cancelled(job.batch.batch_id):
        await store.transition(job.job_id, JobStatus.FAILED, CANCELLED)
        return JobOutcome.failure(CANCELLED)

    await store.transition(job.job_id, JobStatus.RUNNING, count="attempts")
    beat = asyncio.create_task(_heartbeat(broker, context.message.labels.get(MSG_ID_LABEL), settings.heartbeat_s))
    try:
        outcome = await _run_with_retries(job, runner, state.roles, store, settings)
    finally:
        beat.cancel()
    if job.batch:
        await _record(batches, job, outcome)
    if outcome.ok:
        await _until_redis_answers(lambda: store.transition(job.job_id, JobStatus.COMPLETED, count="completions"))
    return outcome


async def _record(batches: BatchStore, job: QueuedJob, outcome: JobOutcome) -> None:
    """Exactly once per record (HSETNX), however often this job ran."""
    assert job.batch is not None
    await _until_redis_answers(lambda: batches.record(job.batch.batch_id, job.batch.record_id, outcome))


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


async def _run_with_retries(job: QueuedJob, runner: Runner, roles: Roles, store: JobStore,
                            settings: Settings) -> JobOutcome:
    waited_since: float | None = None
    crashes = 0
    while True:
        try:
            return JobOutcome.success(await runner(job, roles))
        except RoleUnavailable as exc:
            # Keep the job: report it as waiting and retry until the role is back.
            waited_since = waited_since or time.monotonic()
            error = ErrorDetail(message=str(exc), type="service_unavailable", param=exc.role,
                                code="model_unavailable")
            if time.monotonic() - waited_since > settings.role_wait_max_s:
                await store.transition(job.job_id, JobStatus.FAILED, error)
                return JobOutcome.failure(error)
            log.warning("job %s waiting for model role: %s", job.job_id, exc)
            await store.transition(job.job_id, JobStatus.WAITING_FOR_MODEL, error)
            await asyncio.sleep(settings.role_retry_s)
            await store.transition(job.job_id, JobStatus.RUNNING)
        except RoleRequestError as exc:
            error = ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.role, code=exc.code)
            await store.transition(job.job_id, JobStatus.FAILED, error)
            return JobOutcome.failure(error)
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed engine answer: retry, then report
            crashes += 1
            log.exception("job %s failed (try %d of %d)", job.job_id, crashes, CRASH_RETRIES + 1)
            if crashes > CRASH_RETRIES:
                error = ErrorDetail(message=f"{type(exc).__name__}: {exc}", type="server_error", code="job_error")
                await store.transition(job.job_id, JobStatus.FAILED, error)
                return JobOutcome.failure(error)
            await asyncio.sleep(2.0 * 2 ** (crashes - 1))


def task_for(kind: JobKind) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The taskiq task of a job kind: validate the payload, run it with exactly-once bookkeeping, store the outcome
    as JSON."""
    async def task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any]:
        return (await _run_job(context, kind.job.model_validate(payload), kind.runner)).stored()

    task.__name__ = f"{kind.name}_task"
    return task


async def serve(settings: Settings, concurrency: int) -> None:
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: start the whole stack with `ucai up`, or point REDIS_URL at Redis")
    broker = make_broker(settings, settings.redis_url, concurrency=concurrency)
    for kind in KINDS.values():
        broker.register_task(task_for(kind), task_name=kind.task_name)
    broker.is_worker_process = True
    broker.state.settings = settings
    broker.state.roles = Roles(settings)
    redis = Redis.from_url(settings.redis_url)
    broker.state.store = JobStore(redis, settings.job_ttl_s, broker.result_backend)
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
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs run at once by this process (default: UCAI_WORKER_CONCURRENCY)")
    parser.add_argument("--check", action="store_true", help="exit 0 when Redis answers (container healthcheck)")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.check:
        raise SystemExit(asyncio.run(check(settings)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings, args.concurrency or settings.worker_concurrency))


if __name__ == "__main__":
    main()
