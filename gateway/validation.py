"""Checks a request needs before it is queued: constitution, principles, context length."""
from __future__ import annotations

from gateway.errors import APIError
from ucai.constitutions import Constitution
from ucai.prompts import ContextProbe
from ucai.roles import RoleClient
from ucai.schemas import ConversationInput
from ucai.settings import Settings

CHARS_PER_TOKEN_ESTIMATE = 3  # conservative, used only when the engine cannot count for us
# A chat template's own tokens per message (role markers, separators; ChatML uses 5) — generous on purpose.
TEMPLATE_TOKENS_PER_MESSAGE = 16


def _token_upper_bound(messages: list[dict[str, str]]) -> int:
    """More tokens than any tokenizer makes of these messages: a byte-level BPE / SentencePiece token covers at least
    one UTF-8 byte, so the bytes of the text bound its tokens, plus the template's tokens per message."""
    return sum(len(m["content"].encode()) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages) + TEMPLATE_TOKENS_PER_MESSAGE


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


async def check_context(role: RoleClient, probe: ContextProbe, body: ConversationInput, settings: Settings) -> None:
    """Refuse, before queueing, a request whose longest prompt (plus what the model writes into and after it)
    cannot fit in the role's context."""
    limit = await role.context_length() or settings.max_model_len
    if _token_upper_bound(probe.messages) + probe.generated_tokens <= limit:
        return  # fits whatever the tokenizer does: no /tokenize round trip (most requests)
    counted = await role.count_chat_tokens(probe.messages)
    prompt_tokens = counted or sum(len(m["content"]) for m in probe.messages) // CHARS_PER_TOKEN_ESTIMATE
    needed = prompt_tokens + probe.generated_tokens
    if needed > limit:
        raise APIError(
            400,
            f"input too long for the model context: it needs about {needed} tokens ({prompt_tokens} prompt + "
            f"{probe.generated_tokens} generated) but the context is {limit}",
            param="messages" if body.messages is not None else "prompt", code="context_length_exceeded",
        )
