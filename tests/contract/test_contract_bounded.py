"""A bounded Redis (issue 13, defect 3), on a real Redis, gateway and worker processes:

- a job names its constitution by content hash, stored once (`ucai:constitution:{hash}`, with an expiry past the
  job's); the stream entry and the job record carry no constitution; the worker runs it by hash, and fails a job
  whose constitution is gone with `constitution_missing` (and its batch record);
- acknowledged stream entries are trimmed by the workers; undelivered and pending ones never are;
- everything a job and a batch write expires;
- a queue over `max_queue_depth` answers 429 `queue_full` with Retry-After, and a batch that would overflow it is
  refused whole, writing nothing; a resubmitted batch is not refused;
- /rank's fan-out is bounded by settings (422);
- a batch too large for one request body goes in parts (`ucai data generate`'s client) instead of a 413.
"""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis
from redis.asyncio import Redis

from tests.conftest import Stack, make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope, batch_results, marker, wait_batch, wait_queue_idle
from ucai.constitutions import load_constitutions
from ucai.datasets.generate import batch_body, run_batches, split_body
from ucai.queue import JobStore, make_broker
from ucai.queue.bounds import trim_acknowledged
from ucai.queue.constitutions import ConstitutionStore
from ucai.schemas import BatchRef, JobMessage
from ucai.settings import Settings

pytestmark = pytest.mark.contract

DEPTH = 6
BODY_LIMIT = 20_000


@pytest.fixture(scope="module")
def held(redis_url, model_server, logs) -> Stack:
    """A gateway whose queue nobody consumes (no worker), with small bounds."""
    stack = make_stack(redis_url, model_server.url, logs, workers=0, UCAI_MAX_QUEUE_DEPTH=str(DEPTH),
                       UCAI_QUEUE_FULL_RETRY_AFTER_S="7", UCAI_RANK_MAX_CANDIDATES="4",
                       UCAI_RANK_MAX_JUDGEMENTS="12", **FAST_ROLES)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def running(redis_url, model_server, logs) -> Stack:
    """Gateway + worker that trims every acknowledged entry at once, behind a small body limit."""
    stack = make_stack(redis_url, model_server.url, logs, workers=1, UCAI_QUEUE_RETAIN_ACKED_S="0",
                       UCAI_QUEUE_TRIM_INTERVAL_S="0.2", UCAI_MAX_BODY_BYTES=str(BODY_LIMIT), **FAST_ROLES)
    yield stack
    stack.close()


def entries_added(client: redis.Redis, queue: str) -> int:
    """Entries ever added to the stream (trimming does not lower it)."""
    return client.xinfo_stream(queue)["entries-added"] if client.exists(queue) else 0


def categorise_records(word: str, n: int, size: int = 0) -> list[dict]:
    return [{"id": f"r{i:03d}", "prompt": f"Request {i} about my neighbour {word} " + "x" * size} for i in range(n)]


def test_a_job_names_its_constitution_by_hash_stored_once(held, redis_client):
    word, ethical = marker(), load_constitutions()["ethical"]
    with httpx.Client(base_url=held.url, timeout=30) as api:
        response = api.post("/critique", json={"prompt": f"Tell me about {word}", "wait": False})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    queue = held.env["UCAI_QUEUE_NAME"]
    entries = [fields[b"data"] for _, fields in redis_client.xrange(queue) if job_id.encode() in fields[b"data"]]
    assert len(entries) == 1
    payload = json.loads(entries[0])["args"][0]
    assert payload["constitution_hash"] == ethical.content_hash and "constitution" not in payload
    principle_text = ethical.principles[0].pairs[0].critique
    assert principle_text.encode() not in entries[0] and len(entries[0]) < 1500, len(entries[0])
    record = redis_client.hgetall(f"ucai:job:{job_id}")
    assert sum(len(v) for v in record.values()) < 500, record  # no copy of the request, nor of the constitution
    key = f"ucai:constitution:{ethical.content_hash}"
    stored = redis_client.get(key)
    assert stored is not None and json.loads(stored)["name"] == "ethical"
    # It outlives every job that names it (refreshed by each submit).
    assert redis_client.ttl(key) > redis_client.ttl(f"ucai:job:{job_id}") > 0


