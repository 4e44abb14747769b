"""The seed's data scale (issue 13, defect 4): a batch of 100k records from an imported dataset — created in well
under a minute on 2 cores (the file read line by line in a thread, the jobs queued with pipelined SUBMITs), within a
stated Redis memory bound per queued record, its status and cancel answering at once — and a malformed dataset line
answered 422 naming the line (defect 5). No model: nothing consumes this queue. Its own redis-server, so the memory
measured is this batch's alone.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from tests.conftest import Stack, make_stack, own_redis_server
from tests.contract.helpers import assert_envelope, marker

pytestmark = pytest.mark.contract

RECORDS = 100_000
CREATE_WITHIN_S = 60.0
# Redis memory per queued record (a ~70-character prompt): the stream entry, the job record and its expiry, the
# record's place in the batch. Measured ≈ 0.75 KB (bench/redis_memory.py); before issue 13 each also carried the
# ~11 KB constitution twice (≈ 24 KB). 100k records: under 150 MB.
BYTES_PER_RECORD = 1_500


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> str:
    with own_redis_server(tmp_path_factory.mktemp("redis-scale")) as url:
        yield url


@pytest.fixture(scope="module")
def scale_stack(own_redis, model_server, logs, datasets_dir) -> Stack:
    """A gateway only: the batch stays queued, as a backlog of 100k would."""
    stack = make_stack(own_redis, model_server.url, logs, workers=0, UCAI_DATASETS_DIR=str(datasets_dir))
    yield stack
    stack.close()


def write_dataset(datasets_dir, name: str, lines: list[str]) -> None:
    imports = datasets_dir / "imports"
    imports.mkdir(exist_ok=True)
    (imports / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))


def test_a_malformed_dataset_line_is_a_422_naming_the_line(scale_stack, datasets_dir, own_redis):
    good = json.dumps({"id": "a", "source": "t", "prompt": "Fine prompt"})
    cases = {
        "broken_json": ([good, "", '{"id": "b", "prompt": "unterminated'], "line 3: ", "invalid_dataset_line"),
        "no_id": ([good, json.dumps({"prompt": "no id"})], "line 2: id: ", "invalid_dataset_line"),
        "blank_prompt": ([good, json.dumps({"id": "c", "prompt": "  "})], "line 2: record 'c': prompt: ",
                         "value_error"),
        "duplicate": ([good, good], "line 2: duplicate record id 'a'", "duplicate_id"),
    }
    client = redis.Redis.from_url(own_redis)
    queue = scale_stack.env["UCAI_QUEUE_NAME"]
    with httpx.Client(base_url=scale_stack.url, timeout=30) as api:
        for case, (lines, message, code) in cases.items():
            name = f"bad_{case}_{marker()}"
            write_dataset(datasets_dir, name, lines)
            response = api.post("/batches", json={"stage": "categorise", "input": {"dataset": name}})
            body = assert_envelope(response, 422, code=code, param="input.dataset")
            assert body["error"]["message"].startswith(message), (case, body)
    assert client.xinfo_stream(queue)["entries-added"] == 0  # nothing queued (the gateway made the stream empty)
    client.close()


def test_a_batch_of_100k_records_from_a_dataset(scale_stack, datasets_dir, own_redis):
    name = f"scale_{marker()}"
    write_dataset(datasets_dir, name, [json.dumps({"id": f"p{i:06d}", "source": "scale", "category": None,
                                                   "prompt": f"Generated red-team style prompt number {i:06d} "
                                                             "about a neighbour."})
                                       for i in range(RECORDS)])
    client = redis.Redis.from_url(own_redis)
    queue = scale_stack.env["UCAI_QUEUE_NAME"]
    with httpx.Client(base_url=scale_stack.url, timeout=120) as api:
        assert api.get("/health").status_code == 200
        before = client.info("memory")["used_memory"]
        started = time.perf_counter()
        response = api.post("/batches", json={"stage": "categorise", "idempotency_key": name,
                                              "input": {"dataset": name}})
        created_s = time.perf_counter() - started
        assert response.status_code == 202, response.text
        view = response.json()
        assert view["total"] == RECORDS and view["status"] == "running" and view["done"] == 0, view
        per_record = (client.info("memory")["used_memory"] - before) / RECORDS
        print(f"\n100k-record batch: created in {created_s:.1f} s; Redis {per_record:.0f} B per queued record "
              f"({per_record * RECORDS / 2**20:.0f} MiB)")
        assert created_s < CREATE_WITHIN_S
        assert per_record < BYTES_PER_RECORD
        assert client.xlen(queue) == client.xinfo_stream(queue)["entries-added"] == RECORDS  # each queued once
        assert client.llen(f"ucai:batch:{view['id']}:ids") == RECORDS

        status = api.get(f"/batches/{view['id']}")
        assert status.status_code == 200 and status.json()["total"] == RECORDS
        assert status.elapsed.total_seconds() < 2
        cancelled = api.delete(f"/batches/{view['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        results = api.get(f"/batches/{view['id']}/results")  # paged through 100k ids: none has an outcome yet
        assert results.status_code == 200 and results.text == ""
    client.close()
