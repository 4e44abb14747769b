"""The OpenAI-compatible test server itself: the shapes the role client reads (models with max_model_len,
chat completions with usage and top log-probabilities, /tokenize, completions with prompt log-probabilities),
vLLM's refusals, determinism, call counting and the failure switches — checked through `ucai.roles.RoleClient`
where the product reads them, so a drift between the two shows up here first."""
from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from tests.conftest import SERVED_NAME
from tests.contract.helpers import marker
from tests.openai_test_server import MAX_LOGPROBS, OpenAITestServer
from ucai.roles import RoleClient, RoleRequestError, RoleUnavailable
from ucai.settings import RoleSettings

pytestmark = pytest.mark.contract

JUDGE_PREFILL = [{"role": "user", "content": "Which is better? Options: (A) x (B) y"},
                 {"role": "assistant", "content": "The answer is: ("}]


def run_role(server: OpenAITestServer, call, **settings):
    async def go():
        async with httpx.AsyncClient() as http:
            role = RoleClient("judge", RoleSettings(base_url=server.url, model=SERVED_NAME, max_retries=1,
                                                    **settings), http)
            return await call(role)
    return asyncio.run(go())


def test_models_ping_context_length_and_tokenize(model_server):
    before = model_server.calls
    assert run_role(model_server, lambda role: role.ping()) is None
    assert run_role(model_server, lambda role: role.context_length()) == model_server.max_model_len
    short = run_role(model_server, lambda role: role.count_chat_tokens([{"role": "user", "content": "hi"}]))
    long = run_role(model_server, lambda role: role.count_chat_tokens([{"role": "user", "content": "hi " * 50}]))
    assert 0 < short < long
    after = model_server.calls
    assert after["models"] - before["models"] == 2 and after["tokenize"] - before["tokenize"] == 2


def test_chat_is_deterministic_honours_max_tokens_and_reports_usage(model_server):
    word = marker()
    messages = [{"role": "user", "content": f"Tell me about {word}"}]
    first = run_role(model_server, lambda role: role.chat(messages, max_tokens=4, seed=3))
    again = run_role(model_server, lambda role: role.chat(messages, max_tokens=4, seed=3))
    other = run_role(model_server, lambda role: role.chat(messages, max_tokens=50, seed=4))
    assert first.text == again.text and first.text != other.text
    assert 1 <= len(first.text.split()) <= 4 and first.completion_tokens == len(first.text.split())
    usage = first.raw["usage"]
    assert first.prompt_tokens > 0 and usage["total_tokens"] == first.prompt_tokens + first.completion_tokens
    assert model_server.count("chat", containing=word, status=200) == 3


def test_judge_request_gets_label_log_probabilities(model_server):
    completion = run_role(model_server, lambda role: role.chat(
        JUDGE_PREFILL, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=MAX_LOGPROBS,
        add_generation_prompt=False, continue_final_message=True))
    top = completion.raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert len(top) == MAX_LOGPROBS
    assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    assert all(t["logprob"] <= 0 for t in top) and sum(math.exp(t["logprob"]) for t in top) <= 1.0 + 1e-6
    tokens = {t["token"] for t in top}
    assert {"A", "B"} & tokens and completion.text == top[0]["token"]


def test_structured_choice_and_no_labels_switch(model_server):
    model_server.labels_in_top = False
    plain = run_role(model_server, lambda role: role.chat(
        JUDGE_PREFILL, max_tokens=1, logprobs=True, top_logprobs=5, add_generation_prompt=False,
        continue_final_message=True))
    assert not {t["token"].strip("( ") for t in plain.raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"]} \
        & {"A", "B"}
    constrained = run_role(model_server, lambda role: role.chat(
        JUDGE_PREFILL, max_tokens=1, logprobs=True, top_logprobs=5, add_generation_prompt=False,
        continue_final_message=True, structured_outputs={"choice": ["A", "B"]}))
    top = constrained.raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert {t["token"] for t in top} == {"A", "B"} and constrained.text in {"A", "B"}


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"add_generation_prompt": True, "continue_final_message": True}, "continue_final_message"),
    ({"logprobs": True, "top_logprobs": MAX_LOGPROBS + 1}, "top_logprobs"),
    ({"top_logprobs": 2}, "logprobs"),
    ({"model": "other-model"}, "does not exist"),
    ({"max_tokens": 5000}, "maximum context length"),
])
def test_refuses_what_vllm_refuses(model_server, extra, fragment):
    body = {"model": SERVED_NAME, "messages": JUDGE_PREFILL, "max_tokens": 1, **extra}
    response = httpx.post(f"{model_server.url}/chat/completions", json=body)
    assert response.status_code in {400, 404} and fragment in response.json()["error"]["message"]


def test_completions_echo_scores_the_prompt(model_server):
    response = httpx.post(f"{model_server.url}/completions", json={
        "model": SERVED_NAME, "prompt": "The quick brown fox", "max_tokens": 2, "echo": True, "logprobs": 1,
        "prompt_logprobs": 0})
    choice = response.json()["choices"][0]
    assert choice["text"].startswith("The quick brown fox")
    logprobs = choice["logprobs"]
    assert logprobs["tokens"][:4] == ["The", " quick", " brown", " fox"] and len(logprobs["tokens"]) == 6
    assert logprobs["token_logprobs"][0] is None and all(lp < 0 for lp in logprobs["token_logprobs"][1:])
    assert logprobs["text_offset"][:4] == [0, 3, 9, 15]
    assert choice["prompt_logprobs"][0] is None and len(choice["prompt_logprobs"]) == 4
    assert response.json()["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_failure_switches_reach_the_role_client(model_server):
    word = marker()
    model_server.reject_containing = word
    with pytest.raises(RoleRequestError):
        run_role(model_server, lambda role: role.chat([{"role": "user", "content": word}]))
    assert model_server.count("chat", containing=word, status=400) == 1  # a refusal is not retried
    model_server.recover()

    model_server.fail(503)
    with pytest.raises(RoleUnavailable):
        run_role(model_server, lambda role: role.chat([{"role": "user", "content": word}]))
    with pytest.raises(RoleUnavailable):
        run_role(model_server, lambda role: role.ping())
    assert model_server.count("chat", containing=word, status=503) == 2  # retried once (max_retries=1)
    model_server.recover()

    model_server.stop()
    with pytest.raises(RoleUnavailable):
        run_role(model_server, lambda role: role.ping())
    model_server.start()
    assert run_role(model_server, lambda role: role.ping()) is None
