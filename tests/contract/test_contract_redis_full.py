"""A full Redis (maxmemory reached, policy noeviction — what `ucai up` and compose start) refuses new work with 503
`queue_full` + Retry-After, never a 500, and evicts nothing that was accepted; once there is room again, work is
accepted and runs. Real redis-server, gateway and worker processes; the model is the contract test server."""
from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.conftest import make_stack, own_redis_server
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope

pytestmark = pytest.mark.contract


def _critique(client: httpx.Client, text: str, wait: bool = False) -> httpx.Response:
    return client.post("/critique", json={"prompt": text, "constitution": "ethical", "wait": wait, "max_tokens": 16})


def test_a_full_redis_refuses_new_work_with_503_and_loses_nothing(tmp_path, model_server, logs):
    with own_redis_server(tmp_path / "redis") as url:
        _fill_and_recover(url, model_server, logs)


def _fill_and_recover(url: str, model_server, logs) -> None:
    direct = redis.Redis.from_url(url)
    stack = make_stack(url, model_server.url, logs, workers=0, **FAST_ROLES)
    try:
        assert direct.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            accepted = [_critique(client, f"before the limit {i}") for i in range(5)]
            assert all(r.status_code == 202 for r in accepted), [r.text for r in accepted]
            accepted_ids = [r.json()["id"] for r in accepted]

            # Full: the limit below what Redis holds (as after a burst of work), so every write is refused.
            limit = direct.config_get("maxmemory")["maxmemory"]
            direct.config_set("maxmemory", int(direct.info("memory")["used_memory"]) // 2)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                direct.set("probe", "x")

            refused = _critique(client, "over the limit")
            assert_envelope(refused, 503, code="queue_full")
            assert int(refused.headers["Retry-After"]) >= 1
            assert client.get("/health").status_code == 200  # the gateway stays up

            # Nothing accepted was evicted.
            for job_id in accepted_ids:
                assert direct.exists(f"ucai:job:{job_id}"), job_id

            # A worker started while Redis is full waits for it (it cannot take a lease or write an outcome): its
            # jobs are neither failed nor lost.
            stack.start_worker()
            time.sleep(3)
            for job_id in accepted_ids:
                assert direct.hget(f"ucai:job:{job_id}", "status") in (b"queued", b"running"), job_id

            # Room again: accepted, and every job (the earlier five too) runs to completion, once.
            direct.config_set("maxmemory", limit)
            again = _critique(client, "after the limit")
            assert again.status_code == 202, again.text
            deadline = time.monotonic() + 60
            for job_id in [*accepted_ids, again.json()["id"]]:
                while (status := client.get(f"/jobs/{job_id}").json()["status"]) != "completed":
                    assert status not in ("failed",) and time.monotonic() < deadline, status
                    time.sleep(0.2)
                assert direct.hget(f"ucai:job:{job_id}", "completions") == b"1", job_id
    finally:
        stack.close()
        direct.close()
