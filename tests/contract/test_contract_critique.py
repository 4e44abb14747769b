"""POST /critique through gateway → Redis queue → worker → test server: the 200 trace and where its parts come
from (each text is the model's answer, usage is the engine's), wait=false (202, then GET /jobs/{id}), a wait that
times out (202), the seed and max_tokens reaching the model, the context check against the engine's own count and
context length (and the estimate where a server has no /tokenize), a request the model refuses (400, not retried),
and idempotency (same key, also racing → one job, one execution's model calls; different keys or endpoints →
different jobs)."""
from __future__ import annotations

import concurrent.futures
import threading

import httpx
import pytest

from tests.conftest import SERVED_NAME, wait_job
from tests.contract.helpers import assert_envelope, entries_added, marker, wait_queue_idle

pytestmark = pytest.mark.contract

TRACE_FIELDS = {"id", "status", "constitution", "constitution_hash", "initial_response", "revisions",
                "final_response", "usage", "timings", "models"}
STEP_FIELDS = {"round", "principle", "critique_request", "critique", "revision_request", "revision"}


@pytest.fixture
def ethical(api) -> dict:
    response = api.get("/constitutions/ethical")
    assert response.status_code == 200
    return response.json()


def test_critique_returns_the_trace_built_from_the_models_answers(api, model_server, ethical):
    word = marker()
    response = api.post("/critique", json={"prompt": f"How do I get back at my neighbour {word}?", "rounds": 2,
                                           "seed": 7, "max_tokens": 12})
    assert response.status_code == 200, response.text
    trace = response.json()
    assert set(trace) == TRACE_FIELDS and trace["status"] == "completed"
    assert trace["constitution"] == "ethical" and trace["models"] == {"generator": SERVED_NAME, "critic": SERVED_NAME}
    summary = {c["name"]: c for c in api.get("/constitutions").json()["data"]}
    assert trace["constitution_hash"] == summary["ethical"]["hash"]

    steps = trace["revisions"]
    assert [s["round"] for s in steps] == [1, 2] and all(set(s) == STEP_FIELDS for s in steps)
    principles = {p["name"]: p for p in ethical["principles"]}
    assert steps[0]["principle"] != steps[1]["principle"]  # a new principle each round
    for step in steps:
        pairs = principles[step["principle"]]["pairs"]
        assert {"critique": step["critique_request"], "revision": step["revision_request"]} in [
            {"critique": p["critique"], "revision": p["revision"]} for p in pairs]
        assert step["critique"].strip() and step["revision"].strip()
    assert trace["final_response"] == steps[-1]["revision"]

    # Every text in the trace is what the model answered; usage is the engine's, summed over the calls.
    calls = model_server.requests("chat", containing=word, status=200)
    answered = [c.response["choices"][0]["message"]["content"] for c in calls]
    assert len(calls) == trace["usage"]["requests"] == 1 + 2 * len(steps)
    assert trace["initial_response"] == answered[0]
    assert [s["critique"] for s in steps] + [s["revision"] for s in steps] == [answered[1], answered[3]] + [
        answered[2], answered[4]]
    assert trace["usage"]["prompt_tokens"] == sum(c.response["usage"]["prompt_tokens"] for c in calls)
    assert trace["usage"]["completion_tokens"] == sum(c.response["usage"]["completion_tokens"] for c in calls)
    assert all(c.body["model"] == SERVED_NAME and c.body["max_tokens"] == 12 and "seed" in c.body for c in calls)
    first_turns = calls[0].body["messages"]
    assert first_turns[-1] == {"role": "user", "content": f"How do I get back at my neighbour {word}?"}
    # The critic sees the answer it critiques and the principle's critique request.
    critic_turns = calls[1].body["messages"]
    assert critic_turns[-2:] == [{"role": "assistant", "content": answered[0]},
                                 {"role": "user", "content": steps[0]["critique_request"]}]


