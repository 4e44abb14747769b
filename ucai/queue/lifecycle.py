"""A job's life in Redis — one definition for the gateway (which reads it) and the workers (which move it).

Status, in the hash `ucai:job:{id}`:

    queued ──► running ──► completed | failed
                 │  ▲
                 ▼  │
          waiting_for_model        a role is down: the job stays and retries (→ failed after role_wait_max_s)
    running / waiting_for_model ──► queued   abandoned: a stopping worker hands the job back; another reruns it
    queued ──► failed                        a batch record whose batch was cancelled before it started

The outcome (`JobOutcome`) is the job's return value in the result backend, and the truth about completion: the
status hash may say "completed" a moment before the outcome is saved. A job is created once per id (HSETNX), so an
idempotency key maps to one job however often it is submitted.
"""
from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from taskiq.abc.result_backend import AsyncResultBackend

from ucai.schemas import ErrorDetail, JobStatus

FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
# new status → the statuses it may follow. A final status is never left: a redelivered job reads its outcome instead.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING_FOR_MODEL}),
    JobStatus.WAITING_FOR_MODEL: frozenset({JobStatus.RUNNING, JobStatus.WAITING_FOR_MODEL}),
    JobStatus.COMPLETED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING_FOR_MODEL}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.WAITING_FOR_MODEL}),  # abandoned
}

# Set the status only from an allowed one; bump a counter in the same step. Returns 1 if written.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
for i = 5, #ARGV do
  if ARGV[i] == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2], 'error', ARGV[3])
    if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[4], 1) end
    return 1
  end
end
return 0
"""


class JobOutcome(BaseModel):
    """What a job ends with: its result, or the error that ended it. Stored as the task's JSON return value."""

    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorDetail | None = None

    @classmethod
    def success(cls, result: BaseModel) -> JobOutcome:
        return cls(ok=True, result=result.model_dump(mode="json"))

    @classmethod
    def failure(cls, error: ErrorDetail) -> JobOutcome:
        return cls(ok=False, error=error)

    @classmethod
    def from_stored(cls, value: Any) -> JobOutcome | None:
        """None for anything that is not an outcome (taskiq's record of a run cancelled at shutdown)."""
        return cls.model_validate(value) if isinstance(value, dict) and "ok" in value else None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def payload(self) -> dict[str, Any]:
        """The result, or the error, as a batch record stores it."""
        return self.result if self.ok else (self.error.model_dump() if self.error else {})


