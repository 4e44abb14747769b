"""The `openai` client against the gateway's /v1 routes, the real bundled model behind them in vllm serve."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import SERVED_NAME

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


def test_models_completion_and_stream_from_the_real_model(client, vllm_url):
    assert "base" in [m.id for m in client.models.list()]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    completion = client.chat.completions.create(model="base", messages=messages, max_tokens=16, temperature=0,
                                                seed=1)
    text = completion.choices[0].message.content
    # The engine's own greedy answer to the same request, word for word (not "Paris": the 135M model's greedy
    # answer to this question depends on the engine dtype, which follows the CPU — fp32 says Paris, bf16 need not).
    direct = httpx.post(f"{vllm_url}/chat/completions", timeout=300, json={
        "model": SERVED_NAME, "messages": messages, "max_tokens": 16, "temperature": 0, "seed": 1}).json()
    assert completion.model == "base" and text.strip() and text == direct["choices"][0]["message"]["content"]
    chunks = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="base", messages=messages, max_tokens=16, temperature=0, seed=1, stream=True)
        if c.choices and c.choices[0].delta.content]
    assert len(chunks) > 3 and "".join(chunks) == text  # the same greedy answer, token by token


def test_unknown_model_is_a_404_the_client_understands(client):
    with pytest.raises(openai.NotFoundError, match="ethical-nope"):
        client.chat.completions.create(model="ethical-nope", messages=[{"role": "user", "content": "hi"}])
