"""The worker process: consumes jobs from the Redis stream and runs them against the model roles.

Run: `python -m services.runtime.worker` (REDIS_URL must point at the stack's Redis).
A job runs only under its lease (`ucai.queue.lease`): one worker at a time, renewed by a heartbeat that also keeps
its stream entry claimed, checked before every model call, and compared when the outcome is written — so however
deliveries race, a job calls the model for one attempt at a time and gets one outcome. A job is acknowledged only
after its outcome is saved; if this process dies, its lease runs out with the redelivery timeout and another worker
reclaims the job and runs it again.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisFull
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import Context, TaskiqDepends
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task

from services.job_kinds import KINDS, JobKind, Runner
from services.runtime import heartbeat as worker_heartbeat
from ucai.metrics import WorkerMetrics, serve_worker_metrics
from ucai.queue import (
    DELIVERY_LABEL,
    MSG_ID_LABEL,
    BatchStore,
    JobLease,
    JobOutcome,
    JobStatus,
    JobStore,
    LeaseLost,
    ReclaimingStreamBroker,
    lease_ttl_ms,
    make_broker,
)
from ucai.queue.broker import DiscardResults
from ucai.queue.constitutions import ConstitutionMissing, ConstitutionStore
from ucai.roles import RoleRequestError, Roles, RoleUnavailable
from ucai.schemas import ErrorDetail, QueuedJob
from ucai.settings import Settings, get_settings

log = logging.getLogger("ucai.worker")

CRASH_RETRIES = 2
CANCELLED = ErrorDetail(message="the batch was cancelled", type="cancelled", code="batch_cancelled")
# Redis down, hung, or full (maxmemory, noeviction: it refuses writes until jobs expire or are trimmed): wait, keep
# the job and its outcome, and write when it answers again.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, RedisFull)


async def _heartbeat(lease: JobLease, every_s: float) -> None:
    """Renew the lease (and the stream entry's claim) until the job ends, or until the lease is lost."""
    while True:
        await asyncio.sleep(every_s)
        try:
            if not await lease.renew():
                log.warning("%s: lease lost; another worker runs the job now", lease.job_key)
                return  # the next model call or the outcome write stops this run (LeaseLost)
        except Exception:  # noqa: BLE001 - a missed beat only risks an early reclaim
            continue


def _lease(context: Context, job: QueuedJob) -> JobLease:
    """This delivery's lease on the job (its stream entry renewed with it)."""
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    store: JobStore = context.state.store
    return JobLease(store.redis, store.key(job.job_id), lease_ttl_ms(context.state.settings.redelivery_idle_s),
                    stream=broker.queue_name, group=broker.consumer_group_name, consumer=broker.consumer_name,
                    entry_id=context.message.labels.get(MSG_ID_LABEL))


async def _run_job(context: Context, job: QueuedJob, runner: Runner) -> JobOutcome | None:
    """Runs one job to an outcome, however long Redis is away; None when this delivery leaves the job alone.

    An exception escaping a task makes taskiq acknowledge the job, so a Redis restart in the middle of the
    bookkeeping would lose the record. Instead the whole job is retried until Redis answers again (under the same
    lease token: each step is idempotent — the lease is taken again, the outcome written once).
    """
    lease = _lease(context, job)
    delay = 0.5
    while True:
        try:
            return await _run_job_once(context, job, runner, lease)
        except REDIS_DOWN as exc:
            log.warning("job %s: redis unavailable (%s); retrying", job.job_id, exc)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        except LeaseLost:
            # Another worker holds the job: leave the entry to it (its heartbeat claims it), write nothing.
            log.info("job %s runs on another worker; this delivery leaves it", job.job_id)
            _leave(context)
            return None
        except asyncio.CancelledError:
            # This worker is stopping: hand the job back instead of letting taskiq acknowledge it as failed.
            await _abandon(context, job, lease)
            raise


def _leave(context: Context) -> None:
    """Do not acknowledge this delivery: the job is (or will be) run by another one."""
    broker: ReclaimingStreamBroker = context.broker  # type: ignore[assignment]
    delivery = context.message.labels.get(DELIVERY_LABEL)
    if delivery:
        broker.abandon(delivery)


async def _abandon(context: Context, job: QueuedJob, lease: JobLease) -> None:
    _leave(context)
    log.warning("job %s abandoned at shutdown; another worker will rerun it", job.job_id)
    with contextlib.suppress(Exception):  # else the lease runs out and the entry is reclaimed after the timeout
        if await asyncio.wait_for(lease.release(), timeout=2.0):
            await asyncio.wait_for(context.state.store.transition(job.job_id, JobStatus.QUEUED), timeout=2.0)


async def _run_job_once(context: Context, job: QueuedJob, runner: Runner, lease: JobLease) -> JobOutcome | None:
    """Exactly-once bookkeeping around one job: take the lease, run, write the outcome while the lease is ours."""
    state = context.state
    settings: Settings = state.settings
    store: JobStore = state.store
    batches: BatchStore = state.batches
    taken = await lease.acquire()
    if taken == "done":  # redelivered after its outcome was saved but before the ack: don't run it twice
        return await store.outcome(job.job_id)
    if taken == "held":
        raise LeaseLost(job.job_id)
    record = (job.batch.batch_id, job.batch.record_id) if job.batch else None
    outcome = await store.outcome(job.job_id)  # finished by an earlier version: its outcome, written once more here
    if outcome is None and job.batch and await batches.is_cancelled(job.batch.batch_id):
        outcome, record = JobOutcome.failure(CANCELLED), None  # never started: no record
    if outcome is None:
        await store.transition(job.job_id, JobStatus.RUNNING, count="attempts")
        beat = asyncio.create_task(_heartbeat(lease, settings.heartbeat_s))
        try:
            # Before every model call: still ours? (While Redis is away, wait for it rather than restart the job.)
            roles = state.roles.guarded(lambda: _until_redis_answers(lease.check))
            outcome = await _run_with_retries(job, runner, roles, store, settings)
        finally:
            beat.cancel()
    written = await _until_redis_answers(lambda: store.finish(job.job_id, lease.token, outcome, record))
    if written == -1:
        raise LeaseLost(job.job_id)
    return outcome


async def _until_redis_answers(write: Callable[[], Awaitable[Any]], give_up_s: float = 300.0) -> Any:
    """A finished job's bookkeeping must not be lost to a Redis restart: retry until Redis is back."""
    deadline = time.monotonic() + give_up_s
    delay = 0.2
    while True:
        try:
            return await write()
        except REDIS_DOWN:
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
                return JobOutcome.failure(error)
            log.warning("job %s waiting for model role: %s", job.job_id, exc)
            await store.transition(job.job_id, JobStatus.WAITING_FOR_MODEL, error)
            await asyncio.sleep(settings.role_retry_s)
            await store.transition(job.job_id, JobStatus.RUNNING)
        except RoleRequestError as exc:
            return JobOutcome.failure(ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.role,
                                                  code=exc.code))
        except ConstitutionMissing as exc:
            return JobOutcome.failure(exc.error)
        except (LeaseLost, *REDIS_DOWN):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed engine answer: retry, then report
            crashes += 1
            log.exception("job %s failed (try %d of %d)", job.job_id, crashes, CRASH_RETRIES + 1)
            if crashes > CRASH_RETRIES:
                return JobOutcome.failure(ErrorDetail(message=f"{type(exc).__name__}: {exc}", type="server_error",
                                                      code="job_error"))
            await asyncio.sleep(2.0 * 2 ** (crashes - 1))


