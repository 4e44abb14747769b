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

from gateway.access import CallerDep, estimated_tokens
from gateway.chat_models import call_chat, served_models, upstream_name
from gateway.dependencies import RolesDep, SettingsDep
from ucai.schemas import ChatCompletionRequest, ErrorEnvelope, ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList, responses={503: {"model": ErrorEnvelope}})
async def list_models(roles: RolesDep, caller: CallerDep) -> ModelList:
    """The models this API key may use (an unethical one only with the research scope)."""
    served = await served_models(roles.chat)
    return ModelList(data=[ModelCard(id=name) for name in served if caller.can_use_model(name)])


@router.post("/chat/completions", responses={
    200: {"content": {"text/event-stream": {}}, "description": "The completion (JSON), or with `stream: true` its "
          "server-sent events, then `data: [DONE]`."},
    **{code: {"model": ErrorEnvelope} for code in (400, 404, 422, 503)}})
async def chat_completions(body: ChatCompletionRequest, roles: RolesDep, caller: CallerDep, settings: SettingsDep):
    public = body.model
    await caller.use_model(public, prompt=next((m.content for m in reversed(body.messages) if m.role == "user"), None))
    extra = body.model_extra or {}
    await caller.charge_tokens(estimated_tokens([m.content for m in body.messages], extra.get(
        "max_completion_tokens", extra.get("max_tokens")), settings.chat.max_tokens))
    answer = await call_chat(roles.chat, public, body.model_dump(exclude_none=True), stream=body.stream)
    if not body.stream:
        return {**answer, "model": public}
    return StreamingResponse(_events(answer, upstream_name(public, roles.chat), public),
                             media_type="text/event-stream")


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
