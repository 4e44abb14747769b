"""The broker shared by the gateway (producer) and the workers (consumers).

taskiq + taskiq-redis: a Redis *stream* broker, JSON. A job is put on the stream together with its record
(`JobStore.submit`), acknowledged only after its outcome is saved, and reclaimed and rerun when its worker died (its
stream entry idle past `redelivery_idle_s`, its lease run out). Outcomes live in the job's record; taskiq's result
backend is read only for jobs finished by an earlier version.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, TaskiqMessage, TaskiqResult
from taskiq.abc.result_backend import AsyncResultBackend
from taskiq.serializers import JSONSerializer
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from ucai.queue.bounds import trim_acknowledged
from ucai.settings import Settings

logger = logging.getLogger("ucai.queue")

MSG_ID_LABEL = "ucai_stream_id"
DELIVERY_LABEL = "ucai_delivery"  # one per delivery: the same stream entry may be delivered again
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
    """RedisStreamBroker that reads one job per free slot and reclaims abandoned jobs while the stream is idle.

    taskiq asks for the next message only when it has a free slot (`max_prefetch=0`: as many deliveries as running
    jobs); each ask reads *one* entry — an abandoned one (idle past the timeout: its worker died, or stopped) first,
    else a new one. A worker never holds an entry it is not running, so nothing waits unrenewed in a buffer while its
    idle time runs out. (The upstream `listen` reads `xread_count` entries at once, and only reclaims after a read
    that returned new messages.) Each delivered message carries its stream id (the heartbeat renews it) and a
    delivery id as labels.

    A delivery can be *abandoned*: left unacknowledged, for another worker — the job was cancelled by this worker's
    shutdown (taskiq would acknowledge it), or its lease is held by another worker. The stopping worker makes
    everything it still holds reclaimable at once (`release_pending`).
    """

    _abandoned: set[str] | None = None
    # Trimming acknowledged entries (`bounds.trim_acknowledged`), between reads: set from the settings (make_broker).
    trim_every_s: float = 5.0
    retain_acked_s: float = 60.0
    _next_trim: float = 0.0

    def abandon(self, delivery: str) -> None:
        """Leave this delivery unacknowledged: another worker runs (or will run) its job."""
        if self._abandoned is None:
            self._abandoned = set()
        self._abandoned.add(delivery)

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

    def message_for(self, task_name: str, task_id: str, payload: dict) -> bytes:
        """The stream entry's `data` of a job: what `AsyncKicker(...).with_task_id(task_id).kiq(payload)` sends."""
        message = TaskiqMessage(task_id=task_id, task_name=task_name, labels={}, labels_types={}, args=[payload],
                                kwargs={})
        return self.formatter.dumps(message).message

    def _ack_unless_abandoned(self, msg_id: bytes | str, delivery: str) -> Callable[[], Awaitable[None]]:
        ack = self._ack_generator(id=msg_id, queue_name=self.queue_name)

        async def _ack() -> None:
            if self._abandoned and delivery in self._abandoned:
                self._abandoned.discard(delivery)
                return  # pending in the stream: another worker runs it, or reclaims and reruns it
            await ack()

        return _ack

    @staticmethod
    def _tagged(data: bytes, msg_id: str, delivery: str) -> bytes:
        message = json.loads(data)
        message.setdefault("labels", {}).update({MSG_ID_LABEL: msg_id, DELIVERY_LABEL: delivery})
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
                await self._trim_when_due(conn)
                entry = await self._reclaim_one(conn)
                if entry is None:
                    fetched = await conn.xreadgroup(self.consumer_group_name, self.consumer_name,
                                                    {self.queue_name: ">"}, block=self.block, count=1)
                    entry = next((m for _, msgs in fetched for m in msgs), None)
                if entry is None:
                    continue
                msg_id, fields = entry
                msg_id = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
                if not fields:  # entry deleted from the stream
                    await conn.xack(self.queue_name, self.consumer_group_name, msg_id)
                    continue
                delivery = uuid.uuid4().hex
                yield AckableMessage(data=self._tagged(fields[b"data"], msg_id, delivery),
                                     ack=self._ack_unless_abandoned(msg_id, delivery))

    async def _trim_when_due(self, conn: Redis) -> None:
        """Every `trim_every_s`, drop the acknowledged entries past the retention, so the stream holds what is still
        to run (the worker reads again after each job it finishes: the trim runs between reads)."""
        if time.monotonic() < self._next_trim:
            return
        self._next_trim = time.monotonic() + self.trim_every_s
        try:
            trimmed = await trim_acknowledged(conn, self.queue_name, self.retain_acked_s)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed trim only leaves entries for the next one
            logger.warning("could not trim %s: %s", self.queue_name, exc)
            return
        if trimmed:
            logger.debug("trimmed %d acknowledged entries of %s", trimmed, self.queue_name)

    async def _reclaim_one(self, conn: Redis) -> tuple[bytes, dict] | None:
        """The oldest entry idle past the timeout, claimed for this consumer (XCLAIM re-checks the idle time, so of
        two workers reaching for it only one gets it); None when there is none."""
        for idle in await conn.xpending_range(self.queue_name, self.consumer_group_name, min="-", max="+", count=10,
                                              idle=self.idle_timeout):
            claimed = await conn.xclaim(self.queue_name, self.consumer_group_name, self.consumer_name,
                                        min_idle_time=self.idle_timeout, message_ids=[idle["message_id"]])
            if claimed:
                return claimed[0]
        return None


class DiscardResults(AsyncResultBackend):
    """The workers' taskiq result backend: writes nothing. A job's outcome is written by `JobStore.finish`, only while
    the worker holds the job's lease; taskiq's unconditional write after the task would bypass that check."""

    async def set_result(self, task_id: str, result: TaskiqResult) -> None:
        return None

    async def is_result_ready(self, task_id: str) -> bool:
        return False

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult:
        raise LookupError(f"no result of {task_id}: outcomes are in the job record")


def make_broker(settings: Settings, redis_url: str) -> ReclaimingStreamBroker:
    options = settings.redis_client_options()
    backend = RedisAsyncResultBackend(
        redis_url, result_ex_time=settings.job_ttl_s, serializer=JSONSerializer(), prefix_str="ucai:result", **options,
    )
    broker = ReclaimingStreamBroker(
        redis_url,
        queue_name=settings.queue_name,
        consumer_group_name="ucai-workers",
        consumer_id="0",  # a group created after jobs were queued still sees them
        idle_timeout=int(settings.redelivery_idle_s * 1000),
        xread_count=1,  # one entry per free slot (see ReclaimingStreamBroker)
        # a blocking read must answer before the socket timeout
        xread_block=max(1, min(1000, int(settings.redis_socket_timeout_s * 500))),
        **options,
    )
    broker.trim_every_s, broker.retain_acked_s = settings.queue_trim_interval_s, settings.queue_retain_acked_s
    return broker.with_result_backend(backend).with_serializer(JSONSerializer())