class JobStore:
    """Every job's status (`ucai:job:{id}`) and outcome (the result backend)."""

    def __init__(self, redis: Redis, ttl_s: int, results: AsyncResultBackend):
        self.redis = redis
        self.ttl_s = ttl_s
        self.results = results
        self._transition = redis.register_script(_TRANSITION)

    @staticmethod
    def key(job_id: str) -> str:
        return f"ucai:job:{job_id}"

    async def ping(self) -> None:
        await self.redis.ping()

    async def create(self, job_id: str, kind: str, request_json: str, owner: str = "") -> bool:
        """Record a new job (queued); False when a job with this id already exists (an idempotent repeat). `owner`:
        the API key id that submitted it ("" when auth is off); only it (and admin) may read the job."""
        now = time.time()
        if not await self.redis.hsetnx(self.key(job_id), "status", JobStatus.QUEUED.value):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(job_id), mapping={"kind": kind, "created_at": now, "updated_at": now, "attempts": 0,
                                                 "completions": 0, "request": request_json, "owner": owner})
            pipe.expire(self.key(job_id), self.ttl_s)
            await pipe.execute()
        return True

    async def is_enqueued(self, job_id: str) -> bool:
        return bool(await self.redis.hget(self.key(job_id), "enqueued"))

    async def claim_enqueue(self, job_id: str, hold_ms: int = 30_000) -> bool:
        """The right to put this job on the stream: one submit at a time (concurrent same-key submits would each
        queue a copy). Released by `release_enqueue`, or after hold_ms if its holder died."""
        return bool(await self.redis.set(f"{self.key(job_id)}:enqueuing", 1, nx=True, px=hold_ms))

    async def release_enqueue(self, job_id: str) -> None:
        await self.redis.delete(f"{self.key(job_id)}:enqueuing")

    async def mark_enqueued(self, job_id: str) -> None:
        await self.redis.hset(self.key(job_id), "enqueued", 1)

    async def discard(self, job_id: str) -> None:
        """Forget a job whose message could not be queued (the client gets an error and may retry)."""
        await self.redis.delete(self.key(job_id))

    async def get(self, job_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.key(job_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    async def outcome(self, job_id: str) -> JobOutcome | None:
        """The saved outcome, if the job has one."""
        if not await self.results.is_result_ready(job_id):
            return None
        return JobOutcome.from_stored((await self.results.get_result(job_id)).return_value)

    async def transition(self, job_id: str, status: JobStatus, error: ErrorDetail | None = None,
                         count: str = "") -> bool:
        """Move the job to `status` if TRANSITIONS allows it from where it is; `count` bumps that counter too
        (`attempts` when it starts running, `completions` when it completes). False where it was not moved."""
        allowed = [s.value for s in TRANSITIONS[status]]
        error_json = json.dumps(error.model_dump()) if error else ""
        written = await self._transition(keys=[self.key(job_id)],
                                         args=[status.value, time.time(), error_json, count, *allowed])
        return bool(written)


class BatchStore:
    """A batch in Redis: `ucai:batch:{id}` (meta, with `owner`: the API key id that created it), `:ids` (input
    order), `:results` and `:failed` (record id → JSON). Results are written with HSETNX, so a record is written
    exactly once however often its job runs."""

    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s

    @staticmethod
    def key(batch_id: str, part: str = "") -> str:
        return f"ucai:batch:{batch_id}{':' + part if part else ''}"

    async def create(self, batch_id: str, meta: dict[str, str], record_ids: list[str]) -> bool:
        if not await self.redis.hsetnx(self.key(batch_id), "status", "running"):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(batch_id), mapping={**meta, "created_at": time.time(), "total": len(record_ids)})
            if record_ids:
                pipe.rpush(self.key(batch_id, "ids"), *record_ids)
            for part in ("", "ids"):
                pipe.expire(self.key(batch_id, part), self.ttl_s)
            await pipe.execute()
        return True

    async def meta(self, batch_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.key(batch_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    async def record(self, batch_id: str, record_id: str, outcome: JobOutcome) -> bool:
        """Write a record's outcome once; False if it already had one. A success replaces an earlier failure."""
        value = json.dumps(outcome.payload())
        if outcome.ok:
            written = await self.redis.hsetnx(self.key(batch_id, "results"), record_id, value)
            if written:
                await self.redis.hdel(self.key(batch_id, "failed"), record_id)
        else:
            if await self.redis.hexists(self.key(batch_id, "results"), record_id):
                return False
            written = await self.redis.hsetnx(self.key(batch_id, "failed"), record_id, value)
        for part in ("results", "failed"):
            await self.redis.expire(self.key(batch_id, part), self.ttl_s)
        if written:
            await self._finish_if_done(batch_id)
        return bool(written)

    async def counts(self, batch_id: str) -> tuple[int, int]:
        return (await self.redis.hlen(self.key(batch_id, "results")),
                await self.redis.hlen(self.key(batch_id, "failed")))

    async def _finish_if_done(self, batch_id: str) -> None:
        meta = await self.meta(batch_id) or {}
        done, failed = await self.counts(batch_id)
        if meta.get("status") == "running" and done + failed >= int(meta.get("total", 0)):
            await self.redis.hset(self.key(batch_id), mapping={"status": "completed", "finished_at": time.time()})

    async def cancel(self, batch_id: str) -> None:
        await self.redis.hset(self.key(batch_id), "status", "cancelled")

    async def is_cancelled(self, batch_id: str) -> bool:
        return (await self.redis.hget(self.key(batch_id), "status")) == b"cancelled"

    async def ids(self, batch_id: str) -> list[str]:
        return [i.decode() for i in await self.redis.lrange(self.key(batch_id, "ids"), 0, -1)]

    async def outcomes(self, batch_id: str, record_ids: list[str]) -> list[tuple[str, str | None, str | None]]:
        """(id, result JSON, failure JSON) for each id."""
        results = await self.redis.hmget(self.key(batch_id, "results"), record_ids) if record_ids else []
        failed = await self.redis.hmget(self.key(batch_id, "failed"), record_ids) if record_ids else []
        return [(i, r.decode() if r else None, f.decode() if f else None)
                for i, r, f in zip(record_ids, results, failed, strict=True)]
