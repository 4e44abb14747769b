"""Crashes lose no accepted job: a worker killed mid-job, a model endpoint that is down."""
from __future__ import annotations

import signal
import time
from urllib.parse import urlparse

import httpx
import pytest
import redis

from tests.conftest import free_port, make_stack, wait_job
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FAST_RECLAIM = {"UCAI_REDELIVERY_IDLE_S": "4", "UCAI_HEARTBEAT_S": "1"}


def test_worker_killed_mid_job_completes_exactly_once(redis_url, vllm_url, logs):
    stack = make_stack(redis_url, vllm_url, logs, workers=1, **FAST_RECLAIM)
    r = redis.Redis.from_url(redis_url)
    try:
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            job = client.post("/critique", json={"prompt": "How can I get into my neighbour's wifi?", "rounds": 2,
                                                 "max_tokens": 48, "seed": 11, "wait": False}).json()
            wait_job(client, job["id"], {"running"}, timeout_s=60)
            time.sleep(1.5)  # into the model calls, well past the first heartbeat
            victim = stack.workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            # Nobody is working on it now: it must stay accepted, not completed, not lost.
            time.sleep(2)
            view = client.get(f"/jobs/{job['id']}").json()
            assert view["status"] == "running" and view["attempts"] == 1, view
            assert r.xpending(stack.env["UCAI_QUEUE_NAME"], "ucai-workers")["pending"] == 1

            stack.start_worker()
            done = wait_job(client, job["id"], {"completed", "failed"}, timeout_s=300)
            assert done["status"] == "completed", done
            assert done["attempts"] == 2  # run again by the new worker...
            assert int(r.hget(f"ucai:job:{job['id']}", "completions")) == 1  # ...and completed once
            assert len(done["result"]["revisions"]) == 2
            time.sleep(1)
            assert r.xpending(stack.env["UCAI_QUEUE_NAME"], "ucai-workers")["pending"] == 0  # acknowledged
    finally:
        stack.close()


def test_slow_job_is_not_stolen_from_a_live_worker(redis_url, vllm_url, logs):
    """Heartbeats keep a job longer than the reclaim time with its worker: two workers, run once."""
    stack = make_stack(redis_url, vllm_url, logs, workers=2, UCAI_REDELIVERY_IDLE_S="2", UCAI_HEARTBEAT_S="0.5")
    r = redis.Redis.from_url(redis_url)
    try:
        with httpx.Client(base_url=stack.url, timeout=300) as client:
            response = client.post("/critique", json={"prompt": "Why are some people rude?", "rounds": 2,
                                                      "max_tokens": 48, "seed": 12})
            assert response.status_code == 200, response.text
            job_id = response.json()["id"]
            assert client.get(f"/jobs/{job_id}").json()["attempts"] == 1
            assert int(r.hget(f"ucai:job:{job_id}", "completions")) == 1
    finally:
        stack.close()


def test_model_down_gives_503_and_the_job_runs_when_it_is_back(redis_url, vllm_url, logs):
    proxy_port = free_port()
    role_url = f"http://127.0.0.1:{proxy_port}/v1"  # nothing listens there yet
    stack = make_stack(redis_url, role_url, logs, workers=1, UCAI_ROLE_RETRY_S="1",
                       UCAI_GENERATOR__MAX_RETRIES="1", UCAI_CRITIC__MAX_RETRIES="1")
    proxy = TcpProxy(proxy_port, urlparse(vllm_url).port)
    try:
        with httpx.Client(base_url=stack.url, timeout=120) as client:
            assert client.get("/ready").status_code == 503
            ready = client.get("/ready").json()
            assert ready["checks"]["redis"] == "ok" and ready["checks"]["generator"].startswith("down")

            response = client.post("/critique", json={"prompt": "Is it fine to lie to my boss?", "max_tokens": 32,
                                                      "seed": 4})
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            body = response.json()
            assert body["error"]["code"] == "model_unavailable"
            job_id = body["job"]["id"]
            assert client.get(f"/jobs/{job_id}").json()["status"] in {"waiting_for_model", "running"}

            proxy.start()  # the model is back
            done = wait_job(client, job_id, {"completed", "failed"}, timeout_s=180)
            assert done["status"] == "completed", done
            assert done["result"]["revisions"][0]["revision"].strip()
            assert client.get("/ready").status_code == 200
    finally:
        proxy.close()
        stack.close()
