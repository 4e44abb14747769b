"""Exactly-once execution and bookkeeping (issue 13), on a real Redis and real worker processes:

- a backlog whose jobs run longer than the reclaim time, on two workers, one SIGKILLed mid-way: every record is
  written once, and each job calls the model once per attempt (a second attempt only where its worker died);
- 32 concurrent submits with one idempotency key: one job, queued once, run once, never seen half-created;
- a batch record gets exactly one outcome however its writes race, and the batch turns `completed` only when every
  record has one; a cancel racing the last record leaves the batch `cancelled` (records that ran still count).
"""
from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import uuid

import httpx
import pytest
import redis
from redis.asyncio import Redis

from tests.conftest import make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import batch_results, marker, wait_batch, wait_queue_idle
from ucai.queue import BatchStore, JobOutcome, JobStore, job_id_for
from ucai.schemas import ErrorDetail

pytestmark = pytest.mark.contract

# Each record's model call takes one of these (s): jobs of unequal length free a worker's slots one at a time, and
# most run longer than the reclaim time below.
MODEL_DELAYS_S = (0.5, 4.0, 2.5)
RECLAIM = {"UCAI_REDELIVERY_IDLE_S": "2", "UCAI_HEARTBEAT_S": "0.4", "UCAI_WORKER_CONCURRENCY": "3"}


def _job(redis_client: redis.Redis, batch_id: str, record_id: str) -> dict[str, str]:
    raw = redis_client.hgetall(f"ucai:job:{job_id_for('batch-record', f'{batch_id}:{record_id}')}")
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"request" and k != b"outcome"}


def test_a_backlog_longer_than_the_reclaim_time_runs_each_job_once(redis_url, model_server, logs, redis_client):
    word, n = marker(), 21
    items = [{"id": f"r{i:02d}", "prompt": f"Request {i} about my neighbour {word}-{i:02d}."} for i in range(n)]
    stack = make_stack(redis_url, model_server.url, logs, workers=2, **{**FAST_ROLES, **RECLAIM})
    model_server.delay_containing = {f"{word}-{i:02d}.": MODEL_DELAYS_S[i % 3] for i in range(n)}
    try:
        with httpx.Client(base_url=stack.url, timeout=60) as api:
            view = api.post("/batches", json={"stage": "categorise", "constitution": "ethical",
                                              "input": {"records": items}}).json()
            deadline = time.monotonic() + 120
            while api.get(f"/batches/{view['id']}").json()["done"] < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            victim = stack.workers[0]
            victim.send_signal(signal.SIGKILL)  # dies holding its running jobs
            victim.wait(10)
            stack.start_worker()
            done = wait_batch(api, view["id"], timeout_s=180)
            assert done["status"] == "completed" and done["done"] == n and done["failed"] == 0, done
            rows = batch_results(api, view["id"])
            assert sorted(r["id"] for r in rows) == [r["id"] for r in items]
        wait_queue_idle(redis_client, stack.env["UCAI_QUEUE_NAME"], timeout_s=60)
    finally:
        model_server.delay_containing = {}
        stack.close()
    jobs = {item["id"]: _job(redis_client, view["id"], item["id"]) for item in items}
    calls = {item["id"]: model_server.count("chat", containing=f"{word}-{item['id'][1:]}.") for item in items}
    assert all(int(job["completions"]) == 1 for job in jobs.values()), jobs  # each record written once
    rerun = {rid: int(job["attempts"]) for rid, job in jobs.items() if int(job["attempts"]) != 1}
    # Only the jobs the killed worker was running are run again (at most its concurrency), once more each.
    assert len(rerun) <= int(RECLAIM["UCAI_WORKER_CONCURRENCY"]) and set(rerun.values()) <= {2}, (rerun, calls)
    # One model call per attempt: a job never runs twice at once; the killed attempt may have died before its call.
    assert all(calls[rid] == 1 for rid in jobs if rid not in rerun), (calls, rerun)
    assert all(1 <= calls[rid] <= 2 for rid in rerun), (calls, rerun)


