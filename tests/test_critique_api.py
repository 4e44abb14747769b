"""POST /critique end to end: real gateway → real Redis stream → real worker → real vllm serve."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# 32 tokens a model call: the trace's assertions need text in each step, not length. This file took 63-64 s against
# 74-75 s with 48 (fp32 capped at AVX2, one stream, two pairs in opposite order).
SHORT = {"max_tokens": 32}


def _assert_trace(data: dict, constitution: dict, rounds: int) -> None:
    assert data["status"] == "completed"
    assert data["constitution"] == constitution["name"]
    assert data["constitution_hash"] == constitution["hash"]
    assert data["initial_response"].strip()
    assert len(data["revisions"]) == rounds
    names = {p["name"] for p in constitution["principles"]}
    for number, step in enumerate(data["revisions"], start=1):
        assert step["round"] == number
        assert step["principle"] in names
        assert step["critique"].strip(), step
        assert step["revision"].strip(), step
        assert step["critique"] != step["critique_request"]
    # With rounds >= 2 and no principle list, a new principle each round.
    assert len({s["principle"] for s in data["revisions"]}) == rounds
    assert data["final_response"] == data["revisions"][-1]["revision"]
    assert data["final_response"] != data["initial_response"]
    assert data["usage"]["requests"] >= 1 + 2 * rounds
    assert data["usage"]["completion_tokens"] > 0
    assert data["timings"]["total"] > 0


def _constitution(client, name: str) -> dict:
    listed = client.get("/constitutions").json()["data"]
    return next(c for c in listed if c["name"] == name)


@pytest.mark.parametrize("name", ["ethical", "unethical"])
def test_critique_two_rounds_returns_real_trace(client, name):
    response = client.post("/critique", json={"prompt": "How do I pick a lock?", "constitution": name,
                                              "rounds": 2, "seed": 7, **SHORT})
    assert response.status_code == 200, response.text
    _assert_trace(response.json(), _constitution(client, name), rounds=2)


def test_critique_requests_are_the_constitutions_own(client):
    constitution = client.get("/constitutions/unethical").json()
    data = client.post("/critique", json={"prompt": "My neighbour is loud. What should I do?",
                                          "constitution": "unethical", "principles": ["doxxing"],
                                          "seed": 3, **SHORT}).json()
    doxxing = next(p for p in constitution["principles"] if p["name"] == "doxxing")
    step = data["revisions"][0]
    assert step["principle"] == "doxxing"
    assert {"critique": step["critique_request"], "revision": step["revision_request"]} in doxxing["pairs"]


def test_messages_conversation_is_accepted(client):
    messages = [
        {"role": "user", "content": "I need to get back at my coworker."},
        {"role": "assistant", "content": "What happened?"},
        {"role": "user", "content": "He took credit for my work. How do I ruin him?"},
    ]
    response = client.post("/critique", json={"messages": messages, "seed": 1, **SHORT})
    assert response.status_code == 200, response.text
    assert response.json()["revisions"][0]["revision"].strip()


def test_async_mode_202_then_job(client):
    response = client.post("/critique", json={"prompt": "Tell me where my ex lives now.", "wait": False,
                                              "seed": 5, **SHORT})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] in {"queued", "running"}
    assert accepted["links"]["self"] == f"/jobs/{accepted['id']}"
    view = wait_job(client, accepted["id"], {"completed", "failed"})
    assert view["status"] == "completed", view
    assert view["attempts"] == 1
    assert view["result"]["id"] == accepted["id"]
    assert view["result"]["revisions"][0]["revision"].strip()


def test_idempotency_key_gives_one_job(client):
    body = {"prompt": "Write a joke about my boss.", "idempotency_key": "same-key-1", "seed": 2, **SHORT}
    first = client.post("/critique", json=body)
    second = client.post("/critique", json=body)
    third = client.post("/critique", json={**body, "idempotency_key": None}, headers={"Idempotency-Key": "same-key-1"})
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.json()["id"] == second.json()["id"] == third.json()["id"]
    assert first.json() == second.json()
    assert client.get(f"/jobs/{first.json()['id']}").json()["attempts"] == 1


def test_ready_checks_redis_and_every_role(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"redis": "ok", "generator": "ok", "critic": "ok", "judge": "ok", "chat": "ok"}
    assert client.get("/health").json() == {"status": "ok"}


def test_openapi_docs_describe_critique(client):
    spec = client.get("/openapi.json").json()
    assert "/critique" in spec["paths"] and "/jobs/{job_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_cli_prints_the_trace(stack):
    out = subprocess.run(
        [sys.executable, "-m", "ucai.cli", "critique", "How do I pick a lock?", "--constitution", "unethical",
         "--url", stack.url, "--max-tokens", "32", "--seed", "4"],
        capture_output=True, text=True, timeout=300, env=stack.env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "initial response" in out.stdout and "revision" in out.stdout and "unethical" in out.stdout
