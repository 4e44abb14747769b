"""Per-key rate limits: token buckets in Redis, so every gateway replica shares them.

Two buckets per API key id (none when auth is off): requests per minute and estimated model tokens per
minute. A bucket holds up to one minute's allowance (the burst) and refills continuously. One Lua script reads,
refills and takes atomically — two replicas can never both spend the last token — on Redis's own clock (TIME), so
gateway clocks that disagree do not matter.
"""
from __future__ import annotations

import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("ucai.gateway")

# KEYS[1] bucket hash; ARGV: capacity, refill per second, cost. Returns {allowed 0|1, seconds until cost fits ×1000}.
# A cost above the capacity is charged as the whole capacity: it waits for a full bucket instead of never fitting.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = math.min(tonumber(ARGV[3]), capacity)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


class RateLimiter:
    """`take` answers how many seconds to wait (0: allowed, charged)."""

    def __init__(self, redis: Redis, requests_per_min: int, tokens_per_min: int):
        self.redis = redis
        self.limits = {"requests": requests_per_min, "tokens": tokens_per_min}
        self._take = redis.register_script(_TAKE)

    async def take(self, key_id: str, kind: str, cost: int = 1) -> int:
        """Charge `cost` to the key's `kind` bucket; 0 when allowed, else the Retry-After seconds (nothing charged).
        Redis down: allowed (logged) — the limit protects capacity, and the routes that need Redis fail anyway."""
        per_min = self.limits[kind]
        if per_min <= 0 or cost <= 0:
            return 0
        try:
            allowed, wait_ms = await self._take(keys=[f"ucai:ratelimit:{kind}:{key_id}"],
                                                args=[per_min, per_min / 60.0, cost])
        except RedisError as exc:
            log.warning("rate limit not checked (redis: %s)", exc)
            return 0
        return 0 if allowed else max(1, math.ceil(int(wait_ms) / 1000))