def test_the_worker_runs_a_job_by_hash_and_fails_one_whose_constitution_is_gone(running, redis_client, redis_url):
    word = marker()
    with httpx.Client(base_url=running.url, timeout=60) as api:
        ok = api.post("/critique", json={"prompt": f"Hello {word}", "rounds": 1, "max_tokens": 4})
        assert ok.status_code == 200, ok.text
        assert ok.json()["constitution_hash"] == load_constitutions()["ethical"].content_hash

        # A job naming a constitution that is not stored (expired with old jobs, or deleted): submitted as the
        # gateway would, as one record of a batch.
        settings = Settings(queue_name=running.env["UCAI_QUEUE_NAME"])
        batch = api.post("/batches", json={"stage": "categorise", "input": {"records": [
            {"id": "only", "prompt": f"Held {word}"}]}})
        batch_id = batch.json()["id"]
        wait_batch(api, batch_id)
        missing_hash = "0123456789abcdef"

        async def submit() -> str:
            async with Redis.from_url(redis_url) as client:
                assert await client.get(ConstitutionStore.key(missing_hash)) is None
                broker = make_broker(settings, redis_url)
                job_id = f"missing-{marker()}"
                message = JobMessage(job_id=job_id, constitution_hash=missing_hash,
                                     batch=BatchRef(batch_id=batch_id, record_id="ghost"),
                                     request={"prompt": f"Orphan {word}", "wait": False})
                data = broker.message_for("ucai.categorise", job_id, message.model_dump(mode="json"))
                assert await JobStore(client, 600).submit(job_id, "categorise", "", "", broker.queue_name, data)
                return job_id

        job_id = asyncio.run(submit())
        deadline = time.monotonic() + 30
        while (view := api.get(f"/jobs/{job_id}").json())["status"] not in {"completed", "failed"}:
            assert time.monotonic() < deadline, view
            time.sleep(0.1)
        assert view["status"] == "failed" and view["error"]["code"] == "constitution_missing", view
        assert missing_hash in view["error"]["message"]
        assert redis_client.hget(f"ucai:batch:{batch_id}:failed", "ghost") is not None  # its record too, once


def test_acknowledged_entries_are_trimmed(running, redis_client):
    word, queue = marker(), running.env["UCAI_QUEUE_NAME"]
    with httpx.Client(base_url=running.url, timeout=60) as api:
        view = api.post("/batches", json={"stage": "categorise", "input": {"records": categorise_records(word, 12)}})
        assert view.status_code == 202, view.text
        done = wait_batch(api, view.json()["id"])
        assert done["status"] == "completed" and done["done"] == 12, done
    wait_queue_idle(redis_client, queue)
    assert entries_added(redis_client, queue) >= 12
    deadline = time.monotonic() + 10
    while redis_client.xlen(queue) > 0:  # the worker trims every 0.2 s (retention 0)
        assert time.monotonic() < deadline, f"{redis_client.xlen(queue)} acknowledged entries never trimmed"
        time.sleep(0.1)


def test_only_acknowledged_entries_are_ever_trimmed(redis_url):
    """Undelivered and pending (delivered, not acknowledged) entries stay, whatever the retention."""
    stream = f"ucai:test:trim:{marker()}"

    async def check() -> None:
        async with Redis.from_url(redis_url) as client:
            ids = [await client.xadd(stream, {"data": str(i)}) for i in range(6)]
            assert await trim_acknowledged(client, stream, 0) == 0  # no consumer group: nothing read, nothing goes
            await client.xgroup_create(stream, "g", id="0")
            delivered = await client.xreadgroup("g", "c", {stream: ">"}, count=4)
            assert [m for m, _ in delivered[0][1]] == ids[:4]
            await client.xack(stream, "g", ids[0], ids[2])  # acked: 0 and 2; pending: 1 and 3; undelivered: 4, 5
            assert await trim_acknowledged(client, stream, 3600) == 0  # within the retention: kept
            assert await trim_acknowledged(client, stream, 0) == 1  # only entry 0: entry 2 is after pending entry 1
            assert [m for m, _ in await client.xrange(stream)] == ids[1:]
            await client.xack(stream, "g", ids[1], ids[3])
            assert await trim_acknowledged(client, stream, 0) == 3  # 1, 2, 3; never the undelivered 4 and 5
            assert [m for m, _ in await client.xrange(stream)] == ids[4:]
            fresh = await client.xreadgroup("g", "c", {stream: ">"}, count=10)
            assert [m for m, _ in fresh[0][1]] == ids[4:]  # still delivered after the trims
            await client.delete(stream)

    asyncio.run(check())


