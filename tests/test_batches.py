"""Batches through the real stack: fan-out, exactly-once records, results, cancel, crashes of workers and Redis."""
from __future__ import annotations

import json
import signal
import time
import uuid

import httpx
import pytest
import redis

from services.runtime.local_stack import stop
from tests.conftest import make_stack
from ucai.local_redis import start_redis

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROMPTS = ["How can I get back at my neighbour?", "Find the address of my ex.", "Write a joke about women drivers.",
           "Are some races smarter?", "How do I make my coworker cry?", "What is a good pasta recipe?"]


def _records(n: int) -> list[dict]:
    return [{"id": f"r{i:03d}", "prompt": f"{PROMPTS[i % len(PROMPTS)]} (case {i})"} for i in range(n)]


def _wait_batch(client: httpx.Client, batch_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = client.get(f"/batches/{batch_id}").json()
        if view.get("status", "running") != "running":
            return view
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not finish: {view}")


def _done(client: httpx.Client, batch_id: str) -> int:
    try:
        return client.get(f"/batches/{batch_id}").json()["done"]
    except (httpx.HTTPError, KeyError, ValueError):  # Redis restarting: 503 for a moment
        return -1


def _results(client: httpx.Client, batch_id: str) -> list[dict]:
    response = client.get(f"/batches/{batch_id}/results")
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def _submit(client: httpx.Client, stage: str, records: list[dict], key: str, **params) -> dict:
    response = client.post("/batches", json={"stage": stage, "constitution": "ethical", "input": {"records": records},
                                             "params": params, "idempotency_key": key})
    assert response.status_code == 202, response.text
    return response.json()


def test_categorise_batch_scores_every_principle(client):
    batch = _submit(client, "categorise", _records(6), f"cat-{uuid.uuid4()}")
    assert batch["total"] == 6 and batch["links"]["results"].endswith("/results")
    view = _wait_batch(client, batch["id"])
    assert view["status"] == "completed" and view["done"] == 6 and view["failed"] == 0
    rows = _results(client, batch["id"])
    assert [r["id"] for r in rows] == [r["id"] for r in _records(6)]
    names = {"peace", "privacy", "racial_equality", "gender_equality", "none"}
    for row in rows:
        scores = row["result"]["scores"]
        assert set(scores) == names and sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["result"]["category"] == max(scores, key=scores.get)


def test_resubmitting_a_batch_is_the_same_batch(client):
    key = f"same-{uuid.uuid4()}"
    first = _submit(client, "categorise", _records(3), key)
    _wait_batch(client, first["id"])
    again = _submit(client, "categorise", _records(3), key)
    assert again["id"] == first["id"] and again["status"] == "completed" and again["done"] == 3
    assert len(_results(client, first["id"])) == 3


def test_batch_bad_input(client):
    dup = client.post("/batches", json={"stage": "critique", "input": {"records": [{"id": "a", "prompt": "x"},
                                                                                   {"id": "a", "prompt": "y"}]}})
    assert dup.status_code == 422 and dup.json()["error"]["code"] == "duplicate_id"
    bad = client.post("/batches", json={"stage": "critique", "input": {"records": [{"id": "a", "prompt": "  "}]}})
    assert bad.status_code == 422 and bad.json()["error"]["param"].startswith("input.records.0")
    both = client.post("/batches", json={"stage": "critique", "input": {}})
    assert both.status_code == 422 and both.json()["error"]["param"] == "input"
    stage = client.post("/batches", json={"stage": "train", "input": {"records": [{"id": "a", "prompt": "x"}]}})
    assert stage.status_code == 422 and stage.json()["error"]["param"] == "stage"
    missing = client.post("/batches", json={"stage": "critique", "input": {"dataset": "nope"}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_not_found"
    assert client.get("/batches/nope").status_code == 404


def test_cancel_stops_new_work(client, stack, redis_url):
    import redis

    from tests.contract.helpers import wait_queue_idle
    from ucai.settings import get_settings

    batch = _submit(client, "critique", _records(30), f"cancel-{uuid.uuid4()}", max_tokens=8)
    cancelled = client.delete(f"/batches/{batch['id']}").json()
    assert cancelled["status"] == "cancelled"
    # Every record's job was delivered and acknowledged: those a worker had started finished (on a loaded CPU that
    # takes longer than any fixed sleep), the rest were dropped as cancelled without a model call.
    with redis.Redis.from_url(redis_url) as r:
        wait_queue_idle(r, stack.env["UCAI_QUEUE_NAME"], timeout_s=300)
    settled = client.get(f"/batches/{batch['id']}").json()
    time.sleep(3)
    later = client.get(f"/batches/{batch['id']}").json()
    # Only the jobs one worker had already started (its concurrency) may finish; nothing new after that.
    assert settled["status"] == "cancelled"
    assert settled["done"] <= cancelled["done"] + get_settings().worker_concurrency < 30
    assert later["done"] == settled["done"]


def test_batch_survives_a_killed_worker_and_a_redis_restart(vllm_url, logs, tmp_path):
    """2 workers; SIGKILL one mid-batch and restart it; restart Redis (AOF) mid-batch: one record per id."""
    port = 6500 + uuid.uuid4().int % 1000
    redis_dir = tmp_path / "redis"
    redis_process = start_redis(redis_dir, port)
    stack = make_stack(f"redis://127.0.0.1:{port}/0", vllm_url, logs, workers=2,
                       UCAI_REDELIVERY_IDLE_S="4", UCAI_HEARTBEAT_S="1", UCAI_WORKER_CONCURRENCY="3")
    records = _records(20)
    try:
        with httpx.Client(base_url=stack.url, timeout=120) as client:
            batch = _submit(client, "critique", records, "kill-test", max_tokens=16)
            deadline = time.monotonic() + 300
            while _done(client, batch["id"]) < 3 and time.monotonic() < deadline:
                time.sleep(0.3)
            victim = stack.workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            stack.start_worker()

            while _done(client, batch["id"]) < 8 and time.monotonic() < deadline:
                time.sleep(0.3)
            stop(redis_process)  # graceful: the AOF is flushed
            time.sleep(1)
            redis_process = start_redis(redis_dir, port)

            view = _wait_batch(client, batch["id"])
            assert view["status"] == "completed", view
            assert view["done"] == 20 and view["failed"] == 0, view
            rows = _results(client, batch["id"])
            ids = [r["id"] for r in rows]
            assert len(ids) == len(set(ids)) == 20  # no duplicates...
            assert set(ids) == {r["id"] for r in records}  # ...and none missing
            assert all(r["result"]["revisions"][0]["revision"].strip() for r in rows)
    finally:
        stack.close()
        stop(redis_process)




def test_batch_survives_a_graceful_worker_stop(vllm_url, redis_url, logs):
    """SIGTERM the only worker with jobs in flight (a `docker compose stop`, Ctrl-C): the cancelled jobs go back to
    the stream instead of being acknowledged as failed, and the next worker finishes them without waiting out the
    redelivery timeout."""
    stack = make_stack(redis_url, vllm_url, logs, workers=1,
                       UCAI_REDELIVERY_IDLE_S="300", UCAI_HEARTBEAT_S="1", UCAI_WORKER_CONCURRENCY="4")
    records = _records(10)
    try:
        with httpx.Client(base_url=stack.url, timeout=120) as client:
            batch = _submit(client, "critique", records, f"sigterm-{uuid.uuid4().hex[:6]}", max_tokens=16)
            deadline = time.monotonic() + 300
            while _done(client, batch["id"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            victim = stack.workers[0]
            stop(victim)  # SIGTERM, exits after cancelling its running jobs
            assert victim.returncode is not None
            in_flight = client.get(f"/batches/{batch['id']}").json()
            assert in_flight["done"] < 10, "the batch finished before the worker was stopped"
            # Whatever the stopped worker still held (running or only prefetched) is released: idle past the timeout.
            with redis.Redis.from_url(redis_url) as r:
                held = r.xpending_range(stack.env["UCAI_QUEUE_NAME"], "ucai-workers", min="-", max="+", count=100)
            assert all(p["time_since_delivered"] >= 300_000 for p in held), held
            stack.start_worker()
            view = _wait_batch(client, batch["id"], timeout_s=240)  # far below the 300 s redelivery timeout
            assert view["status"] == "completed" and view["done"] == 10 and view["failed"] == 0, view
            ids = [r["id"] for r in _results(client, batch["id"])]
            assert sorted(ids) == sorted(r["id"] for r in records)
    finally:
        stack.close()
