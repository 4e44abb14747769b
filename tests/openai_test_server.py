"""An in-process OpenAI-compatible test server (vLLM-shaped) for the fast contract tests: no model, deterministic.

It answers what the gateway and the worker read from a real `vllm serve`:

- `GET  /v1/models`            `{"data": [{"id", "max_model_len", ...}]}` (the context length, as vLLM reports it;
  `adapters` adds LoRA names next to the base model, each answering differently)
- `POST /v1/chat/completions`  text derived from a hash of (messages, seed), `max_tokens` honoured (a word is a
  token), `usage`; with `logprobs`/`top_logprobs`: `choices[0].logprobs.content[i].top_logprobs` as
  `[{token, logprob}]` over label tokens ("A", " A", "(A", "B", ... "F") and a few others, deterministic values;
  `structured_outputs: {"choice": [...]}` constrains the answer and its top log-probabilities to the choices;
  `continue_final_message` / `add_generation_prompt` are checked the way vLLM checks them; prompts that ask for
  "OPTION 1 / OPTION 2" or "The answer is: (A)/(B)" get an answer in that form.
- `POST /v1/completions`       with `echo` + `logprobs` the prompt's tokens are scored too (first one `None`);
  vLLM's `prompt_logprobs` is supported as well.
- `POST /tokenize` (server root) `{"count", "max_model_len", "tokens"}` for `prompt` or `messages`.
- `POST /v1/load_lora_adapter` vLLM's runtime LoRA loading (`runtime_lora = False`: the route is absent); the
  adapter then appears in /v1/models with its path as `root`.
- `GET  /health`

Like vLLM it refuses (400) what vLLM refuses: an unknown model (404), prompt + max_tokens over the context,
`top_logprobs` over 20 or without `logprobs`, `continue_final_message` together with `add_generation_prompt`.

Tests read `calls` / `count()` / `requests()` to see how many model calls happened (per endpoint, per HTTP status,
optionally only those whose body contains a marker), and flip switches: `fail(503)` (every endpoint, or some,
answers an error with Retry-After), `reject_containing` (400 for chat requests holding a marker: a permanent
refusal), `labels_in_top = False` (no label in the top-k: the judge's constrained fallback),
`prompt_logprobs_enabled = False` (an engine without prompt log-probabilities), `stream_delay_s` (between
streamed chunks; `streams` counts started / finished / aborted streams), `delay_s` (every request),
`delay_containing` ({marker: seconds}: requests whose body holds the marker take that much longer),
`hold(endpoint, n)` (answer the first n requests together: lines concurrent clients up), `stop()` / `start()` (the
server is down: connection refused, same port when it is back).

Run it in a background thread (`with OpenAITestServer() as server: ...`) or on its own:
`python -m tests.openai_test_server --port 8001`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from services.runtime.local_stack import free_port

MAX_LOGPROBS = 20  # what the project starts vllm serve with (--max-logprobs 20)
LABEL_TOKENS = ("A", " A", "(A", "B", " B", "(B", "C", " C", "D", " D", "E", " E", "F", " F")
OTHER_TOKENS = ("The", " The", "I", " I", "\n", " option", ".", ",", " answer", " It")
WORDS = ("the", "a", "kind", "answer", "is", "to", "talk", "with", "them", "calmly", "and", "respect", "their",
         "privacy", "everyone", "deserves", "fair", "treatment", "please", "consider", "safer", "options", "like",
         "asking", "for", "help", "from", "someone", "you", "trust", "this", "response", "could", "be", "more",
         "helpful", "honest", "careful", "about", "harm", "people", "of", "every", "background", "should", "feel",
         "safe", "here", "instead", "try", "listening", "first", "then", "explain", "your", "view", "clearly")
_LABEL_LETTERS = set("ABCDEF")
ENDPOINTS = ("models", "chat", "completions", "tokenize", "health")
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]")


def tokens_of(text: str) -> list[str]:
    """Words and punctuation, each keeping its leading whitespace (they concatenate back to the text)."""
    return _TOKEN.findall(text)


def token_id(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big") % 49152


def _digest(*parts: Any) -> int:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def chat_prompt_tokens(messages: list[dict], add_generation_prompt: bool = True) -> int:
    return len(chat_token_ids(messages, add_generation_prompt))


def chat_token_ids(messages: list[dict], add_generation_prompt: bool = True,
                   continue_final_message: bool = False) -> list[int]:
    """A chat template's shape in ids: <start> role <newline> content… <end> per message (the last left open with
    continue_final_message), then <start> assistant <newline> for the generation prompt. As with a real template,
    the conversation's ids are a prefix of the ids of the conversation plus an answer."""
    start, end, newline = 1, 2, 198
    ids: list[int] = []
    for index, message in enumerate(messages):
        ids += [start, token_id(str(message.get("role"))), newline]
        ids += [token_id(t) for t in tokens_of(_content(message))]
        if not (continue_final_message and index == len(messages) - 1):
            ids.append(end)
    if add_generation_prompt:
        ids += [start, token_id("assistant"), newline]
    return ids


