"""Hostile input and a hanging Redis (issue 13), against a real gateway process:

- bodies that are not strict JSON (invalid UTF-8, NaN / Infinity, a lone surrogate, an integer of 5,000 digits)
  → 400 `invalid_json`; JSON nested deeper than 64 (also 100,000 deep: the parser's recursion) → 400
  `json_too_deep`, on every route that takes a body;
- bodies at and over the size limit (declared and streamed), 1 MB prompts, unknown fields, huge `ensemble` /
  `rounds` / `max_tokens` → 4xx in the envelope naming the field; nothing queued, no model call;
- the gateway stays up and its memory (RSS) stays flat over hundreds of such requests;
- a Redis that accepts and never answers → 503 `queue_unavailable` with Retry-After after the socket timeout,
  and 200 again once it answers.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from services.runtime.local_stack import free_port
from tests.conftest import make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope, entries_added, marker
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.contract

LIMIT = 1_000_000  # UCAI_MAX_BODY_BYTES's default, which the contract stack runs with
JSON = {"content-type": "application/json"}
MESSAGES = [{"role": "user", "content": "Is it fine to read my partner's messages?"}]
# One valid body per route that takes one (each would be accepted as it is).
VALID = {
    "/critique": {"prompt": "Is it fine to read my partner's messages?", "wait": False},
    "/compare": {"prompt": "hi", "responses": ["a", "b"], "wait": False},
    "/rank": {"prompt": "hi", "responses": ["a", "b", "c"], "wait": False},
    "/batches": {"stage": "categorise", "input": {"records": [{"id": "r0", "prompt": "hi"}]}},
    "/v1/chat/completions": {"model": "base", "messages": MESSAGES},
    "/chat/side-by-side": {"messages": MESSAGES, "models": ["base", "base"]},
}


def _nested(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


# (name, raw body, expected code): each is refused before any route parses it.
NOT_STRICT_JSON = [
    ("invalid UTF-8", b'{"prompt": "caf\xe9 \xff"}', "invalid_json"),
    ("UTF-8-encoded surrogate", b'{"prompt": "\xed\xa0\x80"}', "invalid_json"),
    ("NaN", b'{"prompt": "hi", "temperature": NaN}', "invalid_json"),
    ("Infinity", b'{"prompt": "hi", "temperature": -Infinity}', "invalid_json"),
    ("number overflowing to infinity", b'{"prompt": "hi", "temperature": 1e999}', "invalid_json"),
    ("lone surrogate", b'{"prompt": "hi \\ud800 there"}', "invalid_json"),
    ("lone surrogate in a key", b'{"prompt": "hi", "\\udc00": 1}', "invalid_json"),
    ("5,000-digit integer", b'{"prompt": "hi", "rounds": ' + b"9" * 5000 + b"}", "invalid_json"),
    ("truncated", b'{"prompt": "hi",', "invalid_json"),
    ("nested 65 deep", _nested(65), "json_too_deep"),
    ("nested 100,000 deep", _nested(100_000), "json_too_deep"),
]


@pytest.mark.parametrize("path", list(VALID))
@pytest.mark.parametrize(("name", "body", "code"), NOT_STRICT_JSON, ids=[c[0] for c in NOT_STRICT_JSON])
def test_a_body_that_is_not_strict_json_is_400(api, contract_stack, redis_client, path, name, body, code):
    queue = contract_stack.env["UCAI_QUEUE_NAME"]
    before = entries_added(redis_client, queue)
    error = assert_envelope(api.post(path, content=body, headers=JSON), 400, code=code)["error"]
    assert error["type"] == "invalid_request_error"
    assert entries_added(redis_client, queue) == before  # nothing queued
    assert api.get("/health").status_code == 200


def test_strict_json_still_accepts_what_is_json(api):
    """What looks hostile but is valid: a surrogate *pair* (an emoji), an escaped backslash before `ud800`,
    brackets inside strings, 64 levels of nesting in a free-form field, a `+json` content type."""
    ok = api.post("/critique", headers=JSON,
                  content=b'{"prompt": "\\ud83d\\ude00 \\\\ud800 [[[{{{", "wait": false}')
    assert ok.status_code == 202, ok.text
    deep_params = b'{"stage": "categorise", "params": {"x": ' + b"[" * 62 + b"]" * 62 + \
        b'}, "input": {"records": [{"id": "r0", "prompt": "hi"}]}}'
    assert api.post("/batches", content=deep_params, headers=JSON).status_code == 202
    vendor = api.post("/critique", content=b'{"prompt": "hi", "wait": false}',
                      headers={"content-type": "application/vnd.ucai+json; charset=utf-8"})
    assert vendor.status_code == 202, vendor.text
    # A JSON content type with a vendor suffix is checked too.
    assert_envelope(api.post("/critique", content=b'{"prompt": NaN}',
                             headers={"content-type": "application/merge-patch+json"}), 400, code="invalid_json")


def test_bodies_at_and_over_the_limit(api, model_server, redis_client, contract_stack):
    word, queue = marker(), contract_stack.env["UCAI_QUEUE_NAME"]
    before = entries_added(redis_client, queue)
    head = f'{{"prompt": "{word} '.encode()
    # Exactly at the limit: read and parsed; a 1 MB prompt cannot fit the model's context → 400 before queueing.
    at_limit = head + b"lock " * ((LIMIT - len(head) - 2) // 5)
    at_limit += b" " * (LIMIT - len(at_limit) - 2) + b'"}'
    assert len(at_limit) == LIMIT
    assert_envelope(api.post("/critique", content=at_limit, headers=JSON), 400, code="context_length_exceeded",
                    param="prompt")
    over = at_limit[:-2] + b' "}'
    assert_envelope(api.post("/critique", content=over, headers=JSON), 413, code="body_too_large")

    def streamed():  # no Content-Length: counted while it streams, refused past the limit
        yield head
        for _ in range(LIMIT // 10_000 + 1):
            yield b"lock " * 2000
        yield b'"}'

    assert_envelope(api.post("/critique", content=streamed(), headers=JSON), 413, code="body_too_large")
    assert entries_added(redis_client, queue) == before
    assert model_server.count("chat", containing=word) == 0


@pytest.mark.parametrize("path", ["/critique", "/compare", "/rank", "/v1/chat/completions", "/chat/side-by-side"])
def test_a_1mb_prompt_is_4xx(api, model_server, path):
    """A prompt of 2^20 characters (over the limit once wrapped in JSON: 413) and one that fits the limit but not
    the model's context (400, for /v1 by the engine)."""
    word = marker()
    huge = f"{word} " + "lock " * (2**20 // 5)
    small = f"{word} " + "lock " * 190_000  # ≈ 950 kB
    for prompt, status in ((huge, 413), (small, 400)):
        body = dict(VALID[path])
        if "messages" in body:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        response = api.post(path, json=body)
        assert 400 <= response.status_code < 500, response.text[:300]
        assert_envelope(response, status)
    if not path.startswith(("/v1", "/chat")):  # refused by the gateway itself; the chat routes pass the engine's on
        assert model_server.count("chat", containing=word) == 0


@pytest.mark.parametrize("path", ["/critique", "/compare", "/rank", "/batches", "/chat/side-by-side"])
def test_unknown_fields_are_422_naming_them(api, path):
    assert_envelope(api.post(path, json={**VALID[path], "colour": "red"}), 422, param="colour")
    nested = {**VALID[path]}
    if "messages" in nested:
        nested["messages"] = [{**MESSAGES[0], "mood": "grim"}]
        assert_envelope(api.post(path, json=nested), 422, param="messages.0.mood")


@pytest.mark.parametrize(("path", "field", "value"), [
    ("/critique", "rounds", 10**9), ("/critique", "rounds", 2**64), ("/critique", "max_tokens", 10**12),
    ("/critique", "max_tokens", -1), ("/critique", "timeout_s", -5),
    ("/compare", "ensemble", 10**6), ("/compare", "ensemble", 10**100),
    ("/rank", "ensemble", 10**6), ("/rank", "max_pairs", 0),
    ("/chat/side-by-side", "max_tokens", 10**9),
])
def test_huge_numbers_are_422_naming_the_field(api, model_server, path, field, value):
    word = marker()
    body = {**VALID[path], field: value}
    if "prompt" in body:
        body["prompt"] = f"{word} {body['prompt']}"
    assert_envelope(api.post(path, json=body), 422, param=field)
    assert model_server.count("chat", containing=word) == 0


def test_huge_max_tokens_on_v1_is_refused_by_the_engine_as_400(api):
    response = api.post("/v1/chat/completions", json={**VALID["/v1/chat/completions"], "max_tokens": 10**12})
    assert_envelope(response, 400, code="model_rejected_request")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_gateway_stays_up_and_its_memory_flat_under_hostile_input(contract_stack):
    """Rounds of every hostile body above (about 3.5 MB of them per round, most refused at the door), 4 at a time:
    after a warm-up round, 30 more add under 24 MB to the gateway's RSS (a leak of the bodies would add ≥ 90 MB)."""
    pid = contract_stack.gateway.pid
    bodies = [(path, body) for _, body, _ in NOT_STRICT_JSON for path in ("/critique", "/v1/chat/completions")]
    over = b'{"prompt": "' + b"x" * LIMIT + b'"}'
    near = b'{"prompt": "' + b"lock " * ((LIMIT - 20) // 5) + b'"}'
    bodies += [("/critique", over), ("/rank", over), ("/critique", near), ("/batches", _nested(50_000))]

    async def one_round(client: httpx.AsyncClient) -> list[int]:
        gate = asyncio.Semaphore(4)

        async def post(path: str, body: bytes) -> int:
            async with gate:
                return (await client.post(path, content=body, headers=JSON)).status_code

        return await asyncio.gather(*(post(path, body) for path, body in bodies))

    async def rounds(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=contract_stack.url, timeout=60) as client:
            statuses = []
            for _ in range(n):
                statuses += await one_round(client)
            return statuses

    warm = asyncio.run(rounds(2))
    start = _rss_kb(pid)
    statuses = asyncio.run(rounds(30))
    end = _rss_kb(pid)
    print(f"gateway RSS {start} → {end} kB over {len(statuses)} hostile requests")  # the figure, with -s
    assert all(400 <= s < 500 for s in warm + statuses), sorted(set(warm + statuses))
    assert contract_stack.gateway.poll() is None and httpx.get(f"{contract_stack.url}/health").status_code == 200
    assert end - start < 24 * 1024, f"gateway RSS grew {start} → {end} kB over {len(statuses)} hostile requests"


def test_a_hanging_redis_is_503_queue_unavailable_then_recovers(redis_url, model_server, logs):
    proxy = TcpProxy(free_port(), int(redis_url.rsplit(":", 1)[1].split("/")[0]))  # hang(): Redis stops answering
    proxy.start()
    timeouts = {"UCAI_REDIS_SOCKET_TIMEOUT_S": "0.5", "UCAI_REDIS_SOCKET_CONNECT_TIMEOUT_S": "0.5"}
    stack = None
    try:
        stack = make_stack(f"redis://127.0.0.1:{proxy.listen_port}/0", model_server.url, logs, workers=0,
                           **FAST_ROLES, **timeouts)
        with httpx.Client(base_url=stack.url, timeout=60) as api:
            accepted = api.post("/critique", json={"prompt": f"Hello {marker()}", "wait": False})
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            proxy.hang()
            for method, path, body in (("POST", "/critique", {"prompt": f"Hello {marker()}", "wait": False}),
                                       ("GET", f"/jobs/{job_id}", None),
                                       ("POST", "/batches", {"stage": "categorise",
                                                             "input": {"records": [{"id": "r0", "prompt": "hi"}]}})):
                started = time.monotonic()
                response = api.request(method, path, json=body)
                took = time.monotonic() - started
                error = assert_envelope(response, 503, code="queue_unavailable")["error"]
                assert error["type"] == "service_unavailable"
                assert int(response.headers["retry-after"]) >= 1
                assert took < 15, f"{path} took {took:.1f}s with a 0.5 s socket timeout"
            assert_envelope(api.get("/ready"), 503, code="not_ready")
            assert stack.gateway.poll() is None and api.get("/health").status_code == 200
            proxy.answer()
            deadline = time.monotonic() + 30
            while (view := api.get(f"/jobs/{job_id}")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert view.status_code == 200 and view.json()["status"] == "queued", view.text  # nothing was lost
    finally:
        proxy.answer()
        if stack is not None:
            stack.close()
        proxy.close()
