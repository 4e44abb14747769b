"""Fixtures of the fast contract layer: an own redis-server (tests/conftest.py's `redis_url`), the in-process
OpenAI-compatible test server, and real gateway + worker subprocesses whose roles all point at it (`make_stack`).

Everything is session-scoped and started once (a few seconds); each test leaves the test server's switches as it
found them. No model is loaded: these run under `make test-fast` (`pytest -m "not slow"`).
"""
from __future__ import annotations

import httpx
import pytest
import redis

from tests.conftest import SERVED_NAME, Stack, make_stack
from tests.openai_test_server import OpenAITestServer

# Fail fast when a role is down: one retry per request, the waiting job retries its role every second.
FAST_ROLES = {"UCAI_ROLE_RETRY_S": "1", "UCAI_HEARTBEAT_S": "1",
              **{f"UCAI_{role}__MAX_RETRIES": "1" for role in ("GENERATOR", "CRITIC", "JUDGE", "CHAT")}}
CONTEXT_LENGTH = 4096


@pytest.fixture(scope="session")
def model_server() -> OpenAITestServer:
    server = OpenAITestServer(model=SERVED_NAME, max_model_len=CONTEXT_LENGTH).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def datasets_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def contract_stack(redis_url, model_server, logs, datasets_dir, artifacts_dir) -> Stack:
    """Gateway + one worker on their own queue, every role on the test server."""
    stack = make_stack(redis_url, model_server.url, logs, workers=1, UCAI_DATASETS_DIR=str(datasets_dir),
                       UCAI_ARTIFACTS=str(artifacts_dir),
                       **FAST_ROLES)
    yield stack
    stack.close()


@pytest.fixture(autouse=True)
def _model_server_as_found(model_server):
    """Whatever a test switched on the test server (failures, stopped), the next test finds it up and well."""
    model_server.recover()
    model_server.start()
    yield
    model_server.recover()
    model_server.start()


@pytest.fixture
def api(contract_stack) -> httpx.Client:
    with httpx.Client(base_url=contract_stack.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def redis_client(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
