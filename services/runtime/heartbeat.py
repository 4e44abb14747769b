"""The worker's own heartbeat: `ucai:worker:{name}` in Redis, rewritten every interval while the worker consumes jobs.

A container healthcheck that only pings Redis says nothing about the worker: a worker whose receive loop died, or that
never started, looks healthy. So the worker process writes this key (a JSON `WorkerHeartbeat`, expiring after three
intervals) from a task that runs alongside its receiver, and `python -m services.runtime.healthcheck` reads it.

The name is stable across the check and the worker it checks: `UCAI_WORKER_NAME`, else the host name — in compose each
replica is its own container, with its own host name. (The broker's stream consumer name is a fresh uuid per process,
so the check could not know it; it is recorded in the heartbeat.) Several workers on one host without
UCAI_WORKER_NAME (`ucai up --workers N`) share one key: any of them keeps it fresh.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from pydantic import BaseModel
from redis.asyncio import Redis

from ucai.settings import Settings

log = logging.getLogger("ucai.worker")

TTL_BEATS = 3  # a key outlives two missed beats: a slow Redis round trip does not make a live worker unhealthy


class WorkerHeartbeat(BaseModel):
    """What a worker writes each beat (JSON)."""

    name: str
    consumer: str  # the broker's stream consumer name
    queue: str
    pid: int
    host: str
    started_at: float  # unix time
    last_beat: float  # unix time
    interval_s: float
    jobs_in_flight: int | None = None  # stream entries this consumer holds (None: could not be read this beat)


def worker_name(settings: Settings) -> str:
    return settings.worker_name or socket.gethostname()


def heartbeat_key(name: str) -> str:
    return f"ucai:worker:{name}"


def ttl_s(settings: Settings) -> float:
    return TTL_BEATS * settings.worker_heartbeat_s


class Heartbeat:
    """Writes the heartbeat every `worker_heartbeat_s` from `start()` until `stop()` (which deletes the key, so a
    stopped worker is unhealthy at once rather than after the TTL), and only while `receiver` (the task that consumes
    the stream) runs: a worker whose receive loop died stops beating."""

    def __init__(self, redis: Redis, settings: Settings, consumer: str, group: str,
                 receiver: asyncio.Task | None = None):
        self.redis = redis
        self.receiver = receiver
        self.settings = settings
        self.group = group
        self.key = heartbeat_key(worker_name(settings))
        self.beat = WorkerHeartbeat(name=worker_name(settings), consumer=consumer, queue=settings.queue_name,
                                    pid=os.getpid(), host=socket.gethostname(), started_at=time.time(),
                                    last_beat=0.0, interval_s=settings.worker_heartbeat_s)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # Redis away: the key expires by itself
            await asyncio.wait_for(self.redis.delete(self.key), timeout=2.0)

    async def write(self) -> None:
        self.beat.last_beat = time.time()
        self.beat.jobs_in_flight = await self._in_flight()
        await self.redis.set(self.key, self.beat.model_dump_json(), px=int(ttl_s(self.settings) * 1000))

    async def _in_flight(self) -> int | None:
        # A worker holds only the entries it runs (ReclaimingStreamBroker), so its pending count is its jobs.
        try:
            summary = await self.redis.xpending(self.settings.queue_name, self.group)
        except Exception:  # noqa: BLE001 - e.g. no stream yet: the beat itself matters more
            return None
        for consumer in summary.get("consumers") or []:
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name == self.beat.consumer:
                return int(consumer["pending"])
        return 0

    async def _run(self) -> None:
        while self.receiver is None or not self.receiver.done():
            try:
                await self.write()
            except Exception as exc:  # noqa: BLE001 - Redis away: the key expires and the check reports it
                log.warning("heartbeat not written (%s)", exc)
            await asyncio.sleep(self.settings.worker_heartbeat_s)
        log.error("the receive loop has stopped: no more heartbeats")
        with contextlib.suppress(Exception):
            await self.redis.delete(self.key)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def verdict(beat: WorkerHeartbeat | None, name: str, settings: Settings, now: float | None = None) -> str | None:
    """Why the worker `name` is unhealthy, or None when its heartbeat is fresh."""
    if beat is None:
        return (f"no heartbeat of worker {name!r} ({heartbeat_key(name)}): it is not running, or has not beaten "
                f"for {ttl_s(settings):g}s")
    age = (now if now is not None else time.time()) - beat.last_beat
    if age > TTL_BEATS * beat.interval_s:
        return f"worker {name!r} last beat {age:.1f}s ago (more than {TTL_BEATS} intervals of {beat.interval_s:g}s)"
    if beat.host == socket.gethostname() and not _pid_alive(beat.pid):
        return f"worker {name!r} (pid {beat.pid}) has exited; its heartbeat has not expired yet"
    return None


async def check(redis: Redis, settings: Settings) -> str | None:
    """Reads this container's worker heartbeat: None when fresh, else what is wrong."""
    name = worker_name(settings)
    raw = await redis.get(heartbeat_key(name))
    beat = WorkerHeartbeat.model_validate_json(raw) if raw else None
    return verdict(beat, name, settings)
