"""Checks a critique request needs before it is queued (constitution, principles, context length)."""
from __future__ import annotations

from gateway.errors import APIError
from ucai.constitutions import Constitution
from ucai.prompts import revision_messages
from ucai.roles import Roles
from ucai.schemas import CritiqueRequest
from ucai.settings import Settings

CHARS_PER_TOKEN_ESTIMATE = 3  # conservative, used only when the engine cannot count for us


def resolve_constitution(
    constitutions: dict[str, Constitution], name: str, principles: list[str] | None
) -> Constitution:
    constitution = constitutions.get(name)
    if constitution is None:
        raise APIError(422, f"unknown constitution {name!r}; loaded: {', '.join(sorted(constitutions))}",
                       param="constitution", code="unknown_constitution")
    unknown = [p for p in principles or [] if p not in constitution.principle_names]
    if unknown:
        raise APIError(422, f"unknown principle(s) {', '.join(map(repr, unknown))} for constitution {name!r}; "
                       f"known: {', '.join(constitution.principle_names)}", param="principles",
                       code="unknown_principle")
    return constitution


async def check_context(body: CritiqueRequest, constitution: Constitution, roles: Roles, settings: Settings) -> None:
    """Refuse, before queueing, a conversation the longest critique-loop prompt cannot fit in the context.

    The longest prompt is the revision prompt: few-shot block + conversation + answer +
    critique request + critique + revision request; answer and critique are each up to
    max_tokens, and the revision itself needs max_tokens more.
    """
    generator = roles.generator
    limit = await generator.context_length() or settings.max_model_len
    max_tokens = body.max_tokens or settings.generator.max_tokens
    pair = max((p for pr in constitution.principles for p in pr.pairs), key=lambda p: len(p.critique + p.revision))
    probe = revision_messages(constitution, body.conversation(), "", pair, "")
    counted = await generator.count_chat_tokens(probe)
    prompt_tokens = counted or sum(len(m["content"]) for m in probe) // CHARS_PER_TOKEN_ESTIMATE
    needed = prompt_tokens + 3 * max_tokens
    if needed > limit:
        raise APIError(
            400,
            f"conversation too long for the model context: the critique loop needs about {needed} tokens "
            f"({prompt_tokens} prompt + 3 x max_tokens {max_tokens}) but the context is {limit}",
            param="messages" if body.messages is not None else "prompt", code="context_length_exceeded",
        )
