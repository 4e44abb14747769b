"""An accepted job survives a SIGKILL of Redis (issue 13, defect 2): not only a graceful restart.

Redis writes its append-only file before it answers (write(2) into the OS's page cache; with `appendfsync always` also
fsync before the reply), so a killed Redis process loses nothing it acknowledged, whatever the fsync mode: the
kernel still holds the writes. What the modes differ in is a power loss or kernel crash (README: Reliability).
Real redis-server processes (`ucai.local_redis.start_redis`), SIGKILLed and restarted on the same data folder.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from services.runtime.local_stack import free_port, stop
from tests.conftest import SERVED_NAME, make_stack
from tests.openai_test_server import OpenAITestServer
from ucai.local_redis import start_redis
from ucai.queue import JobStore, make_broker
from ucai.settings import Settings

N_JOBS = 200


def sigkill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


async def _submit_all(url: str, stream: str, n: int) -> list[str]:
    """What the gateway does before it answers 202: record + stream entry in one step (`JobStore.submit`)."""
    broker = make_broker(Settings(redis_url=url, queue_name=stream), url)
    async with Redis.from_url(url) as client:
        store = JobStore(client, 3600)
        ids = [str(uuid.uuid4()) for _ in range(n)]

        clients = asyncio.Semaphore(32)  # concurrent, like many clients (within the pool's connections)

        async def one(job_id: str) -> None:
            message = broker.message_for("critique", job_id, {"job_id": job_id})
            async with clients:
                assert await store.submit(job_id, "critique", '{"prompt": "hi"}', "", stream, message)

        await asyncio.gather(*(one(job_id) for job_id in ids))
    return ids


@pytest.mark.parametrize("appendfsync", ["always", "everysec", "no"])
def test_every_accepted_job_survives_sigkill_of_redis(tmp_path, appendfsync):
    port, data = free_port(), tmp_path / "redis"
    url, stream = f"redis://127.0.0.1:{port}/0", f"ucai:test:{uuid.uuid4().hex[:8]}"
    process = start_redis(data, port, appendfsync=appendfsync)
    try:
        with redis.Redis.from_url(url) as client:
            assert client.config_get("appendfsync")["appendfsync"] == appendfsync
            assert client.config_get("appendonly")["appendonly"] == "yes"
        ids = asyncio.run(_submit_all(url, stream, N_JOBS))
        sigkill(process)  # at once: no graceful shutdown, no rewrite, no final fsync
        process = start_redis(data, port, appendfsync=appendfsync)
        with redis.Redis.from_url(url) as client:
            missing = [job_id for job_id in ids if client.hget(f"ucai:job:{job_id}", "status") is None]
            assert not missing, f"{len(missing)} of {N_JOBS} accepted job records lost ({appendfsync})"
            entries = client.xrange(stream)
            assert len(entries) == N_JOBS, f"{len(entries)} of {N_JOBS} stream entries left ({appendfsync})"
            queued = {job_id for job_id in ids if any(job_id.encode() in fields[b"data"] for _, fields in entries)}
            assert queued == set(ids)
            assert all(client.ttl(f"ucai:job:{job_id}") > 0 for job_id in ids[:20]), "records keep their expiry"
    finally:
        stop(process)


def test_start_redis_uses_the_appendfsync_setting(tmp_path, monkeypatch):
    from ucai.settings import get_settings

    monkeypatch.setenv("UCAI_REDIS_APPENDFSYNC", "always")
    get_settings.cache_clear()
    port = free_port()
    try:
        process = start_redis(tmp_path / "redis", port)
        try:
            with redis.Redis(port=port) as client:
                assert client.config_get("appendfsync")["appendfsync"] == "always"
        finally:
            stop(process)
    finally:
        get_settings.cache_clear()


def _poll(api: httpx.Client, job_id: str, timeout_s: float) -> dict:
    """The job's view once final; a 503 while Redis comes back is retried."""
    deadline, view = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        response = api.get(f"/jobs/{job_id}")
        if response.status_code == 200:
            view = response.json()
            if view["status"] in {"completed", "failed"}:
                return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished: {view}")


@pytest.mark.contract
def test_jobs_accepted_by_the_gateway_run_after_redis_is_killed(tmp_path, logs: Path):
    """POST → 202 (nothing has run: no worker yet), SIGKILL Redis, restart it: a worker then completes every job."""
    port, data = free_port(), tmp_path / "redis"
    process = start_redis(data, port, appendfsync="always")
    server = OpenAITestServer(model=SERVED_NAME, max_model_len=4096).start()
    stack = make_stack(f"redis://127.0.0.1:{port}/0", server.url, logs, workers=0, UCAI_ROLE_RETRY_S="1",
                       UCAI_WORKER_METRICS_PORT="0")
    try:
        with httpx.Client(base_url=stack.url, timeout=60) as api:
            ids = []
            for i in range(12):
                response = api.post("/critique", json={"prompt": f"Is it fine to read my partner's mail? ({i})",
                                                       "max_tokens": 8, "seed": i, "wait": False})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            sigkill(process)
            process = start_redis(data, port, appendfsync="always")
            stack.start_worker()
            views = [_poll(api, job_id, 120) for job_id in ids]
        assert [v["status"] for v in views] == ["completed"] * len(ids), views
        with redis.Redis(port=port) as client:
            assert [client.hget(f"ucai:job:{job_id}", "completions") for job_id in ids] == [b"1"] * len(ids)
    finally:
        stack.close()
        server.stop()
        stop(process)
