"""The chat engine's models under their public names, shared by the /v1 routes and the side-by-side comparison.

The chat role serves the base model under its served name and each trained adapter as `<constitution>-<stage>`;
the gateway calls the base model `base` (the names: `ucai/chat_adapters.py`, shared with the `answer` job kind).
"""
from __future__ import annotations

from typing import Any

import httpx

from gateway.errors import APIError
from ucai.chat_adapters import BASE, public_name, upstream_name
from ucai.roles import RoleClient, RoleRequestError, RoleUnavailable

# Stages whose adapter the comparison page offers first, best first: an RL stage is the end of the training chain.
STAGE_PREFERENCE = ("ppo", "rloo", "grpo", "dpo", "sft")


async def served_models(chat: RoleClient) -> list[str]:
    """Public names of every model the chat engine serves; 503 when it is down."""
    try:
        return [public_name(m, chat) for m in await chat.models()]
    except RoleUnavailable as exc:
        raise APIError(503, f"the chat model service is unavailable: {exc}", code="model_unavailable",
                       headers={"Retry-After": "5"}) from exc


def default_pair(models: list[str]) -> tuple[str, str]:
    """ethical-<best stage> vs unethical-<best stage> where both exist; else the best of each, else `base`."""
    for stage in STAGE_PREFERENCE:
        if f"ethical-{stage}" in models and f"unethical-{stage}" in models:
            return f"ethical-{stage}", f"unethical-{stage}"
    best = [next((f"{c}-{s}" for s in STAGE_PREFERENCE if f"{c}-{s}" in models), BASE)
            for c in ("ethical", "unethical")]
    return best[0], best[1]


async def call_chat(chat: RoleClient, public: str, payload: dict[str, Any], stream: bool) -> dict | httpx.Response:
    """POST /chat/completions for the model `public` (its JSON, or the open stream), errors in the envelope."""
    payload = {**payload, "model": upstream_name(public, chat)}
    try:
        if stream:
            return await chat.open_stream("/chat/completions", payload)
        return await chat.post_json("/chat/completions", payload)
    except RoleRequestError as exc:
        if exc.status == 404:  # the engine serves no such model: say which it does (looked up only now)
            known = ", ".join(sorted(await served_models(chat)))
            raise APIError(404, f"the model {public!r} does not exist; served: {known}", param="model",
                           code="model_not_found") from exc
        raise APIError(exc.status or 400, str(exc), code="model_rejected_request") from exc
    except RoleUnavailable as exc:
        raise APIError(503, str(exc), code="model_unavailable", headers={"Retry-After": "5"}) from exc