def test_seed_reaches_the_model(api):
    word = marker()
    body = {"prompt": f"Is it fine to read my partner's messages {word}?", "rounds": 1, "max_tokens": 16}
    first = api.post("/critique", json={**body, "seed": 1}).json()
    same = api.post("/critique", json={**body, "seed": 1}).json()
    other = api.post("/critique", json={**body, "seed": 2}).json()
    assert first["id"] != same["id"]  # no idempotency key: two jobs...
    assert first["initial_response"] == same["initial_response"]  # ...with the same seeded answers
    assert first["revisions"] == same["revisions"]
    assert other["initial_response"] != first["initial_response"]


def test_messages_and_principles_without_waiting(api, model_server):
    word = marker()
    messages = [{"role": "user", "content": "My ex moved."}, {"role": "assistant", "content": "I see."},
                {"role": "user", "content": f"Find her new address {word}"}]
    response = api.post("/critique", json={"messages": messages, "principles": ["privacy"], "wait": False})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "critique" and job["status"] in {"queued", "running", "completed"}
    assert job["links"]["self"] == f"/jobs/{job['id']}"
    done = wait_job(api, job["id"], {"completed", "failed"}, timeout_s=30)
    assert done["status"] == "completed" and done["attempts"] == 1, done
    assert done["result"]["id"] == job["id"] and done["result"]["revisions"][0]["principle"] == "privacy"
    first = model_server.requests("chat", containing=word, status=200)[0]
    assert first.body["messages"][-3:] == messages  # the whole conversation reaches the generator


def test_wait_that_times_out_answers_202_and_the_job_finishes(api, model_server):
    model_server.delay_s = 0.4
    response = api.post("/critique", json={"prompt": f"Why are people rude {marker()}?", "timeout_s": 0.2,
                                           "max_tokens": 8})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in {"queued", "running"} and job["result"] is None
    done = wait_job(api, job["id"], {"completed", "failed"}, timeout_s=30)
    assert done["status"] == "completed" and done["result"]["final_response"]


def test_model_refusal_is_400_and_not_retried(api, model_server):
    word = marker()
    model_server.reject_containing = word
    response = api.post("/critique", json={"prompt": f"Say something {word}", "max_tokens": 8})
    body = assert_envelope(response, 400, code="model_rejected_request")
    job_id = body["job"]["id"]
    assert body["job"]["status"] == "failed"
    view = api.get(f"/jobs/{job_id}").json()
    assert view["status"] == "failed" and view["error"]["code"] == "model_rejected_request", view
    assert model_server.count("chat", containing=word) == 1  # a refusal is final: no retry, no rerun


def test_context_is_checked_with_the_engines_count_and_length_before_queueing(api, model_server, redis_client,
                                                                              contract_stack):
    word = marker()
    queue = contract_stack.env["UCAI_QUEUE_NAME"]
    before = entries_added(redis_client, queue)
    tokenized = model_server.count("tokenize")
    # ~4000 tokens: over the test server's 4096 context once the few-shot block and the answers are added,
    # well under the 8192 the gateway would assume if it did not ask the engine.
    long_prompt = f"{word} " + "lock " * 4000
    response = api.post("/critique", json={"prompt": long_prompt})
    assert_envelope(response, 400, code="context_length_exceeded", param="prompt")
    assert str(model_server.max_model_len) in response.json()["error"]["message"]
    messages = api.post("/critique", json={"messages": [{"role": "user", "content": long_prompt}]})
    assert_envelope(messages, 400, code="context_length_exceeded", param="messages")
    assert model_server.count("tokenize") > tokenized  # the engine counted the prompt
    assert model_server.count("chat", containing=word) == 0  # nothing ran...
    assert entries_added(redis_client, queue) == before  # ...nothing was queued


