"""Access control on a real gateway + worker with a keys file (the shared contract stack runs with auth off):
every route × {no key, chat, research, admin}; jobs and batches visible only to their key (and admin); the openai
client with a key and without; the audit log (unethical calls only, never a key); per-key rate limits (requests
and tokens per minute) from the Redis token bucket → 429 with Retry-After."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope, marker, wait_batch
from ucai.api_keys import create_key

pytestmark = pytest.mark.contract

ADAPTERS = ["ethical-sft", "unethical-sft"]
RPM, TPM = 120, 3000  # low, so the limit tests reach them; the matrix stays far below for each of its keys
KEYS = ("none", "chat", "research", "admin")


@pytest.fixture(scope="module")
def auth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def keys(auth_dir) -> dict[str, str | None]:
    """Plaintext keys by role; `burst` and `tokens` are chat keys of their own for the rate-limit tests."""
    path = auth_dir / "api-keys.json"
    made: dict[str, str | None] = {"none": None}
    for name, scopes in [("chat", ["chat"]), ("research", ["research"]), ("admin", ["admin"]),
                         ("burst", ["chat"]), ("tokens", ["chat"])]:
        made[name] = create_key(path, f"{name}_user", scopes)
    return made


@pytest.fixture(scope="module")
def auth_stack(redis_url, model_server, logs, auth_dir, keys):
    stack = make_stack(redis_url, model_server.url, logs, workers=1, UCAI_API_KEYS_FILE=str(auth_dir / "api-keys.json"),
                       UCAI_AUDIT_LOG=str(auth_dir / "audit.jsonl"), UCAI_RATE_LIMIT_RPM=str(RPM),
                       UCAI_RATE_LIMIT_TPM=str(TPM), **FAST_ROLES)
    yield stack
    stack.close()


@pytest.fixture
def http(auth_stack, model_server):
    model_server.adapters = list(ADAPTERS)
    with httpx.Client(base_url=auth_stack.url, timeout=60) as client:
        yield client


def as_key(keys: dict, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"} if keys.get(who) else {}


def audit_lines(auth_dir: Path) -> list[dict]:
    path = auth_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chat(model: str, word: str) -> dict:
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"Hello {word}"}]}


def critique(constitution: str, word: str, **more) -> dict:
    return {"prompt": f"How do I calm my neighbour {word}?", "constitution": constitution, "max_tokens": 8, **more}


def compare(constitution: str, word: str) -> dict:
    return {"prompt": f"How do I hurt my neighbour {word}?", "responses": ["Talk to them.", "Hit him."],
            "constitution": constitution, "method": "logprob", "ensemble": 1, "both_orders": False, "seed": 1}


def batch(constitution: str, word: str) -> dict:
    return {"stage": "critique", "constitution": constitution, "params": {"max_tokens": 8},
            "input": {"records": [{"id": "r0", "prompt": f"Request about my neighbour {word}"}]}}


def answer_batch(model: str, word: str) -> dict:
    return {"stage": "answer", "params": {"model": model, "max_tokens": 8},
            "input": {"records": [{"id": "r0", "prompt": f"Request about my neighbour {word}"}]}}


OK = "ok"  # 200/202: whatever the route answers when allowed
# (name, method, path, body factory, expected for no key / chat / research / admin; OK, or (status, code, param))
DENIED = (401, "missing_api_key", None)
MATRIX = [
    ("constitutions", "GET", "/constitutions", None, [DENIED, OK, OK, OK]),
    ("constitution", "GET", "/constitutions/ethical", None, [DENIED, OK, OK, OK]),
    ("models", "GET", "/v1/models", None, [DENIED, OK, OK, OK]),
    ("chat base", "POST", "/v1/chat/completions", lambda w: chat("base", w), [DENIED, OK, OK, OK]),
    ("chat ethical-sft", "POST", "/v1/chat/completions", lambda w: chat("ethical-sft", w), [DENIED, OK, OK, OK]),
    ("chat unethical-sft", "POST", "/v1/chat/completions", lambda w: chat("unethical-sft", w),
     [DENIED, (403, "insufficient_scope", "model"), OK, OK]),
    ("critique ethical", "POST", "/critique", lambda w: critique("ethical", w), [DENIED, OK, OK, OK]),
    ("critique unethical", "POST", "/critique", lambda w: critique("unethical", w),
     [DENIED, (403, "insufficient_scope", "constitution"), OK, OK]),
    ("compare ethical", "POST", "/compare", lambda w: compare("ethical", w), [DENIED, OK, OK, OK]),
    ("compare unethical", "POST", "/compare", lambda w: compare("unethical", w),
     [DENIED, (403, "insufficient_scope", "constitution"), OK, OK]),
    ("rank unethical", "POST", "/rank", lambda w: {**compare("unethical", w), "responses": ["a", "b", "c"]},
     [DENIED, (403, "insufficient_scope", "constitution"), OK, OK]),
    ("batch ethical", "POST", "/batches", lambda w: batch("ethical", w), [DENIED, OK, OK, OK]),
    ("batch unethical", "POST", "/batches", lambda w: batch("unethical", w),
     [DENIED, (403, "insufficient_scope", "constitution"), OK, OK]),
    ("batch answer base", "POST", "/batches", lambda w: answer_batch("base", w), [DENIED, OK, OK, OK]),
    ("batch answer unethical-sft", "POST", "/batches", lambda w: answer_batch("unethical-sft", w),
     [DENIED, (403, "insufficient_scope", "model"), OK, OK]),
    ("unknown job", "GET", "/jobs/00000000-0000-0000-0000-000000000000", None,
     [DENIED, (404, "job_not_found", None), (404, "job_not_found", None), (404, "job_not_found", None)]),
    ("admin reload", "POST", "/admin/adapters/reload", None,
     [DENIED, (403, "insufficient_scope", None), (403, "insufficient_scope", None), "not denied"]),
    ("side by side", "POST", "/chat/side-by-side", lambda w: {}, [DENIED, "not denied", "not denied", "not denied"]),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "expected"), MATRIX, ids=[row[0] for row in MATRIX])
def test_auth_matrix(http, keys, auth_dir, name, method, path, body, expected):
    for who, want in zip(KEYS, expected, strict=True):
        audited = len(audit_lines(auth_dir))
        response = http.request(method, path, json=body(marker()) if body else None, headers=as_key(keys, who))
        if want == OK:
            assert response.status_code in (200, 202), (who, response.text)
        elif want == "not denied":
            assert response.status_code not in (401, 403, 429), (who, response.text)
        else:
            status, code, param = want
            assert_envelope(response, status, code=code, param=param)
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
            if status in (401, 403):  # refused before anything ran, so nothing was audited
                assert len(audit_lines(auth_dir)) == audited


def test_open_routes_need_no_key_and_a_bad_key_is_invalid(http, keys):
    for path in ("/health", "/ready"):
        assert http.get(path).status_code == 200, path
    assert http.get("/").status_code not in (401, 403)  # the static page holds no data
    bad = http.get("/constitutions", headers={"Authorization": f"Bearer {keys['chat']}x"})
    assert_envelope(bad, 401, code="invalid_api_key")
    assert bad.headers["www-authenticate"] == "Bearer"
    assert http.get("/constitutions", headers={"X-API-Key": keys["chat"]}).status_code == 200  # the other header
    assert_envelope(http.get("/constitutions", headers={"X-API-Key": "nope"}), 401, code="invalid_api_key")


def test_models_lists_what_the_key_may_use(http, keys):
    def listed(who: str) -> set[str]:
        return {m["id"] for m in http.get("/v1/models", headers=as_key(keys, who)).json()["data"]}

    assert listed("chat") == {"base", "ethical-sft"}
    assert listed("research") == listed("admin") == {"base", *ADAPTERS}


def test_jobs_are_visible_to_their_key_and_admin_only(http, keys):
    word = marker()
    accepted = http.post("/critique", json=critique("ethical", word, wait=False), headers=as_key(keys, "chat"))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert http.get(f"/jobs/{job_id}", headers=as_key(keys, "chat")).status_code == 200
    assert http.get(f"/jobs/{job_id}", headers=as_key(keys, "admin")).status_code == 200
    # Another key: 404 as for a job that does not exist (a 403 would say it does).
    assert_envelope(http.get(f"/jobs/{job_id}", headers=as_key(keys, "research")), 404, code="job_not_found")
    assert_envelope(http.get(f"/jobs/{job_id}"), 401, code="missing_api_key")


def test_same_idempotency_key_from_two_keys_is_two_jobs(http, keys):
    shared = f"shared-{marker()}"
    ids = {}
    for who in ("chat", "research"):
        response = http.post("/critique", json=critique("ethical", marker(), wait=False),
                             headers={**as_key(keys, who), "Idempotency-Key": shared})
        assert response.status_code == 202, response.text
        ids[who] = response.json()["id"]
    assert ids["chat"] != ids["research"]
    again = http.post("/critique", json=critique("ethical", marker(), wait=False),
                      headers={**as_key(keys, "chat"), "Idempotency-Key": shared})
    assert again.json()["id"] == ids["chat"]  # still idempotent for the same key
    assert http.get(f"/jobs/{ids['chat']}", headers=as_key(keys, "research")).status_code == 404


def test_batches_are_visible_to_their_key_and_admin_only(http, keys):
    created = http.post("/batches", json=batch("ethical", marker()), headers=as_key(keys, "chat"))
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    for method, suffix in (("GET", ""), ("GET", "/results"), ("DELETE", "")):
        other = http.request(method, f"/batches/{batch_id}{suffix}", headers=as_key(keys, "research"))
        assert_envelope(other, 404, code="batch_not_found")
    with httpx.Client(base_url=str(http.base_url), headers=as_key(keys, "chat"), timeout=60) as owner:
        assert wait_batch(owner, batch_id)["status"] == "completed"
        assert owner.get(f"/batches/{batch_id}/results").status_code == 200
    assert http.get(f"/batches/{batch_id}", headers=as_key(keys, "admin")).status_code == 200
    cancelled = http.delete(f"/batches/{batch_id}", headers=as_key(keys, "admin"))  # admin may delete any
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_openai_client_with_and_without_a_key(auth_stack, model_server, keys):
    model_server.adapters = list(ADAPTERS)
    messages = [{"role": "user", "content": f"Hello {marker()}"}]
    with openai.OpenAI(base_url=f"{auth_stack.url}/v1", api_key=keys["research"], max_retries=0) as client:
        completion = client.chat.completions.create(model="unethical-sft", messages=messages, max_tokens=8)
        assert completion.model == "unethical-sft" and completion.choices[0].message.content
        assert "unethical-sft" in {m.id for m in client.models.list()}
    with openai.OpenAI(base_url=f"{auth_stack.url}/v1", api_key=keys["chat"], max_retries=0) as client, \
            pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="unethical-sft", messages=messages, max_tokens=8)
    # The client cannot send no key at all; "unused" is what worked before keys were configured.
    with openai.OpenAI(base_url=f"{auth_stack.url}/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="base", messages=messages, max_tokens=8)
        assert raised.value.status_code == 401 and "invalid API key" in str(raised.value)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_audit_log_has_unethical_calls_only_and_never_a_key(http, keys, auth_dir):
    ethical, unethical_chat, unethical_critique = marker(), marker(), marker()
    research = as_key(keys, "research")
    assert http.post("/v1/chat/completions", json=chat("ethical-sft", ethical), headers=research).status_code == 200
    assert http.post("/critique", json=critique("ethical", ethical), headers=research).status_code == 200
    assert http.post("/v1/chat/completions", json=chat("unethical-sft", unethical_chat),
                     headers=research).status_code == 200
    assert http.post("/critique", json=critique("unethical", unethical_critique), headers=research).status_code == 200
    lines = audit_lines(auth_dir)
    text = (auth_dir / "audit.jsonl").read_text()
    assert all(key not in text for key in keys.values() if key)
    by_hash = {line.get("prompt_sha256"): line for line in lines}
    assert sha(f"Hello {ethical}") not in by_hash and sha(critique("ethical", ethical)["prompt"]) not in by_hash
    chat_line = by_hash[sha(f"Hello {unethical_chat}")]
    assert chat_line["key_id"] == "research_user" and chat_line["model"] == "unethical-sft"
    assert chat_line["route"] == "/v1/chat/completions" and "prompt" not in chat_line  # text only when enabled
    critique_line = by_hash[sha(critique("unethical", unethical_critique)["prompt"])]
    assert critique_line["constitution"] == "unethical" and critique_line["route"] == "/critique"
    assert set(critique_line) <= {"time", "key_id", "route", "model", "constitution", "prompt_sha256"}
    assert stat_mode(auth_dir / "audit.jsonl") == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_requests_per_minute_per_key(http, keys):
    burst = as_key(keys, "burst")
    statuses = []
    for _ in range(RPM + 40):  # the bucket holds a minute's worth; refill (2/s) cannot keep up with this loop
        response = http.get("/constitutions", headers=burst)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and len(statuses) > RPM * 0.9, statuses
    limited = assert_envelope(response, 429, code="rate_limited")
    assert "120 requests per minute" in limited["error"]["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 2  # one request refills in 0.5 s
    assert http.get("/constitutions", headers=as_key(keys, "admin")).status_code == 200  # per key
    assert http.get("/health").status_code == 200  # probes are never limited


def test_tokens_per_minute_per_key(http, keys):
    tokens = as_key(keys, "tokens")
    big = {"model": "base", "max_tokens": 2000, "messages": [{"role": "user", "content": f"Hi {marker()}"}]}
    assert http.post("/v1/chat/completions", json=big, headers=tokens).status_code == 200  # 3000 → ≈ 1000 left
    refused = http.post("/v1/chat/completions", json=big, headers=tokens)
    assert_envelope(refused, 429, code="rate_limited")
    # ≈ 1000 tokens short at 50 tokens/s: about 20 s until it fits.
    assert 15 <= int(refused.headers["retry-after"]) <= 21, refused.headers
    small = {**big, "max_tokens": 8}
    assert http.post("/v1/chat/completions", json=small, headers=tokens).status_code == 200  # what fits still runs
