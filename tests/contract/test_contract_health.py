"""Liveness, readiness and a model that is down: GET /health, GET /ready (200 with every check; 503 `not_ready`
with the checks when the model server is stopped or answers 503), POST /critique while the model is down
(503 `model_unavailable` with Retry-After and the job; the job waits, then runs once when the model is back),
and Redis down (503 `queue_unavailable`, /ready names Redis) on a gateway of its own."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import free_port, make_stack, stop, wait_job
from tests.contract.helpers import assert_envelope, marker
from ucai.local_redis import start_redis
from ucai.settings import ROLE_NAMES

pytestmark = pytest.mark.contract

ROLES = ROLE_NAMES  # generator, critic, judge and chat


def test_health_answers_even_with_the_model_down(api, model_server):
    assert api.get("/health").json() == {"status": "ok"}
    model_server.stop()
    response = api.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_checks_redis_and_every_role(api, model_server):
    pinged = model_server.count("models")
    response = api.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", **dict.fromkeys(ROLES, "ok")}}
    assert model_server.count("models") - pinged >= len(ROLES)  # each role's endpoint was asked


@pytest.mark.parametrize("how", ["stopped", "503"])
def test_ready_is_503_with_checks_when_the_model_server_is_down(api, model_server, how):
    if how == "stopped":
        model_server.stop()
    else:
        model_server.fail(503)
    response = api.get("/ready")
    body = assert_envelope(response, 503, code="not_ready")
    assert int(response.headers["retry-after"]) >= 1
    checks = body["checks"]
    assert checks["redis"] == "ok"
    assert all(checks[role].startswith("down") for role in ROLES), checks
    model_server.recover()
    model_server.start()
    assert api.get("/ready").status_code == 200


@pytest.mark.parametrize("how", ["stopped", "503"])
def test_model_down_is_503_model_unavailable_and_the_job_runs_when_it_is_back(api, model_server, how):
    word = marker()
    if how == "stopped":
        model_server.stop()
    else:
        model_server.fail(503, endpoints={"chat"})
    response = api.post("/critique", json={"prompt": f"Is it fine to lie to my boss {word}?", "max_tokens": 8,
                                           "seed": 4})
    body = assert_envelope(response, 503, code="model_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    job_id = body["job"]["id"]
    assert body["job"]["links"]["self"] == f"/jobs/{job_id}"
    view = api.get(f"/jobs/{job_id}").json()
    assert view["status"] in {"waiting_for_model", "running"}, view
    assert model_server.count("chat", containing=word, status=200) == 0
    if how == "503":
        assert model_server.count("chat", containing=word, status=503) >= 1  # it did try the model

    model_server.recover()
    model_server.start()
    done = wait_job(api, job_id, {"completed", "failed"}, timeout_s=30)
    assert done["status"] == "completed", done
    assert done["result"]["final_response"]
    # The job ran once, after the model came back: exactly its own model calls answered.
    assert model_server.count("chat", containing=word, status=200) == done["result"]["usage"]["requests"]
    assert done["attempts"] == 1


def test_redis_down_is_503_queue_unavailable(model_server, logs, tmp_path):
    port = free_port()
    redis_process = start_redis(tmp_path / "redis", port)
    stack = make_stack(f"redis://127.0.0.1:{port}/0", model_server.url, logs, workers=0)
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            assert client.get("/ready").status_code == 200
            stop(redis_process)
            started = time.monotonic()
            response = client.post("/critique", json={"prompt": f"Hello {marker()}", "max_tokens": 4})
            assert_envelope(response, 503, code="queue_unavailable")
            assert int(response.headers["retry-after"]) >= 1
            assert time.monotonic() - started < 15
            ready = client.get("/ready")
            body = assert_envelope(ready, 503, code="not_ready")
            assert body["checks"]["redis"].startswith("down") and body["checks"]["judge"] == "ok"
            assert client.get("/health").status_code == 200
    finally:
        stack.close()
        stop(redis_process)