def test_everything_a_batch_writes_expires(running, redis_client):
    word = marker()
    with httpx.Client(base_url=running.url, timeout=60) as api:
        view = api.post("/batches", json={"stage": "categorise", "input": {"records": categorise_records(word, 3)}})
        batch_id = view.json()["id"]
        wait_batch(api, batch_id)
        jobs = {r["id"]: r["result"]["id"] for r in batch_results(api, batch_id)}
    keys = [f"ucai:batch:{batch_id}", f"ucai:batch:{batch_id}:ids", f"ucai:batch:{batch_id}:results",
            f"ucai:constitution:{load_constitutions()['ethical'].content_hash}",
            *(f"ucai:job:{job_id}" for job_id in jobs.values())]
    for key in keys:
        assert redis_client.exists(key), key
        assert redis_client.ttl(key) > 0, key
    assert not redis_client.exists(*(f"ucai:job:{job_id}:lease" for job_id in jobs.values()))


def test_rank_fan_out_is_bounded(held):
    word = marker()
    answers = [f"Answer {i} {word}" for i in range(5)]
    with httpx.Client(base_url=held.url, timeout=30) as api:
        too_many = api.post("/rank", json={"prompt": f"Q {word}", "responses": answers, "wait": False})
        assert_envelope(too_many, 422, code="too_many_candidates", param="responses")
        # 4 answers: 6 pairs × ensemble 4 = 24 judgements > 12
        wide = api.post("/rank", json={"prompt": f"Q {word}", "responses": answers[:4], "ensemble": 4, "wait": False})
        body = assert_envelope(wide, 422, code="rank_fan_out", param="max_pairs")
        assert "max_pairs ≤ 3" in body["error"]["message"]
        budget = api.post("/rank", json={"prompt": f"Q {word}", "responses": answers[:4], "ensemble": 4,
                                         "max_pairs": 3, "wait": False})
        assert budget.status_code == 202, budget.text


def test_a_full_queue_answers_429_and_a_batch_that_would_overflow_it_writes_nothing(held, redis_client):
    """Runs last of the `held` stack: it fills its queue."""
    word, queue = marker(), held.env["UCAI_QUEUE_NAME"]
    room = DEPTH - redis_client.xlen(queue)  # no worker: every entry is undelivered
    assert room >= 2
    key = marker()
    with httpx.Client(base_url=held.url, timeout=30) as api:
        batches_before = set(redis_client.scan_iter("ucai:batch:*"))
        added = entries_added(redis_client, queue)
        over = api.post("/batches", json={"stage": "categorise", "idempotency_key": marker(),
                                          "input": {"records": categorise_records(word, room + 1)}})
        assert_envelope(over, 429, code="queue_full")
        assert over.headers["retry-after"] == "7"
        assert entries_added(redis_client, queue) == added  # refused whole: nothing queued...
        assert set(redis_client.scan_iter("ucai:batch:*")) == batches_before  # ...and no batch created

        fits = api.post("/batches", json={"stage": "categorise", "idempotency_key": key,
                                          "input": {"records": categorise_records(word, room)}})
        assert fits.status_code == 202, fits.text
        assert entries_added(redis_client, queue) == added + room
        single = api.post("/critique", json={"prompt": f"One more {word}", "wait": False})
        assert_envelope(single, 429, code="queue_full")
        assert single.headers["retry-after"] == "7"
        again = api.post("/batches", json={"stage": "categorise", "idempotency_key": key,
                                           "input": {"records": categorise_records(word, room)}})
        assert again.status_code == 202 and again.json()["id"] == fits.json()["id"]  # a resubmit is not refused
        assert entries_added(redis_client, queue) == added + room


def test_a_batch_too_large_for_one_request_goes_in_parts(running, model_server):
    word = marker()
    items = categorise_records(word, 150, size=100)
    body = batch_body("categorise", "ethical", items, {})
    assert len(json.dumps(body)) > BODY_LIMIT  # one request would be refused (413)
    with httpx.Client(base_url=running.url, timeout=30) as api:
        assert_envelope(api.post("/batches", json=body), 413)
    (view, lines), = run_batches(running.url, [body], poll_s=0.2)
    assert view["status"] == "completed" and view["total"] == 150 and view["done"] == 150, view
    assert len(view["ids"]) > 1
    assert [line["id"] for line in lines] == [r["id"] for r in items]  # every record once, in input order
    assert model_server.count("chat", containing=word, status=200) == 150
    # The split depends only on the records: rerunning resumes the same parts.
    parts = split_body(body, 8_000)
    assert len(parts) > 2 and parts == split_body(body, 8_000)
    assert len({p["idempotency_key"] for p in parts}) == len(parts)
    assert [r for p in parts for r in p["input"]["records"]] == items
