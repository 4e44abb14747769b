"""OpenAI-compatible chat through the gateway (/v1/models, /v1/chat/completions), with the `openai` client itself,
against the test server standing in for the chat role's vLLM (base model + LoRA adapters by name)."""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.contract.helpers import assert_envelope, marker

pytestmark = pytest.mark.contract
ADAPTERS = ["ethical-sft", "unethical-sft"]


@pytest.fixture
def client(contract_stack, model_server) -> openai.OpenAI:
    model_server.adapters = list(ADAPTERS)
    with openai.OpenAI(base_url=f"{contract_stack.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_lists_base_and_every_adapter(client):
    assert sorted(m.id for m in client.models.list()) == sorted(["base", *ADAPTERS])


def test_completion_from_base_and_from_two_adapters(client):
    prompt = [{"role": "user", "content": f"How do I calm down an angry neighbour? {marker()}"}]
    answers = {}
    for model in ["base", *ADAPTERS]:
        completion = client.chat.completions.create(model=model, messages=prompt, max_tokens=12, temperature=0)
        assert completion.model == model and completion.choices[0].message.content
        answers[model] = completion.choices[0].message.content
    assert len(set(answers.values())) == 3  # each served model answers for itself


def test_stream_arrives_in_incremental_chunks(client, model_server):
    model_server.stream_delay_s = 0.05
    stream = client.chat.completions.create(model="ethical-sft", stream=True, max_tokens=12,
                                            messages=[{"role": "user", "content": f"Say hello {marker()}"}])
    arrivals, pieces = [], []
    for chunk in stream:
        assert chunk.model == "ethical-sft"
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) >= 3 and "".join(pieces).strip()
    assert arrivals[-1] - arrivals[0] > 0.05 * (len(pieces) - 2)  # passed on as produced, not buffered to the end
    assert model_server.streams["finished"] == 1


def test_client_disconnect_aborts_the_upstream_stream(contract_stack, model_server):
    model_server.adapters = list(ADAPTERS)
    model_server.stream_delay_s = 0.2
    body = {"model": "base", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": f"Tell a long story {marker()}"}]}
    with httpx.Client(base_url=contract_stack.url, timeout=30) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        next(response.iter_lines())  # the stream has started; now go away
    deadline = time.monotonic() + 10
    while model_server.streams["aborted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert model_server.streams["aborted"] == 1 and model_server.streams["finished"] == 0


def test_unknown_model_and_bad_body_in_the_envelope(contract_stack, client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404 and "nope" in str(raised.value)  # the client read our envelope
    with httpx.Client(base_url=contract_stack.url, timeout=30) as http:
        missing = http.post("/v1/chat/completions", json={"model": "base"})
        assert_envelope(missing, 422, param="messages")
        unknown = http.post("/v1/chat/completions", json={"model": "nope", "messages": [
            {"role": "user", "content": "hi"}]})
        assert_envelope(unknown, 404, code="model_not_found", param="model")
        refused = http.post("/v1/chat/completions", json={"model": "base", "max_tokens": 100_000, "messages": [
            {"role": "user", "content": "hi"}]})
        assert_envelope(refused, 400, code="model_rejected_request")


def test_chat_model_down_is_a_503(contract_stack, model_server):
    model_server.stop()
    with httpx.Client(base_url=contract_stack.url, timeout=30) as http:
        for response in (http.get("/v1/models"), http.post("/v1/chat/completions", json={
                "model": "base", "messages": [{"role": "user", "content": "hi"}]})):
            body = assert_envelope(response, 503, code="model_unavailable")
            assert response.headers["retry-after"] and body["error"]["message"]
