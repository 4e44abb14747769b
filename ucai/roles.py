"""The model-role client: generator, critic and judge are OpenAI-compatible HTTP endpoints.

Works with any OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API). Retries
429/5xx/connection errors with exponential backoff (honouring Retry-After), bounds the
number of requests in flight per role, and tells a role that is down (`RoleUnavailable`,
worth retrying later) from a request the role refused (`RoleRequestError`, permanent).
Every model call (each attempt) is counted here, once, in the process's `ucai.metrics.RoleMetrics` when given.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import random
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ucai.metrics import RoleMetrics
from ucai.settings import ROLE_NAMES, RoleSettings, Settings

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RoleError(Exception):
    def __init__(self, role: str, message: str, status: int | None = None):
        super().__init__(f"{role}: {message}")
        self.role = role
        self.status = status


class RoleUnavailable(RoleError):
    """The endpoint did not answer (or kept answering 429/5xx) — retry later, keep the job."""


class RoleRequestError(RoleError):
    """The endpoint refused the request (4xx, e.g. prompt longer than the context) — permanent."""

    def __init__(self, role: str, message: str, status: int | None = None, code: str = "model_rejected_request"):
        super().__init__(role, message, status)
        self.code = code


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def top_logprobs(self, position: int = 0) -> list[dict[str, Any]]:
        """`[{token, logprob}, …]` of one generated position (the request asked for `logprobs`/`top_logprobs`)."""
        return self.raw["choices"][0]["logprobs"]["content"][position]["top_logprobs"]


class PromptLogprobMemo:
    """The last `entries` answers of prompt_logprobs, by (model, token ids), each kept for `ttl_s`.

    A prompt's log-probabilities are a function of the model and the tokens alone (no sampling), and vLLM reads no
    prefix cache for a request that asks for them, so a repeat costs a whole prefill. The contrastive judge repeats
    many: it scores each answer on its own, and an answer compared with several others — an evaluation's model
    pairs, a constitution and then its inversion (whose personas are the same two, swapped) — is scored each time.
    The time limit bounds how long a model replaced under the same name (an adapter reloaded) could be answered from
    here. The tokens are kept as a 16-byte digest and the values as doubles (NaN for the first token's None): ~1 kB
    per 100 tokens, ~10 MB at 8192 prompts of 150 tokens."""

    def __init__(self, entries: int, ttl_s: float = 600.0):
        self.entries, self.ttl_s = entries, ttl_s
        self._items: OrderedDict[tuple[str, bytes], tuple[float, array]] = OrderedDict()

    @staticmethod
    def key(model: str, tokens: Sequence[int]) -> tuple[str, bytes]:
        return model, hashlib.blake2b(array("q", tokens).tobytes(), digest_size=16).digest()

    def get(self, key: tuple[str, bytes]) -> list[float | None] | None:
        item = self._items.get(key)
        if item is None:
            return None
        stored, values = item
        if time.monotonic() - stored > self.ttl_s:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return [None if math.isnan(v) else v for v in values]

    def put(self, key: tuple[str, bytes], logprobs: list[float | None]) -> None:
        if self.entries <= 0:
            return
        self._items[key] = (time.monotonic(), array("d", (math.nan if v is None else v for v in logprobs)))
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)


class RoleClient:
    # Awaited before every model request, inside the request slot (the worker: raises unless it still holds the job's
    # lease, so a job another worker took over makes no further model call).
    guard: Callable[[], Awaitable[None]] | None = None

    def __init__(self, name: str, settings: RoleSettings, http: httpx.AsyncClient, metrics: RoleMetrics | None = None):
        self.name = name
        self.settings = settings
        self.http = http
        self.metrics = metrics
        self._slots = asyncio.Semaphore(settings.concurrency)
        self.base_url = settings.base_url.rstrip("/")
        self._logprob_memo = PromptLogprobMemo(settings.prompt_logprobs_memo)  # shared with guarded() copies

    def guarded(self, guard: Callable[[], Awaitable[None]]) -> RoleClient:
        """This client — the same connection pool and request slots — with `guard` awaited before every request."""
        clone = copy.copy(self)
        clone.guard = guard
        return clone

    @property
    def model(self) -> str:
        return self.settings.model

    def _sampling(self, max_tokens: int | None, temperature: float | None, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "max_tokens": max_tokens or self.settings.max_tokens,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "top_p": self.settings.top_p,
        }
        if seed is not None:
            body["seed"] = seed
        return body

    async def chat(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
        temperature: float | None = None, seed: int | None = None, **extra: Any,
    ) -> Completion:
        body = {**self._sampling(max_tokens, temperature, seed), "messages": messages, **extra}
        data = await self.post_json("/chat/completions", body)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
            raw=data,
        )

    async def tokenize_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                            continue_final_message: bool = False) -> list[int]:
        """Token ids of `messages` rendered with the model's chat template (vLLM's /tokenize, at the server root)."""
        root = self.base_url.removesuffix("/v1")
        data = await self._post_url(f"{root}/tokenize", {
            "model": self.settings.model, "messages": messages, "add_generation_prompt": add_generation_prompt,
            "continue_final_message": continue_final_message})
        if "tokens" not in data:
            raise RoleRequestError(self.name, f"{root}/tokenize returned no token ids", code="method_unsupported")
        return [int(t) for t in data["tokens"]]

    async def prompt_logprobs(self, token_ids: list[int]) -> list[float | None]:
        """log P(token_i | tokens before it) for every prompt token (None for the first): vLLM's /v1/completions
        with `prompt_logprobs`, which returns the prompt token's own log-probability first. A repeat within the
        memo's reach (`PromptLogprobMemo`) is answered without a model call."""
        key = self._logprob_memo.key(self.settings.model, token_ids)  # hashed once, for the lookup and the store
        if (known := self._logprob_memo.get(key)) is not None:
            return known
        data = await self.post_json("/completions", {"model": self.settings.model, "prompt": token_ids, "max_tokens": 1,
                                                 "temperature": 0.0, "prompt_logprobs": 0})
        entries = data["choices"][0].get("prompt_logprobs")
        if not entries or len(entries) != len(token_ids):
            raise RoleRequestError(self.name, f"{self.base_url}/completions returned no prompt log-probabilities",
                                   code="method_unsupported")
        logprobs = [None if e is None else e[str(t)]["logprob"] for t, e in zip(token_ids, entries, strict=True)]
        self._logprob_memo.put(key, logprobs)
        return logprobs

    async def ping(self) -> None:
        """Raise RoleUnavailable unless the endpoint answers its model list."""
        await self.models(timeout_s=5.0)

    async def models(self, timeout_s: float = 10.0) -> list[str]:
        """The model names the endpoint serves (its base model and, on vLLM with LoRA, every adapter)."""
        try:
            response = await self.http.get(f"{self.base_url}/models", headers=self._headers(), timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise RoleUnavailable(self.name, f"{self.base_url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise RoleUnavailable(self.name, f"{self.base_url}/models answered {response.status_code}",
                                  response.status_code)
        try:
            return [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RoleUnavailable(self.name, f"{self.base_url}/models answered no model list") from exc

    async def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST and return the response unread (a server-sent event stream); the caller closes it. A refusal is a
        RoleRequestError, an endpoint that is down RoleUnavailable — raised before any byte is passed on."""
        request = self.http.build_request("POST", f"{self.base_url}{path}", json=body, headers=self._headers(),
                                          timeout=httpx.Timeout(self.settings.timeout_s, connect=10.0))
        started = time.monotonic()
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._failed(exc, started)
            raise RoleUnavailable(self.name, f"{self.base_url} unreachable: {exc!r}") from exc
        # Latency up to the answer's headers: the stream itself is the caller's (its tokens are not counted here).
        self._answered(response.status_code, started)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            error = RoleUnavailable if response.status_code in RETRY_STATUS else RoleRequestError
            raise error(self.name, _error_message(response), response.status_code)
        return response

    CONTEXT_LENGTH_TTL_S = 30.0  # an engine restarted with another --max-model-len is seen within this

    async def context_length(self) -> int | None:
        """vLLM reports `max_model_len` in its model list; other servers may not (None). Remembered for
        CONTEXT_LENGTH_TTL_S: asked before every queued request, it would cost a model-list call each."""
        cached = getattr(self, "_context_length", None)
        if cached is not None and time.monotonic() - cached[1] < self.CONTEXT_LENGTH_TTL_S:
            return cached[0]
        length = None
        try:
            response = await self.http.get(f"{self.base_url}/models", headers=self._headers(), timeout=5.0)
            for model in response.json().get("data", []):
                if model.get("id") == self.settings.model and model.get("max_model_len"):
                    length = int(model["max_model_len"])
                    break
        except (httpx.HTTPError, ValueError):
            return None
        if length is not None:  # an answer without it (or an engine that is down) is asked again next time
            self._context_length = (length, time.monotonic())
        return length

    async def count_chat_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """Exact count through vLLM's /tokenize (at the server root); None where there is none."""
        root = self.base_url.removesuffix("/v1")
        try:
            response = await self.http.post(
                f"{root}/tokenize", json={"model": self.settings.model, "messages": messages},
                headers=self._headers(), timeout=10.0,
            )
            if response.status_code == 200:
                return int(response.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    def _answered(self, status: int, started: float) -> None:
        if self.metrics is not None:
            self.metrics.answered(self.name, status, time.monotonic() - started)
            if status != 200:
                self.metrics.failed(self.name, "retryable" if status in RETRY_STATUS else "rejected")

    def _failed(self, exc: httpx.HTTPError, started: float) -> None:
        if self.metrics is not None:
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            self.metrics.failed(self.name, kind, time.monotonic() - started)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        """A 200's JSON, its `usage` counted."""
        try:
            data = response.json()
        except ValueError:
            if self.metrics is not None:
                self.metrics.failed(self.name, "bad_response")
            raise
        if self.metrics is not None and isinstance(data, dict):
            self.metrics.usage(self.name, data.get("usage"))
        return data

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_url(f"{self.base_url}{path}", body)

    async def _post_url(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on 429/5xx/connection errors; a 4xx is a RoleRequestError."""
        last: str = ""
        async with self._slots:
            for attempt in range(self.settings.max_retries + 1):
                delay = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())
                if self.guard is not None:
                    await self.guard()
                started = time.monotonic()
                try:
                    response = await self.http.post(
                        url, json=body, headers=self._headers(), timeout=self.settings.timeout_s
                    )
                except httpx.HTTPError as exc:  # connection refused, reset, timeout
                    self._failed(exc, started)
                    last = repr(exc)
                else:
                    self._answered(response.status_code, started)
                    if response.status_code == 200:
                        return self._json(response)
                    if response.status_code not in RETRY_STATUS:
                        raise RoleRequestError(self.name, _error_message(response), response.status_code)
                    last = f"HTTP {response.status_code}: {_error_message(response)}"
                    retry_after = response.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        delay = min(60.0, float(retry_after))
                if attempt < self.settings.max_retries:
                    await asyncio.sleep(delay)
        if self.metrics is not None:
            self.metrics.failed(self.name, "gave_up")
        raise RoleUnavailable(self.name, f"{url} failed after {self.settings.max_retries + 1} tries: {last}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error)[:500]


class Roles:
    """The role clients, sharing one HTTP connection pool (and the process's role metrics); build once, close once."""

    def __init__(self, settings: Settings, metrics: RoleMetrics | None = None):
        # Every pooled connection is kept alive: at each role's full concurrency none is closed and reopened.
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
        self.clients = {name: RoleClient(name, settings.role(name), self.http, metrics) for name in ROLE_NAMES}

    def __getitem__(self, name: str) -> RoleClient:
        return self.clients[name]

    def guarded(self, guard: Callable[[], Awaitable[None]]) -> Roles:
        """These roles with `guard` awaited before every model request (`RoleClient.guard`); close the original."""
        clone = copy.copy(self)
        clone.clients = {name: client.guarded(guard) for name, client in self.clients.items()}
        return clone

    @property
    def generator(self) -> RoleClient:
        return self.clients["generator"]

    @property
    def critic(self) -> RoleClient:
        return self.clients["critic"]

    @property
    def judge(self) -> RoleClient:
        return self.clients["judge"]

    @property
    def chat(self) -> RoleClient:
        return self.clients["chat"]

    async def aclose(self) -> None:
        await self.http.aclose()
