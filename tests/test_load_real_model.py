"""Load against the real model (issue 13), at a small scale: 8 concurrent clients for 20 s against the session's real
stack (gateway + worker + `vllm serve` on the bundled model). No request gets anything but 200 / 202, and every
accepted job completed exactly once (`completions == 1`, `attempts == 1` in `ucai:job:{id}`). The figures go to
bench/results/load_real_model.json. It ran 45 s until issue 15 cut the suite's time: the same assertions, and a fixed
wall time that every CPU pays in full (the 200-client test keeps the 60 s that issue 13 asks for)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from tests.load_driver import drive, exactly_once_problems, wait_all_completed, write_figures

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLIENTS, DURATION_S = 8, 20.0


def test_8_clients_for_20s_on_the_real_model_every_job_completed_exactly_once(stack, redis_url):
    word = uuid.uuid4().hex[:8]

    def body(client: int, n: int) -> dict:
        return {"prompt": f"Client {client}, question {n} ({word}): is it fine to read my partner's messages?",
                "rounds": 1, "max_tokens": 16, "seed": n, "timeout_s": 300}

    run = asyncio.run(drive(stack.url, "/critique", body, CLIENTS, DURATION_S))
    client = redis.Redis.from_url(redis_url)
    try:
        records = wait_all_completed(client, run.accepted, timeout_s=300)
    finally:
        client.close()
    figures = {**run.figures(), "answered_200": len(run.completed), "answered_202": len(run.queued)}
    print(f"load (real model): {figures}; written to {write_figures('load_real_model', figures)}")
    assert not run.errors, (len(run.errors), run.errors[:5])
    assert stack.gateway.poll() is None
    assert len(run.accepted) >= CLIENTS, figures
    assert not exactly_once_problems(records), exactly_once_problems(records)