def task_for(kind: JobKind) -> Callable[..., Awaitable[dict[str, Any] | None]]:
    """The taskiq task of a job kind: validate the payload, run it with exactly-once bookkeeping (the outcome is
    saved in the job's record by `JobStore.finish`; what the task returns is only logged by taskiq)."""
    async def task(payload: dict[str, Any], context: Context = TaskiqDepends()) -> dict[str, Any] | None:
        # The entry names its constitution by hash: loaded from Redis (cached); gone → the job fails clearly.
        job, runner = await _until_redis_answers(lambda: kind.load(payload, context.state.constitutions))
        outcome = await context.state.metrics.jobs.track(kind.name, _run_job(context, job, runner))
        return outcome.stored() if outcome is not None else None

    task.__name__ = f"{kind.name}_task"
    return task


async def serve(settings: Settings, concurrency: int) -> None:
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: start the whole stack with `ucai up`, or point REDIS_URL at Redis")
    broker = make_broker(settings, settings.redis_connection_url())
    for kind in KINDS.values():
        broker.register_task(task_for(kind), task_name=kind.task_name)
    broker.is_worker_process = True
    broker.state.settings = settings
    # Prometheus (README: Metrics): this process's jobs and model calls, on its own port (0: not served).
    broker.state.metrics = WorkerMetrics()
    metrics_server = serve_worker_metrics(broker.state.metrics, settings.worker_metrics_host,
                                          settings.worker_metrics_port)
    broker.state.roles = Roles(settings, broker.state.metrics.roles)
    redis = Redis.from_url(settings.redis_connection_url(), **settings.redis_client_options())
    legacy_results = broker.result_backend  # outcomes saved by an earlier version, read only
    broker.state.store = JobStore(redis, settings.job_ttl_s, legacy_results)
    broker.state.batches = BatchStore(redis, settings.job_ttl_s)
    broker.state.constitutions = ConstitutionStore(redis, settings.job_ttl_s)
    # The outcome is written by JobStore.finish while the lease is ours; taskiq's own write would skip that check.
    broker.result_backend = DiscardResults()
    if settings.heartbeat_s * 2 > lease_ttl_ms(settings.redelivery_idle_s) / 1000:
        log.warning("UCAI_HEARTBEAT_S (%s) should be well under UCAI_REDELIVERY_IDLE_S (%s): a job's lease expires "
                    "between beats, and its job may be taken over", settings.heartbeat_s, settings.redelivery_idle_s)
    await broker.startup()
    log.info("worker %s consuming %s (concurrency %d)", broker.consumer_name, settings.queue_name, concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    receiver = asyncio.create_task(
        # max_prefetch=0: taskiq asks for a message only with a free slot, and the broker reads one per ask
        run_receiver_task(broker, max_async_tasks=concurrency, max_prefetch=0, ack_time=AcknowledgeType.WHEN_SAVED)
    )
    # The container healthcheck (services/runtime/healthcheck.py) reads this worker's heartbeat key, written while
    # the receiver runs.
    beat = worker_heartbeat.Heartbeat(redis, settings, broker.consumer_name, broker.consumer_group_name, receiver)
    beat.start()
    await stop.wait()
    await beat.stop()
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
    await legacy_results.shutdown()
    await broker.shutdown()
    if metrics_server is not None:
        metrics_server.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs run at once by this process (default: UCAI_WORKER_CONCURRENCY)")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings, args.concurrency or settings.worker_concurrency))


if __name__ == "__main__":
    main()
