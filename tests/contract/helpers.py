"""Small helpers of the contract tests: unique markers, the error envelope, batches, the queue being idle."""
from __future__ import annotations

import json
import math
import time
import uuid

import httpx
import redis

ENVELOPE_FIELDS = {"message", "type", "param", "code"}


def marker() -> str:
    """A unique word to put in a prompt, so a test counts only its own model calls on the shared test server."""
    return f"zq{uuid.uuid4().hex[:10]}"


def assert_envelope(response: httpx.Response, status: int, *, code: str | None = None,
                    param: str | None = None) -> dict:
    """The one error body: {"error": {"message", "type", "param", "code"}}; returns the whole body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    error = body["error"]
    assert set(error) <= ENVELOPE_FIELDS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if code is not None:
        assert error.get("code") == code, error
    if param is not None:
        assert error.get("param") == param, error
    return body


def wait_batch(client: httpx.Client, batch_id: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    view: dict = {}
    while time.monotonic() < deadline:
        view = client.get(f"/batches/{batch_id}").json()
        if view.get("status") != "running":
            return view
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish: {view}")


def batch_results(client: httpx.Client, batch_id: str) -> list[dict]:
    response = client.get(f"/batches/{batch_id}/results")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def entries_added(client: redis.Redis, queue: str) -> int:
    """How many entries the job stream has ever had (XINFO STREAM entries-added). Not XLEN: the workers trim
    acknowledged entries (older than 60 s) at any moment, so the length can drop between two reads."""
    return client.xinfo_stream(queue)["entries-added"] if client.exists(queue) else 0


def wait_queue_idle(client: redis.Redis, queue: str, timeout_s: float = 30) -> None:
    """Every job on the stream was delivered and acknowledged (whatever the consumer groups are called)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not client.exists(queue):
            return
        last = client.xinfo_stream(queue)["last-generated-id"]
        groups = client.xinfo_groups(queue)
        if groups and all(g["pending"] == 0 and g["last-delivered-id"] == last for g in groups):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {queue} not idle: {groups}")
        time.sleep(0.1)


def label_probability(top_logprobs: list[dict], label: str, other: str) -> float:
    """P(label) / (P(label) + P(other)) summing every variant ("A", " A", "(A") — what the judge should read."""
    def mass(letter: str) -> float:
        return sum(math.exp(t["logprob"]) for t in top_logprobs if t["token"].strip().strip("()").strip() == letter)

    return mass(label) / (mass(label) + mass(other))