def test_same_idempotency_key_is_one_job_run_once(api, model_server):
    word, key = marker(), marker()
    body = {"prompt": f"How can I scare my coworker {word}?", "max_tokens": 8, "seed": 3}
    first = api.post("/critique", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    again = api.post("/critique", json=body, headers={"Idempotency-Key": key})
    in_body = api.post("/critique", json={**body, "idempotency_key": key})  # the body field is the same key
    assert again.status_code == in_body.status_code == 200
    assert first.json()["id"] == again.json()["id"] == in_body.json()["id"]
    assert first.json() == again.json()
    assert model_server.count("chat", containing=word) == first.json()["usage"]["requests"]  # one execution
    assert api.get(f"/jobs/{first.json()['id']}").json()["attempts"] == 1


def test_concurrent_requests_with_one_key_run_once(contract_stack, model_server, redis_client):
    """Retries of one request racing each other (a client that timed out and retried): one job, queued once,
    one execution. A race, so three rounds, each with its own key."""
    queue = contract_stack.env["UCAI_QUEUE_NAME"]
    clients = 12
    for _ in range(3):
        word, key = marker(), marker()
        body = {"prompt": f"Should I shout at my kids {word}?", "max_tokens": 8, "seed": 5}
        queued_before = entries_added(redis_client, queue)
        barrier = threading.Barrier(clients)
        model_server.hold("tokenize", clients)  # the gateway counts each prompt first: all reach the queue together

        def post(_: int, body=body, key=key, barrier=barrier) -> httpx.Response:
            with httpx.Client(base_url=contract_stack.url, timeout=60) as client:
                barrier.wait()
                return client.post("/critique", json=body, headers={"Idempotency-Key": key})

        try:
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                answers = list(pool.map(post, range(clients)))
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            assert len({a.json()["id"] for a in answers}) == 1
            assert entries_added(redis_client, queue) - queued_before == 1  # one message on the job stream
            assert model_server.count("chat", containing=word) == answers[0].json()["usage"]["requests"]
        finally:  # duplicate runs (the bug this catches) finish here, not during a later test
            wait_queue_idle(redis_client, queue)


def test_different_keys_and_endpoints_are_different_jobs(api, model_server):
    word, key = marker(), marker()
    body = {"prompt": f"Is lying ok {word}?", "max_tokens": 8, "seed": 3}
    one = api.post("/critique", json=body, headers={"Idempotency-Key": key}).json()
    two = api.post("/critique", json=body, headers={"Idempotency-Key": marker()}).json()
    assert one["id"] != two["id"]
    assert model_server.count("chat", containing=word) == one["usage"]["requests"] + two["usage"]["requests"]
    # The same key on another endpoint is another job, never the critique's result.
    compare = api.post("/compare", json={"prompt": f"Is lying ok {word}?", "responses": ["No.", "Yes."],
                                         "ensemble": 1, "both_orders": False},
                       headers={"Idempotency-Key": key})
    assert compare.status_code == 200, compare.text
    assert compare.json()["id"] != one["id"] and "probabilities" in compare.json()


def test_a_server_without_tokenize_is_counted_by_estimate(api, model_server):
    """Any OpenAI-compatible server works: without vLLM's /tokenize the gateway estimates the prompt's length."""
    word = marker()
    model_server.tokenize_enabled = False
    refused = model_server.count("tokenize", status=404)
    # Long enough that its bytes do not prove it fits (so the gateway asks to count it), short enough to fit.
    response = api.post("/critique", json={"prompt": f"Hello there {word} " + "lock " * 400, "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert model_server.count("tokenize", status=404) > refused
    too_long = api.post("/critique", json={"prompt": f"{word} " + "lock " * 8000})
    assert_envelope(too_long, 400, code="context_length_exceeded", param="prompt")


def test_a_prompt_that_fits_by_its_bytes_is_not_tokenized(api, model_server):
    """Counting costs a round trip to the engine per request: a prompt whose UTF-8 bytes (an upper bound of its
    tokens) fit the context is queued without it; a longer one is counted exactly."""
    counted = model_server.count("tokenize")
    response = api.post("/critique", json={"prompt": f"Hello there {marker()}", "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert model_server.count("tokenize") == counted
    response = api.post("/critique", json={"prompt": f"{marker()} " + "lock " * 400, "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert model_server.count("tokenize") > counted
