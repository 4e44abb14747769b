"""A chat model answers a conversation: the evaluation's answers as a batchable job kind.

The model is named publicly (`base`, `<constitution>-<stage>`) and called on the chat role, which serves the base model
and every trained adapter. The job's constitution is recorded with the result, not applied: the model sees the
plain conversation (no system prompt), exactly as a user of /v1/chat/completions would.
"""
from __future__ import annotations

import contextlib
import time

from ucai.chat_adapters import public_name, upstream_name
from ucai.constitutions import Constitution
from ucai.prompts import ContextProbe
from ucai.roles import RoleRequestError, Roles, RoleUnavailable
from ucai.schemas import AnswerJob, AnswerRequest, AnswerResult, Usage
from ucai.settings import Settings


def answer_probe(request: AnswerRequest, constitution: Constitution, settings: Settings) -> ContextProbe:
    return ContextProbe("chat", [m.model_dump() for m in request.conversation()],
                        request.max_tokens or settings.chat.max_tokens)


async def run_answer(job: AnswerJob, roles: Roles) -> AnswerResult:
    request, constitution, chat = job.request, job.constitution, roles.chat
    started = time.perf_counter()
    messages = [m.model_dump() for m in request.conversation()]
    try:
        completion = await chat.chat(messages, max_tokens=request.max_tokens, temperature=request.temperature,
                                     seed=request.seed, model=upstream_name(request.model, chat))
    except RoleRequestError as exc:
        if exc.status != 404:
            raise
        # An unknown model never becomes known by retrying: a permanent failure that says what is served.
        served = ""
        with contextlib.suppress(RoleUnavailable):
            served = "; served: " + ", ".join(sorted(public_name(m, chat) for m in await chat.models()))
        raise RoleRequestError(chat.name, f"the chat engine serves no model {request.model!r}{served}", 404,
                               code="model_not_found") from exc
    usage = Usage()
    usage.add(completion.prompt_tokens, completion.completion_tokens)
    return AnswerResult(id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
                        model=request.model, text=completion.text, finish_reason=completion.finish_reason,
                        usage=usage, timings={"total": round(time.perf_counter() - started, 3)})
