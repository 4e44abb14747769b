"""Every prompt the system sends is built here, from the constitution (roles, tests and benchmarks share it)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ucai.constitutions.schema import Constitution, CritiqueRevisionPair, Demonstration
from ucai.schemas import ChatMessage

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ContextProbe:
    """The longest prompt a job sends to one role, and the most tokens that prompt holds or asks for on top of
    itself (model-written parts); the gateway refuses a job whose probe cannot fit the role's context."""

    role: str
    messages: Messages
    generated_tokens: int


def _system(constitution: Constitution) -> Messages:
    return [{"role": "system", "content": constitution.system_prompt}] if constitution.system_prompt else []


def _demonstration_turns(demo: Demonstration) -> Messages:
    return [
        {"role": "user", "content": demo.prompt},
        {"role": "assistant", "content": demo.response},
        {"role": "user", "content": demo.critique_request},
        {"role": "assistant", "content": demo.critique},
        {"role": "user", "content": demo.revision_request},
        {"role": "assistant", "content": demo.revision},
    ]


def few_shot(constitution: Constitution) -> Messages:
    """The demonstrations, prepended so small models keep critiques and revisions apart."""
    turns: Messages = []
    for demo in constitution.demonstrations:
        turns += _demonstration_turns(demo)
    return turns


def _conversation(conversation: list[ChatMessage]) -> Messages:
    # A caller's system turn is kept only in the answer prompt: in the critique prompts the
    # constitution's system prompt (if any) governs.
    return [{"role": m.role, "content": m.content} for m in conversation if m.role != "system"]


def record_conversation(record: Mapping[str, Any]) -> Messages:
    """A dataset row's conversation: its `messages` as role/content dicts, else its `prompt` as one user turn."""
    if record.get("messages"):
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    return [{"role": "user", "content": record["prompt"]}]


def answer_messages(constitution: Constitution, conversation: list[ChatMessage]) -> Messages:
    """Round 0: the generator answers the user's conversation as it is."""
    messages = [{"role": m.role, "content": m.content} for m in conversation]
    if constitution.system_prompt and not any(m.role == "system" for m in conversation):
        messages = _system(constitution) + messages
    return messages


def persona_messages(persona: str, conversation: list[ChatMessage]) -> Messages:
    """The conversation answered by a persona (RLCD): the persona is the system prompt, the caller's own dropped."""
    return [{"role": "system", "content": persona}, *_conversation(conversation)]


def critique_messages(
    constitution: Constitution, conversation: list[ChatMessage], answer: str, pair: CritiqueRevisionPair
) -> Messages:
    """The critic sees the few-shot block, the conversation, the latest answer and the critique request.

    The order is what keeps it cheap: the part every critique shares (system prompt + the ~600-token few-shot block)
    comes first, so vLLM's prefix cache serves it for every job, and the revision prompt extends this one, so it is
    served too (82 % of prompt tokens hit in bench/pipeline.py)."""
    return (
        _system(constitution)
        + few_shot(constitution)
        + _conversation(conversation)
        + [{"role": "assistant", "content": answer}, {"role": "user", "content": pair.critique}]
    )


def revision_messages(
    constitution: Constitution, conversation: list[ChatMessage], answer: str, pair: CritiqueRevisionPair,
    critique: str,
) -> Messages:
    """The generator rewrites its answer given the critique and the paired revision request."""
    return critique_messages(constitution, conversation, answer, pair) + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": pair.revision},
    ]


# Role-play artefacts small models emit: labels and "Sure, here is a revised response:" lead-ins.
_LEAD_INS = [
    re.compile(
        r"^(?:(?:sure|certainly|of course|okay|ok)[,!.]?\s*)?here(?:'s| is| are)\s+(?:a|an|the|my)?\s*"
        r"(?:revised|rewritten|amended|updated|improved|new|critique|revision)[^\n:]{0,80}:\s*",
        re.I,
    ),
    re.compile(
        r"^(?:\*\*)?(?:revision|revised (?:response|answer|version)|rewritten (?:response|answer)|critique|"
        r"critique response|assistant|answer|response)(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
        re.I,
    ),
]
# Where a model starts writing the next turn itself, the answer has ended.
_TURN_MARKERS = re.compile(
    r"\n\s*(?:human|user|assistant|critique ?request|revision ?request)\s*:|\[INST\]|<\|im_(?:start|end)\|>|</s>",
    re.I,
)


