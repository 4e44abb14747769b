"""The worker's container healthcheck (`python -m services.runtime.healthcheck`) checks the worker, not only Redis
(issue 13, compose faults): it passes while this worker's receive loop runs and fails before it starts, once it is
killed, and once it stopped. Real redis-server, real worker and check subprocesses."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from services.runtime.local_stack import service_env, start_worker, stop

pytestmark = pytest.mark.integration  # real redis-server and worker processes, and heartbeat timers: half a minute

# The key then lives 6 s: long enough that a healthcheck process starting slowly on a loaded 2-core machine still
# finds a killed worker's key (and so tells "its process has exited" from "no heartbeat").
BEAT_S = 2.0


def _env(redis_url: str, name: str, **extra: str) -> dict[str, str]:
    env = service_env(**{"REDIS_URL": redis_url, "UCAI_QUEUE_NAME": f"ucai:test:{uuid.uuid4().hex[:8]}",
                         "UCAI_WORKER_NAME": name, "UCAI_WORKER_HEARTBEAT_S": str(BEAT_S),
                         "UCAI_WORKER_METRICS_PORT": "0", **extra})
    env.pop("UCAI_REDIS_URL", None)
    return env


def check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.runtime.healthcheck"], env=env, capture_output=True,
                          text=True, timeout=60)


def wait_check(env: dict[str, str], want_rc: int, worker: subprocess.Popen | None, log: Path,
               timeout_s: float = 60) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check(env)
        if result.returncode == want_rc:
            return result
        if worker is not None and worker.poll() is not None:
            pytest.fail(f"worker exited with {worker.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the healthcheck never exited {want_rc}; last: rc {result.returncode} {result.stderr[-500:]}")
        time.sleep(0.3)


@pytest.fixture
def client(redis_url) -> redis.Redis:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_check_fails_without_a_worker_passes_while_it_runs_and_fails_once_it_is_killed(redis_url, client, tmp_path):
    name = f"w-{uuid.uuid4().hex[:8]}"
    env = _env(redis_url, name)
    key = f"ucai:worker:{name}"

    before = check(env)  # Redis answers, but no worker runs: unhealthy
    assert before.returncode == 1, (before.stdout, before.stderr)
    assert "no heartbeat" in before.stderr and name in before.stderr

    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        healthy = wait_check(env, 0, worker, log)
        assert name in healthy.stdout
        beat = json.loads(client.get(key))
        assert beat["pid"] == worker.pid and beat["name"] == name and beat["queue"] == env["UCAI_QUEUE_NAME"]
        assert beat["jobs_in_flight"] == 0 and beat["consumer"]
        assert 0 < client.pttl(key) <= 3 * BEAT_S * 1000
        first = beat["last_beat"]
        time.sleep(3 * BEAT_S)  # longer than the TTL: only a worker that keeps beating stays healthy
        assert check(env).returncode == 0
        assert json.loads(client.get(key))["last_beat"] > first

        worker.send_signal(signal.SIGKILL)  # no chance to clean up
        worker.wait(10)
        dead = check(env)  # its key has not expired yet, but its process is gone
        assert dead.returncode == 1 and "has exited" in dead.stderr, dead.stderr
        time.sleep(3 * BEAT_S + 0.2)
        assert client.exists(key) == 0, "the key of a dead worker expires after three beats"
        gone = check(env)
        assert gone.returncode == 1 and "no heartbeat" in gone.stderr
    finally:
        stop(worker)


def test_a_worker_that_stops_is_unhealthy_at_once(redis_url, client, tmp_path):
    name = f"w-{uuid.uuid4().hex[:8]}"
    env = _env(redis_url, name, UCAI_WORKER_HEARTBEAT_S="30")  # a TTL the test never waits out
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_check(env, 0, worker, log)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert client.exists(f"ucai:worker:{name}") == 0, "a stopping worker deletes its heartbeat"
        result = check(env)
        assert result.returncode == 1 and "no heartbeat" in result.stderr
    finally:
        stop(worker)


def test_a_stale_heartbeat_is_unhealthy(redis_url, client):
    """A worker on another host (the check cannot see its process) is judged by the age of its last beat."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    env = _env(redis_url, name, UCAI_WORKER_HEARTBEAT_S="20")  # fresh for a minute: a slow check start is no matter
    beat = {"name": name, "consumer": "c", "queue": "q", "pid": 1, "host": "elsewhere", "started_at": time.time(),
            "last_beat": time.time(), "interval_s": 20, "jobs_in_flight": 0}
    client.set(f"ucai:worker:{name}", json.dumps(beat), ex=60)
    assert check(env).returncode == 0
    beat["last_beat"] -= 200  # stopped beating, key kept (e.g. written with a longer TTL by a bad clock)
    client.set(f"ucai:worker:{name}", json.dumps(beat), ex=60)
    stale = check(env)
    assert stale.returncode == 1 and "last beat" in stale.stderr, stale.stderr


def test_check_reports_an_unreachable_redis(tmp_path):
    from services.runtime.local_stack import free_port

    env = _env(f"redis://127.0.0.1:{free_port()}/0", "nobody", UCAI_REDIS_SOCKET_CONNECT_TIMEOUT_S="1")
    result = check(env)
    assert result.returncode == 1 and "unhealthy" in result.stderr


def test_the_healthcheck_imports_none_of_the_workers_machinery():
    """Compose runs it every 15 s in each worker container: it must stay a light process (heartbeat, Redis, settings),
    not start by importing the queue's broker, the job kinds and their HTTP clients."""
    heavy = ["taskiq", "aiohttp", "httpx", "services.job_kinds", "ucai.queue", "services.runtime.worker"]
    probe = ("import sys, services.runtime.healthcheck; "
             f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the healthcheck imports {result.stdout.strip()}"
