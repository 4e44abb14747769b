"""What keeps the queue's Redis bounded: how many jobs the stream holds unfinished (`queue_depth`, checked by the
gateway against `max_queue_depth` before it accepts work), trimming acknowledged entries (`trim_acknowledged`, run by
the workers), and the error a request over a limit raises (`LimitExceeded`)."""
from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ucai.queue import scripts


class LimitExceeded(Exception):
    """A request over a configured bound; the gateway answers it with `status` and the error envelope."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "limit_exceeded", status: int = 422,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status
        self.retry_after_s = retry_after_s


async def queue_depth(redis: Redis, stream: str, group: str) -> int:
    """Jobs on the stream not yet acknowledged by `group`: undelivered (its lag) + pending (delivered, running or to
    be reclaimed). Acknowledged entries kept for the retention do not count. Before any worker made the group, or
    where Redis cannot tell the lag (entries deleted from the middle), the whole stream counts (an over-estimate)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        try:
            length, groups = await pipe.execute()
        except ResponseError:  # no such stream: nothing queued
            return 0
    for info in groups:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            lag = info.get("lag")
            return int(info["pending"]) + int(lag) if lag is not None else int(length)
    return int(length)


async def trim_acknowledged(redis: Redis, stream: str, retain_s: float) -> int:
    """Trim acknowledged entries older than `retain_s` (never one undelivered or pending: `scripts.TRIM_ACKED`);
    returns how many went."""
    return int(await redis.eval(scripts.TRIM_ACKED, 1, stream, int(retain_s * 1000)))
