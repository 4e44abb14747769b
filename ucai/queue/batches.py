"""A batch in Redis: `ucai:batch:{id}` (meta, with `owner`: the API key id that created it), `:ids` (input order),
`:results` and `:failed` (record id → JSON).

Each record gets exactly one outcome — in `:results` or in `:failed`, written once, first writer wins — and the batch
turns `completed` in the same step as its last record (`scripts.RECORD`; a worker writes a record together with its
job's outcome, `JobStore.finish`). `cancel` marks the batch `cancelled` — whatever it was, also when it had just
completed, and it never turns `completed` after that: records whose job had started still finish and are counted
(`done` / `failed`); the rest fail as cancelled without a record.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from ucai.queue import scripts

if TYPE_CHECKING:
    from ucai.queue.lifecycle import JobOutcome


class BatchStore:
    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = redis.register_script(scripts.CREATE_BATCH)
        self._record = redis.register_script(scripts.RECORD)

    @staticmethod
    def key(batch_id: str, part: str = "") -> str:
        return f"ucai:batch:{batch_id}{':' + part if part else ''}"

    async def create(self, batch_id: str, meta: dict[str, str], record_ids: list[str]) -> bool:
        """Create the batch once per id (meta, record list and expiry in one step); False when it existed."""
        fields = {**meta, "created_at": time.time(), "total": len(record_ids)}
        pairs = [item for pair in fields.items() for item in pair]
        return bool(await self._create(keys=[self.key(batch_id), self.key(batch_id, "ids")],
                                       args=[self.ttl_s, len(fields), *pairs, *record_ids]))

    async def meta(self, batch_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.key(batch_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    async def record(self, batch_id: str, record_id: str, outcome: JobOutcome) -> bool:
        """Write a record's outcome once; False if it already had one (either one)."""
        keys = [self.key(batch_id), self.key(batch_id, "results"), self.key(batch_id, "failed")]
        args = [record_id, json.dumps(outcome.payload()), "1" if outcome.ok else "0", time.time(), self.ttl_s]
        return bool(await self._record(keys=keys, args=args))

    async def counts(self, batch_id: str) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=True) as pipe:  # one snapshot: done and failed of the same moment
            pipe.hlen(self.key(batch_id, "results"))
            pipe.hlen(self.key(batch_id, "failed"))
            done, failed = await pipe.execute()
        return done, failed

    async def cancel(self, batch_id: str) -> None:
        """Mark the batch cancelled (one HSET: atomic; RECORD completes only a running batch, so this is final)."""
        await self.redis.hset(self.key(batch_id), mapping={"status": "cancelled", "cancelled_at": time.time()})

    async def is_cancelled(self, batch_id: str) -> bool:
        return (await self.redis.hget(self.key(batch_id), "status")) == b"cancelled"

    async def ids(self, batch_id: str, start: int = 0, stop: int = -1) -> list[str]:
        """The record ids in input order (`start` … `stop` inclusive: a page of them)."""
        return [i.decode() for i in await self.redis.lrange(self.key(batch_id, "ids"), start, stop)]

    async def outcomes(self, batch_id: str, record_ids: list[str]) -> list[tuple[str, str | None, str | None]]:
        """(id, result JSON, failure JSON) for each id."""
        results = await self.redis.hmget(self.key(batch_id, "results"), record_ids) if record_ids else []
        failed = await self.redis.hmget(self.key(batch_id, "failed"), record_ids) if record_ids else []
        return [(i, r.decode() if r else None, f.decode() if f else None)
                for i, r, f in zip(record_ids, results, failed, strict=True)]
