"""Constitutions in Redis, stored once by content hash: `ucai:constitution:{hash}`.

A job names its constitution by `content_hash` (`JobMessage`) instead of carrying the whole ~10 KB text, so a queued
record costs its request, not its constitution. The gateway stores the constitution before it queues a job that
names it (`put`: the expiry refreshed, the text written only where it is missing), with an expiry at least the jobs'
own, so it outlives every job that refers to it; the worker reads it once per hash (`get`, a small LRU cache — a hash
names one content forever).
"""
from __future__ import annotations

from collections import OrderedDict

from redis.asyncio import Redis

from ucai.constitutions import Constitution
from ucai.schemas import ErrorDetail

CACHE_SIZE = 64
TTL_MARGIN_S = 3600  # the constitution outlives the last job that refers to it by this much


class ConstitutionMissing(Exception):
    """A job names a constitution that is not in Redis (expired with an old job, or deleted): the job fails with this
    error instead of running under another constitution."""

    def __init__(self, content_hash: str):
        super().__init__(f"constitution {content_hash} is no longer stored (ucai:constitution:{content_hash}); "
                         "resubmit the job")
        self.error = ErrorDetail(message=str(self), type="server_error", param="constitution",
                                 code="constitution_missing")


class ConstitutionStore:
    def __init__(self, redis: Redis, job_ttl_s: int, cache_size: int = CACHE_SIZE):
        self.redis = redis
        self.ttl_s = int(job_ttl_s) + TTL_MARGIN_S
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Constitution] = OrderedDict()

    @staticmethod
    def key(content_hash: str) -> str:
        return f"ucai:constitution:{content_hash}"

    async def put(self, constitution: Constitution) -> str:
        """Make sure the constitution is stored, with a fresh expiry; returns its hash. Called before every job that
        names it is queued, so its expiry is always later than theirs. Refresh first: the ~10 KB text goes over the
        wire only when the key is missing (SET NX: concurrent writers write it once)."""
        content_hash = constitution.content_hash
        key = self.key(content_hash)
        if not await self.redis.expire(key, self.ttl_s):
            await self.redis.set(key, constitution.model_dump_json(), ex=self.ttl_s, nx=True)
        return content_hash

    async def get(self, content_hash: str) -> Constitution:
        """The constitution of this hash; raises ConstitutionMissing when it is not stored."""
        cached = self._cache.get(content_hash)
        if cached is not None:
            self._cache.move_to_end(content_hash)
            return cached
        raw = await self.redis.get(self.key(content_hash))
        if raw is None:
            raise ConstitutionMissing(content_hash)
        constitution = Constitution.model_validate_json(raw)
        if constitution.content_hash != content_hash:  # a stored text that is not what the job was validated against
            raise ConstitutionMissing(content_hash)
        self._cache[content_hash] = constitution
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return constitution
