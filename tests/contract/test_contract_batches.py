"""Batches through the real queue and worker against the test server: POST /batches (202 with the bookkeeping),
GET status, GET results (JSONL, one line per record, in input order), resubmitting (the same batch, nothing
rerun — also while it is still running), a record the model refuses (reported once as failed), DELETE (cancelled
records make no model call), a server-side imported dataset as input, every batch stage, and bad input
(422/404, nothing queued)."""
from __future__ import annotations

import json
import time

import pytest

from tests.contract.helpers import assert_envelope, batch_results, marker, wait_batch, wait_queue_idle

pytestmark = pytest.mark.contract

VIEW_FIELDS = {"id", "stage", "constitution", "status", "total", "done", "failed", "rate_per_min", "eta_s",
               "created_at", "links"}


def records(word: str, n: int) -> list[dict]:
    return [{"id": f"r{i:02d}", "prompt": f"Request {i} about my neighbour {word}"} for i in range(n)]


def submit(api, stage: str, items: list[dict], key: str | None = None, **params) -> dict:
    body = {"stage": stage, "constitution": "ethical", "input": {"records": items}, "params": params}
    if key:
        body["idempotency_key"] = key
    response = api.post("/batches", json=body)
    assert response.status_code == 202, response.text
    view = response.json()
    assert set(view) == VIEW_FIELDS
    return view


def queue_length(redis_client, stack) -> int:
    """Entries ever queued (not XLEN: the workers trim acknowledged entries)."""
    queue = stack.env["UCAI_QUEUE_NAME"]
    return redis_client.xinfo_stream(queue)["entries-added"] if redis_client.exists(queue) else 0


