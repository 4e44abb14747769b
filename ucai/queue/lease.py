"""A job's lease: who may run it now. One worker at a time holds `ucai:job:{id}:lease` (its own random token, with an
expiry a little under `redelivery_idle_s`); only the holder renews it (the heartbeat), calls the model for the job
(`check` before each call) and writes the job's outcome (`JobStore.finish` compares the token). A worker that dies
stops renewing: the lease runs out just before its stream entry becomes reclaimable, and the next worker takes both.
"""
from __future__ import annotations

import secrets

from redis.asyncio import Redis

from ucai.queue import scripts


def lease_ttl_ms(redelivery_idle_s: float) -> int:
    """The lease's expiry: the redelivery timeout less a margin (a tenth, at most 1 s). Lease and stream entry are
    renewed together, so the lease has always run out by the time the entry can be reclaimed: the next worker finds
    it free instead of skipping the entry for another whole timeout."""
    idle_ms = int(redelivery_idle_s * 1000)
    return max(1, idle_ms - min(1000, idle_ms // 10))


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: another worker runs the job now. Stop, write nothing."""


class JobLease:
    def __init__(self, redis: Redis, job_key: str, ttl_ms: int, *, stream: str = "", group: str = "",
                 consumer: str = "", entry_id: str | None = None):
        self.redis = redis
        self.job_key = job_key
        self.key = f"{job_key}:lease"
        self.ttl_ms = max(1, int(ttl_ms))
        self.token = secrets.token_hex(16)
        self.stream, self.group, self.consumer, self.entry_id = stream, group, consumer, entry_id or ""
        self._acquire = redis.register_script(scripts.ACQUIRE)
        self._renew = redis.register_script(scripts.RENEW)
        self._release = redis.register_script(scripts.RELEASE)

    async def acquire(self) -> str:
        """'ours' (run the job), 'held' (another worker runs it: leave it) or 'done' (it already has an outcome)."""
        answer = await self._acquire(keys=[self.key, self.job_key], args=[self.token, self.ttl_ms])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def renew(self) -> bool:
        """Heartbeat: extend the lease and reset the stream entry's idle time; False once the lease is not ours."""
        renewed = await self._renew(keys=[self.key, self.stream or self.key],
                                    args=[self.token, self.ttl_ms, self.group, self.consumer,
                                          self.entry_id if self.stream else ""])
        return bool(renewed)

    async def check(self) -> None:
        """Raise LeaseLost unless this worker still holds the lease (before every model call of the job)."""
        if await self.redis.get(self.key) != self.token.encode():
            raise LeaseLost(f"{self.job_key}: the lease is held by another worker, or ran out")

    async def release(self) -> bool:
        """Hand the job back now (a stopping worker); False where the lease was no longer ours."""
        return bool(await self._release(keys=[self.key], args=[self.token]))