def test_concurrent_submits_with_one_idempotency_key_make_one_job(api, contract_stack, model_server, redis_client):
    word, key = marker(), marker()
    body = {"prompt": f"Is it fine to read my partner's messages {word}?", "rounds": 1, "seed": 3, "wait": False}

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=contract_stack.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/critique", json=body, headers={"Idempotency-Key": key})
                                          for _ in range(32)))

    responses = asyncio.run(submit_all())
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    views = [r.json() for r in responses]
    assert len({v["id"] for v in views}) == 1, views
    job_id = views[0]["id"]
    # Never seen half-created: every answer shows the whole job record.
    assert all(v["kind"] == "critique" and v["created_at"] for v in views), views
    deadline = time.monotonic() + 60
    while api.get(f"/jobs/{job_id}").json()["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    job = api.get(f"/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["attempts"] == 1, job
    queue = contract_stack.env["UCAI_QUEUE_NAME"]
    queued = [m for m, fields in redis_client.xrange(queue) if job_id.encode() in fields[b"data"]]
    assert len(queued) == 1  # queued once...
    assert model_server.count("chat", containing=word) == 3  # ...and run once: answer, critique, revision
    assert redis_client.ttl(f"ucai:job:{job_id}") > 0


def test_a_job_is_never_seen_half_created(redis_url):
    """A reader racing each creation sees no job, or the whole record with its expiry — never a status alone."""
    ids = [f"half-{uuid.uuid4().hex[:8]}-{i}" for i in range(150)]
    partial: list[tuple[str, dict, int]] = []

    async def create(store: JobStore, barrier: threading.Barrier) -> None:
        for job_id in ids:
            barrier.wait()
            assert await store.create(job_id, "critique", "{}")

    async def read(store: JobStore, barrier: threading.Barrier) -> None:
        for job_id in ids:
            barrier.wait()
            for _ in range(30):
                raw, ttl = await store.get(job_id), await store.redis.ttl(store.key(job_id))
                if raw is not None and ("kind" not in raw or ttl < 0):
                    partial.append((job_id, raw, ttl))
                if raw is not None and "kind" in raw:
                    break

    _in_threads(redis_url, create, read, store=lambda client: JobStore(client, 600, None))
    assert not partial, partial[:3]


ONE = JobOutcome(ok=True, result={"category": "privacy"})
FAILED = JobOutcome.failure(ErrorDetail(message="refused", type="invalid_request_error",
                                        code="model_rejected_request"))


def _in_threads(redis_url: str, *writers, store=lambda client: BatchStore(client, 600)) -> None:
    """Run each async writer on its own thread, event loop and connection, started together: real races."""
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(writer) -> None:
        async def go() -> None:
            client = Redis.from_url(redis_url)
            try:
                await writer(store(client), barrier)
            finally:
                await client.aclose()
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_racing_outcomes_of_a_record_write_one_and_never_complete_the_batch_early(redis_url, redis_client):
    """Two writes of one record (a success and a failure) race, many times; the other record never gets one. Each
    time: the record has exactly one outcome, and the batch is still running (one record is pending)."""
    batches = [f"race-{uuid.uuid4().hex[:8]}-{i}" for i in range(150)]

    async def setup(store: BatchStore, _barrier) -> None:
        for batch_id in batches:
            assert await store.create(batch_id, {"stage": "categorise", "owner": ""}, ["r0", "r1"])

    def writer(outcome: JobOutcome):
        async def write(store: BatchStore, barrier: threading.Barrier) -> None:
            for batch_id in batches:
                barrier.wait()
                await store.record(batch_id, "r0", outcome)
        return write

    _in_threads(redis_url, setup)
    _in_threads(redis_url, writer(FAILED), writer(ONE))
    double, early = [], []
    for batch_id in batches:
        in_results = redis_client.hexists(f"ucai:batch:{batch_id}:results", "r0")
        in_failed = redis_client.hexists(f"ucai:batch:{batch_id}:failed", "r0")
        if in_results == in_failed:
            double.append(batch_id)
        if redis_client.hget(f"ucai:batch:{batch_id}", "status") != b"running":
            early.append(batch_id)
    assert not double and not early, (len(double), len(early))


def test_a_batch_completes_once_every_record_has_an_outcome(redis_url, redis_client):
    n = 40
    batch_id = f"complete-{uuid.uuid4().hex[:8]}"
    ids = [f"r{i:02d}" for i in range(n)]

    async def setup(store: BatchStore, _barrier) -> None:
        assert await store.create(batch_id, {"stage": "categorise", "owner": ""}, ids)
        assert not await store.create(batch_id, {"stage": "categorise", "owner": ""}, ids)  # once per id

    def writer(part: list[str]):
        async def write(store: BatchStore, barrier: threading.Barrier) -> None:
            barrier.wait()
            for record_id in part:
                await store.record(batch_id, record_id, FAILED if record_id.endswith("7") else ONE)
        return write

    _in_threads(redis_url, setup)
    assert redis_client.ttl(f"ucai:batch:{batch_id}") > 0 and redis_client.ttl(f"ucai:batch:{batch_id}:ids") > 0
    _in_threads(redis_url, *(writer(ids[k::4]) for k in range(4)))
    meta = redis_client.hgetall(f"ucai:batch:{batch_id}")
    assert meta[b"status"] == b"completed" and b"finished_at" in meta
    assert redis_client.hlen(f"ucai:batch:{batch_id}:results") == n - 4
    assert redis_client.hlen(f"ucai:batch:{batch_id}:failed") == 4


def test_a_cancel_racing_the_last_record_leaves_the_batch_cancelled(redis_url, redis_client):
    """DELETE marks a batch cancelled, whatever it was; the last record's write, racing it, never turns it back to
    `completed` (and is still counted)."""
    batches = [f"cancel-race-{uuid.uuid4().hex[:8]}-{i}" for i in range(150)]

    async def setup(store: BatchStore, _barrier) -> None:
        for batch_id in batches:
            assert await store.create(batch_id, {"stage": "categorise", "owner": ""}, ["r0"])

    async def finish(store: BatchStore, barrier: threading.Barrier) -> None:
        for batch_id in batches:
            barrier.wait()
            assert await store.record(batch_id, "r0", ONE)

    async def cancel(store: BatchStore, barrier: threading.Barrier) -> None:
        for i, batch_id in enumerate(batches):
            barrier.wait()
            time.sleep(i % 30 / 10_000)  # 0 – 3 ms after the write started: somewhere inside it
            await store.cancel(batch_id)

    _in_threads(redis_url, setup)
    _in_threads(redis_url, finish, cancel)
    statuses = [redis_client.hget(f"ucai:batch:{b}", "status") for b in batches]
    assert statuses.count(b"cancelled") == len(batches), statuses.count(b"completed")
    assert all(redis_client.hlen(f"ucai:batch:{b}:results") == 1 for b in batches)


def test_records_started_before_a_cancel_are_still_counted(redis_url, redis_client):
    batch_id = f"cancel-{uuid.uuid4().hex[:8]}"

    async def scenario(store: BatchStore, _barrier) -> None:
        assert await store.create(batch_id, {"stage": "categorise", "owner": ""}, ["r0", "r1", "r2"])
        assert await store.record(batch_id, "r0", ONE)
        await store.cancel(batch_id)
        assert await store.is_cancelled(batch_id)
        assert await store.record(batch_id, "r1", FAILED)  # it was running when the batch was cancelled
        assert not await store.record(batch_id, "r1", ONE)  # one outcome per record
        assert await store.counts(batch_id) == (1, 1)

    _in_threads(redis_url, scenario)
    assert redis_client.hget(f"ucai:batch:{batch_id}", "status") == b"cancelled"  # never completed after a cancel


def test_only_the_lease_holder_calls_the_model_and_writes_the_outcome(redis_url, model_server, redis_client):
    """Two deliveries of one job: the second finds the lease held and leaves the job; once the lease is lost (it ran
    out and another worker took it), the first makes no model call and writes nothing; the holder writes once."""
    from ucai.queue import JobLease, LeaseLost
    from ucai.roles import Roles
    from ucai.settings import Settings

    job_id, word = f"lease-{uuid.uuid4().hex[:8]}", marker()

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        store = JobStore(client, 600)
        roles = Roles(Settings(generator={"base_url": model_server.url, "model": "smollm2", "max_retries": 0}))
        try:
            assert await store.create(job_id, "critique", "{}")
            first, second = (JobLease(client, store.key(job_id), 300) for _ in range(2))
            assert await first.acquire() == "ours" and await first.acquire() == "ours"  # same token: taken again
            assert await second.acquire() == "held"
            assert not await second.renew()
            await roles.guarded(first.check).generator.chat([{"role": "user", "content": word}], max_tokens=4)
            await asyncio.sleep(0.4)  # the first worker stalls: its lease runs out, and another worker takes it
            assert await second.acquire() == "ours"
            assert not await first.renew()
            with pytest.raises(LeaseLost):
                await roles.guarded(first.check).generator.chat([{"role": "user", "content": word}], max_tokens=4)
            assert await store.finish(job_id, first.token, FAILED) == -1  # not ours: nothing written
            assert await store.outcome(job_id) is None
            assert await store.finish(job_id, second.token, ONE) == 1
            assert await second.acquire() == "done" and await first.acquire() == "done"
            assert await store.outcome(job_id) == ONE
            raw = await store.get(job_id)
            assert raw["status"] == "completed" and raw["completions"] == "1" and not await client.exists(first.key)
        finally:
            await roles.aclose()
            await client.aclose()

    asyncio.run(scenario())
    assert model_server.count("chat", containing=word) == 1  # the stale worker's second call never left


def test_a_hanging_redis_times_out_instead_of_stalling_the_worker():
    """A Redis that accepts connections and never answers: the queue's connections give up after the configured
    socket timeout (and the worker's retry paths take over), not after the client library's default (5 s)."""
    from ucai.queue import make_broker
    from ucai.settings import Settings

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    settings = Settings(redis_socket_timeout_s=0.5, redis_socket_connect_timeout_s=0.5)

    async def ping(make) -> float:
        started = time.monotonic()
        async with make() as conn:
            with pytest.raises(redis.exceptions.TimeoutError):
                await asyncio.wait_for(conn.ping(), timeout=10)
        return time.monotonic() - started

    try:
        broker = make_broker(settings, url)
        assert asyncio.run(ping(lambda: Redis(connection_pool=broker.connection_pool))) < 2.5
        # the worker's own client (job records, leases)
        assert asyncio.run(ping(lambda: Redis.from_url(url, **settings.redis_client_options()))) < 2.5
    finally:
        silent.close()