def test_categorise_batch_writes_one_outcome_per_record(api, model_server):
    word = marker()
    items = records(word, 4) + [{"id": "conversation", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": f"Where does my ex live now {word}?"}]}]
    view = submit(api, "categorise", items, key=marker())
    assert view["stage"] == "categorise" and view["total"] == 5 and view["status"] in {"running", "completed"}
    assert view["links"] == {"self": f"/batches/{view['id']}", "results": f"/batches/{view['id']}/results"}
    done = wait_batch(api, view["id"])
    assert done["status"] == "completed" and done["done"] == 5 and done["failed"] == 0, done
    assert done["eta_s"] is None and done["rate_per_min"] > 0

    rows = batch_results(api, view["id"])
    assert [r["id"] for r in rows] == [r["id"] for r in items]  # input order, each record once
    principles = [p["name"] for p in api.get("/constitutions/ethical").json()["principles"]]
    for row in rows:
        assert row["status"] == "completed"
        scores = row["result"]["scores"]
        assert set(scores) == {*principles, "none"} and sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["result"]["category"] == max(scores, key=scores.get)
    assert model_server.count("chat", containing=word, status=200) == 5  # one judge call per record


def test_resubmitting_is_the_same_batch_and_reruns_nothing(api, model_server):
    word, key = marker(), marker()
    first = submit(api, "categorise", records(word, 3), key=key)
    wait_batch(api, first["id"])
    calls = model_server.count("chat", containing=word)
    again = submit(api, "categorise", records(word, 3), key=key)
    header = api.post("/batches", json={"stage": "categorise", "input": {"records": records(word, 3)}},
                      headers={"Idempotency-Key": key})
    assert header.status_code == 202
    assert again["id"] == header.json()["id"] == first["id"]
    assert again["status"] == "completed" and again["total"] == 3 and again["done"] == 3
    assert len(batch_results(api, first["id"])) == 3
    assert model_server.count("chat", containing=word) == calls


def test_resuming_a_running_batch_counts_each_record_once(api, model_server):
    word, key = marker(), marker()
    model_server.fail(503, endpoints={"chat"})  # the jobs start and wait for the model
    first = submit(api, "categorise", records(word, 4), key=key)
    deadline = time.monotonic() + 10
    while model_server.count("chat", containing=word) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    resumed = submit(api, "categorise", records(word, 4), key=key)
    assert resumed["id"] == first["id"] and resumed["total"] == 4 and resumed["status"] == "running"
    model_server.recover()
    done = wait_batch(api, first["id"])
    assert done["status"] == "completed" and done["done"] == 4 and done["failed"] == 0, done
    rows = batch_results(api, first["id"])
    assert sorted(r["id"] for r in rows) == [f"r{i:02d}" for i in range(4)]
    assert model_server.count("chat", containing=word, status=200) == 4  # each record answered once


def test_a_refused_record_is_reported_once_as_failed(api, model_server):
    word, bad = marker(), marker()
    items = records(word, 3) + [{"id": "refused", "prompt": f"Something the model refuses {bad}"}]
    model_server.reject_containing = bad
    view = submit(api, "categorise", items)
    done = wait_batch(api, view["id"])
    assert done["status"] == "completed" and done["done"] == 3 and done["failed"] == 1, done
    rows = {r["id"]: r for r in batch_results(api, view["id"])}
    assert len(rows) == 4 and rows["refused"]["status"] == "failed"
    assert rows["refused"]["error"]["code"] == "model_rejected_request" and "result" not in rows["refused"]
    assert model_server.count("chat", containing=bad) == 1


def test_cancel_stops_new_work(api, model_server, redis_client, contract_stack):
    word = marker()
    model_server.fail(503, endpoints={"chat"})
    view = submit(api, "categorise", records(word, 20))
    cancelled = api.delete(f"/batches/{view['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    model_server.recover()
    wait_queue_idle(redis_client, contract_stack.env["UCAI_QUEUE_NAME"])
    settled = api.get(f"/batches/{view['id']}").json()
    assert settled["status"] == "cancelled" and settled["done"] < 20, settled
    # Only jobs already running when the batch was cancelled reached the model; the rest made no call.
    assert model_server.count("chat", containing=word, status=200) == settled["done"]
    assert len(batch_results(api, view["id"])) == settled["done"] + settled["failed"]
    time.sleep(1.5)
    assert api.get(f"/batches/{view['id']}").json()["done"] == settled["done"]


def test_imported_dataset_as_input(api, model_server, datasets_dir):
    word = marker()
    name = f"contract_{word}"
    imports = datasets_dir / "imports"
    imports.mkdir(exist_ok=True)
    rows = [{"id": f"d{i}", "source": "contract", "prompt": f"Imported prompt {i} {word}", "category": None,
             "meta": {"line": i}} for i in range(3)]
    (imports / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    response = api.post("/batches", json={"stage": "categorise", "input": {"dataset": name}})
    assert response.status_code == 202, response.text
    done = wait_batch(api, response.json()["id"])
    assert done["total"] == 3 and done["done"] == 3, done
    assert [r["id"] for r in batch_results(api, done["id"])] == ["d0", "d1", "d2"]
    assert model_server.count("chat", containing=word, status=200) == 3


@pytest.mark.parametrize(("stage", "extra", "params"), [
    ("critique", {}, {"rounds": 1, "max_tokens": 8, "seed": 1}),
    ("compare", {"responses": ["Be kind.", "Be cruel."]}, {"ensemble": 1}),
    ("preference", {}, {"ensemble": 1, "both_orders": False, "max_tokens": 8, "seed": 1}),
    ("answer", {}, {"model": "base", "max_tokens": 8, "seed": 1}),
])
def test_every_batch_stage_fans_out_and_completes(api, model_server, stage, extra, params):
    word = marker()
    items = [{**r, **extra} for r in records(word, 2)]
    view = submit(api, stage, items, **params)
    done = wait_batch(api, view["id"])
    assert done["stage"] == stage and done["done"] == 2 and done["failed"] == 0, done
    rows = batch_results(api, view["id"])
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert model_server.count("chat", containing=word, status=200) == sum(
        r["result"]["usage"]["requests"] for r in rows)


def test_unknown_batch_is_404(api):
    for response in (api.get("/batches/nope"), api.get("/batches/nope/results"), api.delete("/batches/nope")):
        assert_envelope(response, 404, code="batch_not_found", param="batch_id")


def test_bad_batches_are_refused_and_queue_nothing(api, model_server, redis_client, contract_stack):
    word = marker()
    before = queue_length(redis_client, contract_stack)
    good = records(word, 1)

    def post(**body):
        return api.post("/batches", json={"stage": "categorise", "input": {"records": good}, **body})

    assert_envelope(post(input={"records": good + good}), 422, code="duplicate_id", param="input.records.1.id")
    bad = assert_envelope(post(input={"records": [{"id": "x", "prompt": "   "}]}), 422)
    assert bad["error"]["param"].startswith("input.records.0")
    assert_envelope(post(input={}), 422, param="input")
    assert_envelope(post(input={"records": good, "dataset": "x"}), 422, param="input")
    assert_envelope(post(stage="train"), 422, param="stage")
    assert_envelope(post(constitution="nope"), 422, code="unknown_constitution", param="constitution")
    assert_envelope(post(params={"principles": ["violence"]}), 422, code="unknown_principle")
    assert_envelope(post(input={"dataset": "no_such_dataset"}), 404, code="dataset_not_found")
    assert_envelope(post(input={"dataset": "../etc/passwd"}), 404, code="dataset_not_found")
    assert queue_length(redis_client, contract_stack) == before
    assert model_server.count("chat", containing=word) == 0


def test_principles_param_of_the_wrong_type_is_a_422_not_a_500(api):
    """Bad input is the client's error: a 4xx naming the field, whatever its JSON type."""
    response = api.post("/batches", json={"stage": "categorise", "input": {"records": records(marker(), 1)},
                                          "params": {"principles": 5}})
    assert_envelope(response, 422)


def test_a_records_unknown_principle_is_refused_at_creation(api, model_server):
    """A record's own `principles` are checked like the request's: 422 before anything is queued."""
    word = marker()
    response = api.post("/batches", json={"stage": "critique", "params": {"max_tokens": 4}, "input": {"records": [
        {"id": "ok", "prompt": f"Hello {word}"}, {"id": "bad", "prompt": f"Hi {word}", "principles": ["bogus"]}]}})
    try:
        body = assert_envelope(response, 422, code="unknown_principle")
        assert body["error"]["param"].startswith("input.records.1")
        assert model_server.count("chat", containing=word) == 0
    finally:
        if response.status_code == 202:  # the bug: let the accepted batch finish here, not in a later test
            wait_batch(api, response.json()["id"], timeout_s=60)
