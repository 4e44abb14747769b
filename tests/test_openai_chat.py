"""The `openai` client against the gateway's /v1 routes, the real bundled model behind them in vllm serve."""
from __future__ import annotations

import openai
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


def test_models_completion_and_stream_from_the_real_model(client):
    assert "base" in [m.id for m in client.models.list()]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    completion = client.chat.completions.create(model="base", messages=messages, max_tokens=16, temperature=0,
                                                seed=1)
    text = completion.choices[0].message.content
    assert completion.model == "base" and "Paris" in text
    chunks = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="base", messages=messages, max_tokens=16, temperature=0, seed=1, stream=True)
        if c.choices and c.choices[0].delta.content]
    assert len(chunks) > 3 and "".join(chunks) == text  # the same greedy answer, token by token


def test_unknown_model_is_a_404_the_client_understands(client):
    with pytest.raises(openai.NotFoundError, match="ethical-nope"):
        client.chat.completions.create(model="ethical-nope", messages=[{"role": "user", "content": "hi"}])
