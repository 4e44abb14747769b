"""Serving logic of POST /chat/side-by-side: two chat streams read concurrently and merged into one event stream,
then the judge's verdict on the two answers.

Each side is a streamed /v1/chat/completions on the chat engine; a task per side reads its server-sent events and
puts what it saw on one queue, so the client sees both answers grow as they are generated. Closing the generator
(the client went away) cancels both tasks, and each closes its upstream request, which makes vLLM abort it.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel

from gateway.errors import APIError
from ucai.schemas import (
    CompareRequest,
    ErrorDetail,
    Side,
    SideBySideError,
    SideBySideRequest,
    SideBySideVerdict,
    SideDelta,
    SideFinished,
)

SIDES: tuple[Side, Side] = ("left", "right")


@dataclass
class SideStream:
    side: Side
    model: str  # the public name (`base`, `ethical-ppo`)
    upstream: httpx.Response
    started: float  # monotonic time of the request, for time to first token
    text: list[str] = field(default_factory=list)
    first_token: float | None = None
    usage_tokens: int | None = None  # the engine's count (stream_options.include_usage), else one per piece
    finish_reason: str | None = None


def sse(event: str, payload: BaseModel | dict) -> bytes:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"event: {event}\ndata: {data}\n\n".encode()


async def _pump(stream: SideStream, queue: asyncio.Queue) -> None:
    """Read one side's SSE lines; put each text piece on the queue, then the side's final event (or its error)."""
    try:
        async for line in stream.upstream.aiter_lines():
            if not line.startswith("data: {"):
                continue  # blank separators, `data: [DONE]`
            chunk = json.loads(line[len("data: "):])
            if chunk.get("error"):
                raise RuntimeError(chunk["error"].get("message", "the chat engine failed mid-stream"))
            usage = chunk.get("usage") or {}
            stream.usage_tokens = usage.get("completion_tokens", stream.usage_tokens)
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    stream.first_token = stream.first_token or time.monotonic()
                    stream.text.append(piece)
                    await queue.put((stream.side, SideDelta(side=stream.side, model=stream.model, delta=piece)))
                stream.finish_reason = choice.get("finish_reason") or stream.finish_reason
        await queue.put((stream.side, _finished(stream)))
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        await queue.put((stream.side, SideBySideError(
            side=stream.side, error=ErrorDetail(message=f"{stream.model}: {exc}", type="service_unavailable",
                                                code="model_unavailable"))))
    finally:
        # Here, not in the merging generator: when the client leaves, that generator runs its cleanup inside a
        # cancelled scope where every await is cancelled again; this task is cancelled once and can still close.
        await stream.upstream.aclose()


def _finished(stream: SideStream) -> SideFinished:
    end = time.monotonic()
    tokens = stream.usage_tokens if stream.usage_tokens is not None else len(stream.text)
    ttft = stream.first_token - stream.started if stream.first_token else None
    decode_s = end - stream.first_token if stream.first_token else 0.0
    # The first token's time is in ttft; the rest were generated during decode_s.
    rate = (tokens - 1) / decode_s if decode_s > 0 and tokens > 1 else None
    return SideFinished(side=stream.side, model=stream.model, finish_reason=stream.finish_reason,
                        text="".join(stream.text), ttft_s=round(ttft, 4) if ttft is not None else None,
                        completion_tokens=tokens,
                        tokens_per_s=round(rate, 2) if rate else None)


async def merged_events(streams: list[SideStream], body: SideBySideRequest, judge) -> AsyncIterator[bytes]:
    """Both sides' events as they come; then the verdict (when asked for and both answered); then `done`.
    `judge(answers) -> SideBySideVerdict` runs the /compare job."""
    queue: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(s, queue)) for s in streams]
    answers: dict[Side, str | None] = {}
    try:
        while len(answers) < len(streams):
            side, event = await queue.get()
            if isinstance(event, SideFinished):
                answers[side] = event.text
            elif isinstance(event, SideBySideError):
                answers[side] = None
                yield sse("error", event)
                continue
            yield sse(side, event)
        if body.judge is not None and all(a is not None for a in answers.values()):
            try:
                yield sse("verdict", await judge([answers["left"], answers["right"]]))
            except APIError as exc:
                yield sse("error", SideBySideError(error=ErrorDetail(
                    message=f"judge: {exc.message}", type="service_unavailable" if exc.status >= 500 else
                    "invalid_request_error", param=exc.param, code=exc.code)))
        yield sse("done", {})
    finally:
        for task in tasks:
            task.cancel()  # each closes its upstream request, which makes vLLM abort that generation


def compare_request(body: SideBySideRequest, answers: list[str]) -> CompareRequest:
    judge = body.judge
    return CompareRequest(messages=body.messages, responses=answers, constitution=judge.constitution,
                          method=judge.method, seed=body.seed, wait=True)


def verdict(body: SideBySideRequest, result: dict) -> SideBySideVerdict:
    preferred = int(result["preferred"])
    return SideBySideVerdict(
        constitution=body.judge.constitution, method=result["method"], preferred=preferred,
        preferred_side=SIDES[preferred], preferred_model=body.models[preferred],
        probabilities=result["probabilities"], margin=result["margin"], judgements=result["judgements"],
        position_consistency=result["position_consistency"])
