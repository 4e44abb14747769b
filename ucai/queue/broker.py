"""The broker shared by the gateway (producer) and the workers (consumers).

taskiq + taskiq-redis: a Redis *stream* broker (a job is acknowledged only after its
result is saved; a job whose worker died is reclaimed by XAUTOCLAIM and rerun) and a
Redis result backend, both JSON.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage
from taskiq.serializers import JSONSerializer
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from ucai.settings import Settings

logger = logging.getLogger("ucai.queue")

MSG_ID_LABEL = "ucai_stream_id"
JOB_NAMESPACE = uuid.UUID("6f1c1d0e-5b8a-4f43-9d0c-6a3a3c7e2b11")


ID_SECRET_KEY = "ucai:id-secret"


def job_id_for(kind: str, idempotency_key: str | None, owner: str = "", secret: str = "") -> str:
    """Deterministic id for an idempotency key (same key → same job); random otherwise. `owner` (the API key id)
    namespaces the keys: two callers sending the same key get two jobs, so neither reads the other's result. `secret`
    (the server's, `id_secret`) keeps the id from being computed out of a key someone else knows."""
    if idempotency_key:
        name = f"{kind}:{owner}:{secret}:{idempotency_key}" if owner or secret else f"{kind}:{idempotency_key}"
        return str(uuid.uuid5(JOB_NAMESPACE, name))
    return str(uuid.uuid4())


async def id_secret(redis: Redis) -> str:
    """The server-side secret of `job_id_for`, made once and shared by every gateway replica through Redis."""
    await redis.set(ID_SECRET_KEY, secrets.token_hex(32), nx=True)
    return (await redis.get(ID_SECRET_KEY)).decode()


class ReclaimingStreamBroker(RedisStreamBroker):
    """RedisStreamBroker that also reclaims abandoned jobs while the stream is idle.

    The upstream `listen` only runs XAUTOCLAIM after a read that returned new messages,
    so a job held by a dead worker waits for unrelated traffic. Here every loop
    iteration reclaims. Each delivered message also carries its stream id as a label,
    so the running task can heartbeat (XCLAIM ... JUSTID resets the idle time) and a
    long job is never stolen from a live worker.

    A job cancelled by a worker's shutdown is *abandoned*: taskiq would save an error result
    and acknowledge it (it catches BaseException, CancelledError included), losing the job;
    an abandoned message is not acknowledged, and the stopping worker makes everything it still
    holds reclaimable at once (`release_pending`).
    """

    _abandoned: set[str] | None = None

    def abandon(self, msg_id: str) -> None:
        """Leave this message unacknowledged: its task was cancelled before it finished."""
        if self._abandoned is None:
            self._abandoned = set()
        self._abandoned.add(msg_id)

    async def release_pending(self) -> int:
        """At shutdown: make every message this consumer still holds reclaimable at once — abandoned jobs, and ones
        read from the stream but never started (taskiq drops its prefetched deliveries when it stops)."""
        async with Redis(connection_pool=self.connection_pool) as conn:
            pending = await conn.xpending_range(self.queue_name, self.consumer_group_name, min="-", max="+",
                                                count=10_000, consumername=self.consumer_name)
            ids = [p["message_id"] for p in pending]
            if ids:
                await conn.xclaim(self.queue_name, self.consumer_group_name, self.consumer_name, min_idle_time=0,
                                  message_ids=ids, idle=self.idle_timeout + 1000, justid=True)
            return len(ids)

    def _ack_unless_abandoned(self, msg_id: bytes | str) -> Callable[[], Awaitable[None]]:
        key = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
        ack = self._ack_generator(id=msg_id, queue_name=self.queue_name)

        async def _ack() -> None:
            if self._abandoned and key in self._abandoned:
                self._abandoned.discard(key)
                return  # pending in the stream: reclaimed and rerun by a worker
            await ack()

        return _ack

    def _tagged(self, data: bytes, msg_id: bytes | str) -> bytes:
        message = json.loads(data)
        message.setdefault("labels", {})[MSG_ID_LABEL] = (
            msg_id.decode() if isinstance(msg_id, bytes) else msg_id
        )
        return json.dumps(message).encode()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        while True:
            try:
                async for message in self._listen_once():
                    yield message
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # Redis restarted: jobs are in its AOF; reconnect and carry on.
                logger.warning("redis unavailable (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _listen_once(self) -> AsyncGenerator[AckableMessage, None]:
        async with Redis(connection_pool=self.connection_pool) as conn:
            while True:
                reclaimed = await conn.xautoclaim(
                    self.queue_name, self.consumer_group_name, self.consumer_name,
                    min_idle_time=self.idle_timeout, count=self.unacknowledged_batch_size,
                )
                fetched = await conn.xreadgroup(
                    self.consumer_group_name, self.consumer_name, {self.queue_name: ">"},
                    block=self.block, count=self.count,
                )
                batch = list(reclaimed[1]) + [m for _, msgs in fetched for m in msgs]
                for msg_id, fields in batch:
                    if not fields:  # entry deleted from the stream
                        await conn.xack(self.queue_name, self.consumer_group_name, msg_id)
                        continue
                    yield AckableMessage(
                        data=self._tagged(fields[b"data"], msg_id),
                        ack=self._ack_unless_abandoned(msg_id),
                    )

    async def renew(self, msg_id: str) -> None:
        """Heartbeat: reset the idle time of a message this worker is still working on."""
        async with Redis(connection_pool=self.connection_pool) as conn:
            await conn.xclaim(
                self.queue_name, self.consumer_group_name, self.consumer_name,
                min_idle_time=0, message_ids=[msg_id], justid=True,
            )


def make_broker(settings: Settings, redis_url: str, concurrency: int = 8) -> ReclaimingStreamBroker:
    backend = RedisAsyncResultBackend(
        redis_url, result_ex_time=settings.job_ttl_s, serializer=JSONSerializer(), prefix_str="ucai:result",
    )
    broker = ReclaimingStreamBroker(
        redis_url,
        queue_name=settings.queue_name,
        consumer_group_name="ucai-workers",
        consumer_id="0",  # a group created after jobs were queued still sees them
        idle_timeout=int(settings.redelivery_idle_s * 1000),
        xread_count=concurrency,
        xread_block=1000,
    )
    return broker.with_result_backend(backend).with_serializer(JSONSerializer())
