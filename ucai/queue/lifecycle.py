"""A job's life in Redis — one definition for the gateway (which reads it) and the workers (which move it).

Status, in the hash `ucai:job:{id}`:

    queued ──► running ──► completed | failed
                 │  ▲
                 ▼  │
          waiting_for_model        a role is down: the job stays and retries (→ failed after role_wait_max_s)
    running / waiting_for_model ──► queued   abandoned: a stopping worker hands the job back; another reruns it
    queued ──► failed                        a batch record whose batch was cancelled before it started

The outcome (`JobOutcome`) is the hash's `outcome` field, written once, by the worker holding the job's lease
(`lease.py`), in the same step as the final status and the batch record (`finish`). A job is created and queued in one
step once per id (`submit`), so an idempotency key maps to one job however often, and however concurrently, it is
submitted. The Lua scripts are in `scripts.py`.
"""
from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from taskiq.abc.result_backend import AsyncResultBackend

from ucai.queue import scripts
from ucai.queue.batches import BatchStore
from ucai.schemas import ErrorDetail, JobStatus

SUBMIT_CHUNK = 500  # jobs per pipelined round trip (`submit_many`)
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
    """Every job's status and outcome (`ucai:job:{id}`). `results`: taskiq's result backend, read only for jobs that a
    version before the `outcome` field finished (None: none)."""

    def __init__(self, redis: Redis, ttl_s: int, results: AsyncResultBackend | None = None):
        self.redis = redis
        self.ttl_s = ttl_s
        self.results = results
        self._transition = redis.register_script(_TRANSITION)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._finish = redis.register_script(scripts.FINISH)

    @staticmethod
    def key(job_id: str) -> str:
        return f"ucai:job:{job_id}"

    async def ping(self) -> None:
        await self.redis.ping()

    async def create(self, job_id: str, kind: str, request_json: str, owner: str = "") -> bool:
        """Record a new job (queued) without queueing it; False when a job with this id already exists."""
        return bool(await self._submit(keys=[self.key(job_id)],
                                       args=[time.time(), kind, request_json, owner, self.ttl_s]))

    async def submit(self, job_id: str, kind: str, request_json: str, owner: str, stream: str,
                     message: bytes) -> bool:
        """Record a new job and put `message` on `stream`, in one step; False when the id already existed (an
        idempotent repeat: nothing is queued again). `owner`: the API key id that submitted it ("" when auth is off);
        only it (and admin) may read the job."""
        return bool(await self._submit(keys=[self.key(job_id), stream],
                                       args=[time.time(), kind, request_json, owner, self.ttl_s, message]))

    async def submit_many(self, jobs: list[tuple[str, bytes]], kind: str, owner: str, stream: str,
                          chunk: int = SUBMIT_CHUNK) -> int:
        """`submit` for many jobs ((id, message) each, no request copy in the record), pipelined: one round trip per
        `chunk` jobs instead of one per job — a batch of 100k records is queued in seconds. Each job is still its own
        atomic SUBMIT (created and queued once per id), so a repeat queues only what was never queued. Returns how
        many were created."""
        created = 0
        for start in range(0, len(jobs), chunk):
            async with self.redis.pipeline(transaction=False) as pipe:
                now = time.time()
                for job_id, message in jobs[start:start + chunk]:
                    await self._submit(keys=[self.key(job_id), stream],
                                       args=[now, kind, "", owner, self.ttl_s, message], client=pipe)
                created += sum(int(r) for r in await pipe.execute())
        return created

    async def get(self, job_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.key(job_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    async def outcome(self, job_id: str, raw: dict[str, str] | None = None) -> JobOutcome | None:
        """The saved outcome, if the job has one (`raw`: the job's hash when the caller has read it already)."""
        raw = raw if raw is not None else await self.get(job_id) or {}
        if raw.get("outcome"):
            return JobOutcome.model_validate_json(raw["outcome"])
        if self.results is not None and raw.get("status") in FINAL and await self.results.is_result_ready(job_id):
            return JobOutcome.from_stored((await self.results.get_result(job_id)).return_value)
        return None

    async def finish(self, job_id: str, token: str, outcome: JobOutcome, batch: tuple[str, str] | None = None) -> int:
        """Write the job's one outcome, its final status (and `completions`), and its batch record (`batch`: batch id,
        record id) — only while `token` holds the lease. 1: written; 0: it had one already; -1: the lease is not ours
        (write nothing more: another worker runs the job); -2: the job is gone (expired)."""
        error_json = json.dumps(outcome.error.model_dump()) if outcome.error else ""
        keys = [self.key(job_id), f"{self.key(job_id)}:lease"]
        args: list = [token, json.dumps(outcome.stored()), "1" if outcome.ok else "0", time.time(), error_json]
        if batch is not None:
            batch_id, record_id = batch
            keys += [BatchStore.key(batch_id), BatchStore.key(batch_id, "results"), BatchStore.key(batch_id, "failed")]
            args += [record_id, json.dumps(outcome.payload()), self.ttl_s]
        return int(await self._finish(keys=keys, args=args))

    async def transition(self, job_id: str, status: JobStatus, error: ErrorDetail | None = None,
                         count: str = "") -> bool:
        """Move the job to `status` if TRANSITIONS allows it from where it is; `count` bumps that counter too
        (`attempts` when it starts running, `completions` when it completes). False where it was not moved."""
        allowed = [s.value for s in TRANSITIONS[status]]
        error_json = json.dumps(error.model_dump()) if error else ""
        written = await self._transition(keys=[self.key(job_id)],
                                         args=[status.value, time.time(), error_json, count, *allowed])
        return bool(written)