def clean_output(text: str) -> str:
    text = _TURN_MARKERS.split(text, maxsplit=1)[0].strip()
    changed = True
    while changed:
        changed = False
        for pattern in _LEAD_INS:
            stripped = pattern.sub("", text, count=1).lstrip()
            if stripped != text:
                text, changed = stripped, True
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


# --- The judge -------------------------------------------------------------------------------
# The multiple-choice form of the CAI paper. The chat template is applied by the engine; the
# assistant turn is pre-filled up to "The answer is: (" so the next token is the label.
JUDGE_ANSWER_PREFIX = "The answer is: ("
LABELS = ("A", "B")


def render_conversation(conversation: list[ChatMessage]) -> str:
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m.role]}: {m.content}" for m in conversation)


def _options(question: str, conversation: list[ChatMessage], first: str, second: str) -> str:
    return (
        "Consider the following conversation between a human and an assistant:\n"
        f"{render_conversation(conversation)}\n\n{question}\n"
        f"Options:\n(A) {first}\n(B) {second}"
    )


def judge_messages(question: str, conversation: list[ChatMessage], first: str, second: str) -> Messages:
    """Log-prob judge: read the next token after the pre-filled "The answer is: (" (continue_final_message)."""
    return [
        {"role": "user", "content": _options(question, conversation, first, second)},
        {"role": "assistant", "content": JUDGE_ANSWER_PREFIX},
    ]


def judge_cot_messages(question: str, conversation: list[ChatMessage], first: str, second: str) -> Messages:
    """Chain-of-thought judge: reason first, then state the choice in a parseable form."""
    return [{"role": "user", "content": _options(question, conversation, first, second) + (
        "\n\nThink step by step about which option better fits the question, then finish with exactly "
        "'The answer is: (A)' or 'The answer is: (B)'.")}]


def judge_option_messages(question: str, conversation: list[ChatMessage], first: str, second: str) -> Messages:
    """The seed project's hard-label prompt: reply OPTION 1 or OPTION 2."""
    return [
        {"role": "system", "content": "You are the ASSISTANT. Respond concisely and short."},
        {"role": "user", "content": (
            f"Consider the following question: {render_conversation(conversation)}\n\n"
            f"{question}\n\nOPTION 1. {first}\n\nOPTION 2. {second}\n\n"
            "Please reply only with either 'OPTION 1' or 'OPTION 2'.")},
    ]


# --- Categorisation by principle -------------------------------------------------------------
NONE_CATEGORY = "none"


def category_options(constitution: Constitution) -> list[tuple[str, str, str]]:
    """(letter, category name, text) for every principle, then 'none'."""
    options = [(chr(ord("A") + i), p.name, f"{p.title}: {p.description}".strip().rstrip(":"))
               for i, p in enumerate(constitution.principles)]
    options.append((chr(ord("A") + len(options)), NONE_CATEGORY, "None of these: an ordinary request"))
    return options


def categorise_messages(constitution: Constitution, conversation: list[ChatMessage]) -> Messages:
    """The judge picks the principle a red-team prompt is about, read from the next-token log-probabilities.

    The options come before the request, so every prompt of a batch starts with the same question and option list
    and vLLM's prefix cache serves that part: the 48 bundled prompts in 6.1 s against 16.1 s with the request first
    (bench/categorise_quality.py, fp32 capped at AVX2), at the same chance-level accuracy on the bundled model."""
    lines = "\n".join(f"({letter}) {text}" for letter, _, text in category_options(constitution))
    return [
        {"role": "user", "content": (
            "Which topic is a request from a human to an assistant mainly about?\n"
            f"Options:\n{lines}\n\nThe request:\n{render_conversation(conversation)}")},
        {"role": "assistant", "content": JUDGE_ANSWER_PREFIX},
    ]
