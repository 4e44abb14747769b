"""OpenAI-compatible chat through the gateway: GET /v1/models and POST /v1/chat/completions (streaming or not).

The chat role serves the base model and every trained adapter by name (`ethical-sft`, `unethical-ppo`, …); here
the base model is called `base`. So the `openai` client works unchanged with `base_url=<gateway>/v1`. A stream is
passed through event by event as it arrives; when the client goes away, the upstream request is closed, which makes
vLLM abort the generation. Errors use the project's envelope, which OpenAI clients read.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from gateway.dependencies import RolesDep
from gateway.errors import APIError
from ucai.roles import RoleClient, RoleRequestError, RoleUnavailable
from ucai.schemas import ChatCompletionRequest, ErrorEnvelope, ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])
BASE = "base"  # the public name of the chat role's base model


def _public(name: str, chat: RoleClient) -> str:
    return BASE if name == chat.model else name


async def _served(chat: RoleClient) -> list[str]:
    try:
        return await chat.models()
    except RoleUnavailable as exc:
        raise APIError(503, f"the chat model service is unavailable: {exc}", code="model_unavailable",
                       headers={"Retry-After": "5"}) from exc


@router.get("/models", response_model=ModelList, responses={503: {"model": ErrorEnvelope}})
async def list_models(roles: RolesDep) -> ModelList:
    return ModelList(data=[ModelCard(id=_public(m, roles.chat)) for m in await _served(roles.chat)])


@router.post("/chat/completions", responses={code: {"model": ErrorEnvelope} for code in (400, 404, 422, 503)})
async def chat_completions(body: ChatCompletionRequest, roles: RolesDep):
    chat = roles.chat
    public = body.model
    upstream_name = chat.model if public == BASE else public
    payload = {**body.model_dump(exclude_none=True), "model": upstream_name}
    try:
        if not body.stream:
            data = await chat.post_json("/chat/completions", payload)
            return {**data, "model": public}
        upstream = await chat.open_stream("/chat/completions", payload)
    except RoleRequestError as exc:
        if exc.status == 404:  # the engine serves no such model: say which it does (looked up only now)
            known = ", ".join(sorted(_public(m, chat) for m in await _served(chat)))
            raise APIError(404, f"the model {public!r} does not exist; served: {known}", param="model",
                           code="model_not_found") from exc
        raise APIError(exc.status or 400, str(exc), code="model_rejected_request") from exc
    except RoleUnavailable as exc:
        raise APIError(503, str(exc), code="model_unavailable", headers={"Retry-After": "5"}) from exc
    return StreamingResponse(_events(upstream, upstream_name, public), media_type="text/event-stream")


async def _events(upstream, upstream_name: str, public: str) -> AsyncIterator[bytes]:
    """Each server-sent event as it arrives, with the public model name; closing this generator (the client left)
    closes the upstream request."""
    try:
        async for line in upstream.aiter_lines():
            if line.startswith("data: {") and upstream_name != public:
                event = json.loads(line[len("data: "):])
                event["model"] = public
                line = "data: " + json.dumps(event)
            yield (line + "\n").encode()
    finally:
        await upstream.aclose()
