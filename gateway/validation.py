"""Checks a request needs before it is queued: constitution, principles, context length."""
from __future__ import annotations

from gateway.errors import APIError
from ucai.constitutions import Constitution
from ucai.prompts import Messages, judge_cot_messages, revision_messages
from ucai.roles import RoleClient
from ucai.schemas import ConversationInput, CritiqueRequest
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


def critique_probe(body: CritiqueRequest, constitution: Constitution) -> Messages:
    """The longest prompt of the critique loop, less the model-written parts: the revision prompt
    (few-shot block + conversation + critique request + revision request) with the longest pair."""
    pair = max((p for pr in constitution.principles for p in pr.pairs), key=lambda p: len(p.critique + p.revision))
    return revision_messages(constitution, body.conversation(), "", pair, "")


def judge_probe(body: ConversationInput, constitution: Constitution, first: str, second: str) -> Messages:
    """The longest judge prompt: the chain-of-thought form with the longest labelling question."""
    questions = [q for p in constitution.principles for q in p.labelling] or [""]
    return judge_cot_messages(max(questions, key=len), body.conversation(), first, second)


async def check_context(role: RoleClient, probe: Messages, max_tokens: int, generated_parts: int,
                        body: ConversationInput, settings: Settings) -> None:
    """Refuse, before queueing, a request whose longest prompt cannot fit in the role's context.

    `generated_parts` counts the model outputs of up to max_tokens each that the longest prompt
    will hold plus the one it asks for (critique loop: answer + critique + revision = 3).
    """
    limit = await role.context_length() or settings.max_model_len
    counted = await role.count_chat_tokens(probe)
    prompt_tokens = counted or sum(len(m["content"]) for m in probe) // CHARS_PER_TOKEN_ESTIMATE
    needed = prompt_tokens + generated_parts * max_tokens
    if needed > limit:
        raise APIError(
            400,
            f"input too long for the model context: it needs about {needed} tokens ({prompt_tokens} prompt + "
            f"{generated_parts} x max_tokens {max_tokens}) but the context is {limit}",
            param="messages" if body.messages is not None else "prompt", code="context_length_exceeded",
        )