def top_distribution(key: int, candidates: tuple[str, ...] | list[str], k: int) -> list[dict[str, Any]]:
    """Deterministic log-probabilities over a small vocabulary (log-softmax, so they are real log-probabilities),
    best first, the top k. Labels get a head start, as a model answering a multiple-choice prompt would."""
    rng = random.Random(key)
    logits = {t: rng.gauss(0.0, 1.5) + (2.0 if t.strip("( ") in _LABEL_LETTERS else 0.0) for t in candidates}
    norm = math.log(sum(math.exp(v) for v in logits.values()))
    ranked = sorted(((t, v - norm) for t, v in logits.items()), key=lambda tv: (-tv[1], tv[0]))
    return [{"token": t, "logprob": round(lp, 6), "bytes": list(t.encode())} for t, lp in ranked[:max(k, 1)]]


def reply_text(messages: list[dict], seed: int | None, max_tokens: int) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason): plain words from a hash of the conversation and the seed."""
    key = _digest(messages, seed)
    rng = random.Random(key)
    last_user = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    if "OPTION 1" in last_user and "OPTION 2" in last_user:
        words = ["OPTION", str(1 + key % 2)]
    else:
        natural = 6 + key % 10
        words = [rng.choice(WORDS) for _ in range(natural)]
        words[0] = words[0].capitalize()
        words[-1] += "."
        if "The answer is: (A)" in last_user and "(B)" in last_user:
            words += ["The", "answer", "is:", f"({'AB'[key // 7 % 2]})"]
    finish = "length" if len(words) > max_tokens else "stop"
    words = words[:max_tokens]
    return " ".join(words), len(words), finish


@dataclass
class Call:
    endpoint: str
    body: Any
    status: int
    at: float
    response: Any = None  # the JSON answered (200s)

    def contains(self, marker: str) -> bool:
        return marker in json.dumps(self.body, ensure_ascii=False)


class _Refusal(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def _error(status: int, message: str, type_: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


class OpenAITestServer:
    """The server plus its switches and call log. Thread-safe: handlers run on the server's own thread."""

    def __init__(self, model: str = "smollm2", max_model_len: int = 4096, port: int | None = None,
                 host: str = "127.0.0.1"):
        self.model, self.max_model_len, self.host = model, max_model_len, host
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._log: list[Call] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()
        self.recover()

    # ------------------------------------------------------------------ switches
    def recover(self) -> None:
        """Every switch back to normal (a stopped server stays stopped: call start())."""
        self.fail_status: int | None = None
        self.fail_endpoints: set[str] | None = None
        self.retry_after: str | None = "0"
        self.reject_containing: str | None = None
        self.labels_in_top = True
        self.delay_s = 0.0
        self.delay_containing: dict[str, float] = {}
        self.tokenize_enabled = True
        self.prompt_logprobs_enabled = True  # False: an engine that returns no prompt log-probabilities
        self.stream_delay_s = 0.01
        self.adapters: list[str] = []  # LoRA adapters served by name next to the base model, as vLLM lists them
        self.adapter_roots: dict[str, str] = {}  # adapter name → path it was loaded from (/v1/load_lora_adapter)
        # False: no /v1/load_lora_adapter route (vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING)
        self.runtime_lora = True
        self.streams = Counter()
        self._gate: dict[str, Any] | None = None

    def fail(self, status: int = 503, endpoints: set[str] | tuple[str, ...] | None = None,
             retry_after: str | None = "0") -> None:
        """Answer `status` on the given endpoints (default: all of them, /health included)."""
        self.fail_status, self.retry_after = status, retry_after
        self.fail_endpoints = set(endpoints) if endpoints is not None else None

    def hold(self, endpoint: str, until: int, timeout_s: float = 5.0) -> None:
        """Hold requests to `endpoint` until `until` of them have arrived (or timeout_s passed), then answer them
        all at once: lines concurrent clients up, e.g. to race requests that share an idempotency key."""
        self._gate = {"endpoint": endpoint, "until": until, "arrived": 0, "event": None, "timeout_s": timeout_s}

    async def _pass_gate(self, endpoint: str) -> None:
        gate = self._gate  # touched only on the server's event loop
        if gate is None or gate["endpoint"] != endpoint:
            return
        gate["event"] = gate["event"] or asyncio.Event()
        gate["arrived"] += 1
        if gate["arrived"] >= gate["until"]:
            gate["event"].set()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gate["event"].wait(), gate["timeout_s"])

    # ------------------------------------------------------------------ what happened
    @property
    def calls(self) -> Counter:
        """Requests per endpoint ("models", "chat", "completions", "tokenize", "health"), whatever the answer."""
        with self._lock:
            return Counter(c.endpoint for c in self._log)

    def requests(self, endpoint: str | None = None, containing: str | None = None,
                 status: int | None = None) -> list[Call]:
        with self._lock:
            log = list(self._log)
        return [c for c in log if (endpoint is None or c.endpoint == endpoint)
                and (status is None or c.status == status) and (containing is None or c.contains(containing))]

    def count(self, endpoint: str | None = None, containing: str | None = None, status: int | None = None) -> int:
        return len(self.requests(endpoint, containing, status))

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, endpoint: str, body: Any, status: int, response: Any = None) -> None:
        with self._lock:
            self._log.append(Call(endpoint, body, status, time.time(), response))

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        """The OpenAI base URL (what a role's base_url is set to)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> OpenAITestServer:
        if self.running:
            return self
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1, timeout_keep_alive=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"openai-test-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the OpenAI test server could not listen on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the OpenAI test server did not start within {timeout_s}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Take the server down: the port refuses connections until start()."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout_s)
        self._server = self._thread = None

    close = stop

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the HTTP API
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="OpenAI-compatible test server", docs_url=None, redoc_url=None, openapi_url=None)

        async def handle(request: Request, endpoint: str, answer) -> Response:
            body: Any = None
            if request.method == "POST":
                raw = await request.body()
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    self._record(endpoint, raw.decode(errors="replace"), 400)
                    return _error(400, "malformed JSON body", "BadRequestError")
            await self._pass_gate(endpoint)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.delay_containing and body is not None:
                text = json.dumps(body, ensure_ascii=False)
                await asyncio.sleep(max((s for m, s in self.delay_containing.items() if m in text), default=0.0))
            if self.fail_status and (self.fail_endpoints is None or endpoint in self.fail_endpoints):
                self._record(endpoint, body, self.fail_status)
                headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
                return _error(self.fail_status, f"test server: failing on purpose ({self.fail_status})",
                              "ServiceUnavailableError" if self.fail_status >= 500 else "BadRequestError",
                              headers=headers)
            try:
                if request.method == "POST" and not isinstance(body, dict):
                    raise _Refusal(400, "the body must be a JSON object")
                payload = answer(body)
            except _Refusal as refusal:
                self._record(endpoint, body, refusal.status)
                return _error(refusal.status, refusal.message, refusal.type, refusal.param)
            self._record(endpoint, body, 200, None if isinstance(payload, Response) else payload)
            return payload if isinstance(payload, Response) else JSONResponse(payload)

        @app.get("/health")
        async def health(request: Request):
            return await handle(request, "health", lambda _: Response(status_code=200))

        @app.get("/v1/models")
        async def models(request: Request):
            return await handle(request, "models", lambda _: self._models())

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await handle(request, "chat", self._chat)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await handle(request, "completions", self._completions)

        @app.post("/tokenize")
        async def tokenize(request: Request):
            return await handle(request, "tokenize", self._tokenize)

        @app.post("/v1/load_lora_adapter")
        async def load_lora_adapter(request: Request):
            if not self.runtime_lora:
                return JSONResponse({"detail": "Not Found"}, status_code=404)  # FastAPI's answer for no route
            return await handle(request, "load_lora_adapter", self._load_lora_adapter)

        @app.get("/_test/calls")
        async def stats():  # for a server run as its own process
            return {"calls": dict(self.calls)}

        return app

    def _load_lora_adapter(self, body: dict) -> Response:
        """vLLM's runtime LoRA loading: a new name, or (load_inplace) new weights for a served name; plain text."""
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise _Refusal(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if name in self.adapters and not body.get("load_inplace"):
            raise _Refusal(400, f"The lora adapter '{name}' has already been loaded.")
        if not Path(path, "adapter_config.json").is_file():
            raise _Refusal(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        if name not in self.adapters:
            self.adapters.append(name)
        self.adapter_roots[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    def _models(self) -> dict:
        return {"object": "list", "data": [{
            "id": name, "object": "model", "created": 0, "owned_by": "ucai-tests",
            "root": self.adapter_roots.get(name, self.model),
            "parent": None if name == self.model else self.model, "max_model_len": self.max_model_len}
            for name in (self.model, *self.adapters)]}

    def _check_model(self, body: dict) -> None:
        if body.get("model") not in (self.model, *self.adapters):
            raise _Refusal(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")

    def _check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.max_model_len:
            raise _Refusal(400, f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                           f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
                           f"{max_tokens} in the completion).", param="max_tokens")

    @staticmethod
    def _int(body: dict, name: str, default: int | None, low: int = 0) -> int | None:
        value = body.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _Refusal(400, f"{name} must be an integer >= {low}", param=name)
        return value

    def _chat(self, body: dict) -> dict:
        self._check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in {"system", "user", "assistant", "tool"} for m in messages):
            raise _Refusal(400, "messages must be a non-empty list of {role, content}", param="messages")
        add_generation_prompt = body.get("add_generation_prompt", True)
        continue_final = body.get("continue_final_message", False)
        if continue_final and add_generation_prompt:
            raise _Refusal(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        if continue_final and messages[-1].get("role") != "assistant":
            raise _Refusal(400, "continue_final_message is set but the final message is not an assistant turn",
                           param="messages")
        max_tokens = self._int(body, "max_tokens", 16, low=1) or 16
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _Refusal(400, "seed must be an integer", param="seed")
        if self.reject_containing and self.reject_containing in json.dumps(messages, ensure_ascii=False):
            raise _Refusal(400, "test server: this request is refused on purpose", param="messages")
        logprobs = bool(body.get("logprobs", False))
        top = self._int(body, "top_logprobs", None)
        if top is not None and not logprobs:
            raise _Refusal(400, "when using `top_logprobs`, `logprobs` must be set to true", param="top_logprobs")
        if top is not None and top > MAX_LOGPROBS:
            raise _Refusal(400, f"top_logprobs ({top}) exceeds the maximum allowed value ({MAX_LOGPROBS})",
                           param="top_logprobs")
        choices = self._choices(body)
        prompt_tokens = chat_prompt_tokens(messages, bool(add_generation_prompt))
        self._check_length(prompt_tokens, max_tokens)

        key = _digest(messages, seed)
        # An adapter answers differently from the base model (and from the other adapters), deterministically.
        model = body["model"]
        as_model = messages if model == self.model else [*messages, {"role": "system", "content": model}]
        text, n, finish = reply_text(as_model, seed, max_tokens)
        content = None
        if logprobs or choices:
            candidates = choices or (LABEL_TOKENS + OTHER_TOKENS if self.labels_in_top else OTHER_TOKENS)
            ranked = top_distribution(key, candidates, MAX_LOGPROBS)
            if choices or max_tokens == 1:  # one greedy token: the most likely one
                text, n, finish = ranked[0]["token"], 1, ("stop" if choices else "length")
            content = self._logprob_content(text, ranked, top or 0)
        if body.get("stream"):
            usage = (body.get("stream_options") or {}).get("include_usage")
            return self._stream(f"chatcmpl-{key:016x}", body["model"], text, finish,
                                {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                 "total_tokens": prompt_tokens + n} if usage else None)
        return {
            "id": f"chatcmpl-{key:016x}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                         "logprobs": {"content": content} if logprobs else None, "finish_reason": finish,
                         "stop_reason": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
        }

    def _stream(self, completion_id: str, model: str, text: str, finish: str,
                usage: dict | None = None) -> StreamingResponse:
        """Server-sent events, one chunk per token with `stream_delay_s` between them, then [DONE]. `streams`
        counts streams started, finished and aborted (the client, or a proxy, went away mid-stream)."""
        def event(delta: dict, finish_reason: str | None) -> bytes:
            chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        async def events():
            self.streams["started"] += 1
            try:
                yield event({"role": "assistant", "content": ""}, None)
                for token in tokens_of(text):
                    await asyncio.sleep(self.stream_delay_s)
                    yield event({"content": token}, None)
                yield event({}, finish)
                if usage:  # stream_options.include_usage: a last chunk with no choices, as vLLM sends it
                    chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                yield b"data: [DONE]\n\n"
                self.streams["finished"] += 1
            except (asyncio.CancelledError, GeneratorExit):
                self.streams["aborted"] += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    @staticmethod
    def _logprob_content(text: str, ranked: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
        """vLLM's `logprobs.content`: one entry per generated token, the first with the ranked alternatives."""
        tokens = [text] if any(entry["token"] == text for entry in ranked) else (tokens_of(text) or [text])
        content = []
        for position, token in enumerate(tokens):
            if position == 0:
                logprob = next((e["logprob"] for e in ranked if e["token"] == token), -0.3)
                alternatives = ranked[:k]
            else:
                logprob = round(-0.05 - _digest(tokens[:position], token) % 2000 / 1000, 6)
                alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}][:k]
            content.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                            "top_logprobs": alternatives})
        return content

    @staticmethod
    def _choices(body: dict) -> list[str] | None:
        structured = body.get("structured_outputs")
        if structured is None:
            return None
        choice = structured.get("choice") if isinstance(structured, dict) else None
        if not isinstance(choice, list) or not choice or not all(isinstance(c, str) and c for c in choice):
            raise _Refusal(400, "structured_outputs.choice must be a non-empty list of strings",
                           param="structured_outputs")
        return choice

    def _token_ids_completion(self, body: dict, ids: list[int]) -> dict:
        """A prompt of token ids (what the contrastive judge sends, ids from /tokenize): scores them with
        `prompt_logprobs` (vLLM's shape: the prompt token's own log-probability, first position None)."""
        self._check_length(len(ids), self._int(body, "max_tokens", 16) or 0)
        scored = None
        if self._int(body, "prompt_logprobs", None) is not None and self.prompt_logprobs_enabled:
            scored = [None] + [{str(t): {"logprob": self._token_logprob([str(i) for i in ids[:n]], str(t)),
                                         "rank": 1, "decoded_token": str(t)}} for n, t in enumerate(ids) if n]
        return {"id": f"cmpl-{_digest(ids):016x}", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": [{"index": 0, "text": " the", "logprobs": None,
                                                  "finish_reason": "length", "stop_reason": None,
                                                  "prompt_logprobs": scored}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}}

    def _completions(self, body: dict) -> dict:
        self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return self._token_ids_completion(body, prompt)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _Refusal(400, "prompt must be a string or a list of strings", param="prompt")
        max_tokens = self._int(body, "max_tokens", 16)
        logprobs = self._int(body, "logprobs", None)
        prompt_logprobs = self._int(body, "prompt_logprobs", None)
        for name, value in (("logprobs", logprobs), ("prompt_logprobs", prompt_logprobs)):
            if value is not None and value > MAX_LOGPROBS:
                raise _Refusal(400, f"{name} ({value}) exceeds the maximum allowed value ({MAX_LOGPROBS})",
                               param=name)
        echo = bool(body.get("echo", False))
        seed = body.get("seed")
        choices, usage_prompt, usage_completion = [], 0, 0
        for index, text_in in enumerate(prompts):
            prompt_tokens = tokens_of(text_in)
            self._check_length(len(prompt_tokens), max_tokens)
            generated: list[str] = []
            finish = "length"
            if max_tokens:
                text, n, finish = reply_text([{"role": "user", "content": text_in}], seed, max_tokens)
                generated = tokens_of(" " + text)
            scored = (prompt_tokens if echo else []) + generated
            choice: dict[str, Any] = {"index": index, "text": (text_in if echo else "") + "".join(generated),
                                      "logprobs": None, "finish_reason": finish, "stop_reason": None,
                                      "prompt_logprobs": None}
            if logprobs is not None:
                token_logprobs, tops, offsets, offset = [], [], [], 0
                for position, token in enumerate(scored):
                    offsets.append(offset)
                    offset += len(token)
                    if echo and position == 0:
                        token_logprobs.append(None)
                        tops.append(None)
                        continue
                    lp = self._token_logprob(scored[:position], token)
                    token_logprobs.append(lp)
                    alternatives = {token: lp}
                    for alt in OTHER_TOKENS[:max(0, logprobs - 1)]:
                        alternatives.setdefault(alt, self._token_logprob(scored[:position], alt))
                    tops.append(alternatives if logprobs else None)
                choice["logprobs"] = {"tokens": scored, "token_logprobs": token_logprobs, "top_logprobs": tops,
                                      "text_offset": offsets}
            if prompt_logprobs is not None and self.prompt_logprobs_enabled:
                choice["prompt_logprobs"] = [None] + [
                    {str(token_id(t)): {"logprob": self._token_logprob(prompt_tokens[:i], t), "rank": 1,
                                        "decoded_token": t}} for i, t in enumerate(prompt_tokens) if i]
            choices.append(choice)
            usage_prompt += len(prompt_tokens)
            usage_completion += len(generated)
        return {"id": f"cmpl-{_digest(prompts, seed):016x}", "object": "text_completion",
                "created": int(time.time()), "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": usage_prompt, "completion_tokens": usage_completion,
                          "total_tokens": usage_prompt + usage_completion}}

    @staticmethod
    def _token_logprob(prefix: list[str], token: str) -> float:
        return round(-0.05 - (_digest(prefix[-8:], token) % 5000) / 1000, 6)

    def _tokenize(self, body: dict) -> dict:
        if not self.tokenize_enabled:
            raise _Refusal(404, "Not Found", "NotFoundError")
        self._check_model(body)
        if isinstance(body.get("messages"), list):
            ids = chat_token_ids(body["messages"], bool(body.get("add_generation_prompt", True)),
                                 bool(body.get("continue_final_message", False)))
            count = len(ids)
        elif isinstance(body.get("prompt"), str):
            ids = [token_id(t) for t in tokens_of(body["prompt"])]
            count = len(ids)
        else:
            raise _Refusal(400, "give `prompt` or `messages`", param="prompt")
        return {"count": count, "max_model_len": self.max_model_len, "tokens": ids}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default="smollm2", help="the served model name")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args(argv)
    server = OpenAITestServer(args.model, args.max_model_len, args.port, args.host)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
