"""GET /metrics: the gateway's Prometheus exposition (README: Metrics). The queue and batch gauges are read from
Redis at each scrape, every command under `UCAI_METRICS_REDIS_TIMEOUT_S`: a Redis that is down or slow gives
`ucai_redis_up 0` and the scrape still answers 200. Open without an API key unless `UCAI_METRICS_REQUIRE_KEY`
(`gateway.access`)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ucai.metrics import CONTENT_TYPE, GatewayMetrics, QueueSnapshot, render

T = TypeVar("T")
SCAN_COUNT = 1000  # keys SCAN looks at per call
BATCH_PIPELINE = 500  # batches read per pipeline round trip
UNDELIVERED_COUNT_MAX = 100_000  # where Redis cannot tell a group's lag, count at most this many entries

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of the gateway",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition."}})
async def metrics(request: Request) -> Response:
    state = request.app.state
    registry: GatewayMetrics = state.metrics
    settings, jobs = state.settings, state.jobs
    snapshot = await read_queue(jobs.store.redis, jobs.broker.queue_name, jobs.broker.consumer_group_name,
                                settings.metrics_redis_timeout_s, settings.metrics_batch_scan_max)
    # Set and rendered with no await in between: a concurrent scrape cannot swap the snapshot under this one.
    registry.queue.snapshot = snapshot
    return Response(render(registry.registry), media_type=CONTENT_TYPE)


async def _bounded(call: Awaitable[T], timeout_s: float) -> T:
    return await asyncio.wait_for(call, timeout_s)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


async def read_queue(redis: Redis, stream: str, group: str, timeout_s: float, scan_max: int) -> QueueSnapshot | None:
    """The queue and batch gauges from Redis, each command bounded by `timeout_s`; None when Redis did not answer
    (the scrape then says `ucai_redis_up 0` instead of failing)."""
    try:
        return await _read_queue(redis, stream, group, timeout_s, scan_max)
    except (RedisError, OSError, asyncio.TimeoutError):
        return None


async def _read_queue(redis: Redis, stream: str, group: str, timeout_s: float, scan_max: int) -> QueueSnapshot:
    snap = QueueSnapshot()
    seconds, micros = await _bounded(redis.time(), timeout_s)  # Redis' clock: the one that stamped the stream ids
    now_ms = seconds * 1000 + micros // 1000
    try:
        groups = await _bounded(redis.xinfo_groups(stream), timeout_s)
    except ResponseError:  # no stream yet: nothing was ever queued
        groups = None
    oldest: list[int] = []
    if groups is not None:
        info = next((g for g in groups if _text(g["name"]) == group), None)
        if info is None:  # no worker made the group yet: every entry is undelivered
            snap.depth = int(await _bounded(redis.xlen(stream), timeout_s))
            first = await _bounded(redis.xrange(stream, count=1), timeout_s)
        else:
            last = _text(info["last-delivered-id"])
            snap.pending = int(info["pending"])
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell (entries deleted past the group's position): count them, bounded
                lag = len(await _bounded(redis.xrange(stream, min=f"({last}", count=UNDELIVERED_COUNT_MAX), timeout_s))
            snap.depth = int(lag)
            first = await _bounded(redis.xrange(stream, min=f"({last}", count=1), timeout_s) if lag else []
            if snap.pending:
                summary = await _bounded(redis.xpending(stream, group), timeout_s)
                if summary.get("min"):
                    oldest.append(_stream_ms(summary["min"]))
        if first:
            oldest.append(_stream_ms(first[0][0]))
    snap.oldest_age_s = max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0
    await _read_batches(redis, snap, timeout_s, scan_max)
    return snap


async def _read_batches(redis: Redis, snap: QueueSnapshot, timeout_s: float, scan_max: int) -> None:
    """Batch counts by status, and the records of the running ones, from a SCAN that looks at `scan_max` keys at
    most (Redis holds a key per job too: an unbounded scan would grow with the job history)."""
    metas: list[Any] = []
    cursor, looked = 0, 0
    while looked < scan_max:
        cursor, keys = await _bounded(redis.scan(cursor, match="ucai:batch:*", count=SCAN_COUNT, _type="hash"),
                                      timeout_s)
        looked += SCAN_COUNT
        metas += [k for k in keys if _text(k).count(":") == 2]  # the meta hash; not its :results / :failed
        if cursor == 0:
            break
    snap.batches_truncated = cursor != 0 or (scan_max == 0)
    for start in range(0, len(metas), BATCH_PIPELINE):
        chunk = metas[start:start + BATCH_PIPELINE]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hmget(key, "status", "total")
                pipe.hlen(f"{_text(key)}:results")
                pipe.hlen(f"{_text(key)}:failed")
            answers = await _bounded(pipe.execute(), timeout_s)
        for i in range(len(chunk)):
            (status, total), done, failed = answers[3 * i], answers[3 * i + 1], answers[3 * i + 2]
            status = _text(status) if status is not None else ""
            if status not in snap.batches:
                continue  # expired between SCAN and read, or not a batch
            snap.batches[status] += 1
            if status == "running":
                snap.records["done"] += int(done)
                snap.records["failed"] += int(failed)
                snap.records["pending"] += max(0, int(total or 0) - int(done) - int(failed))
