"""Prompt building from a constitution, and cleaning of raw model output."""

from __future__ import annotations

import pytest

from ucai.constitutions import Constitution, load_constitutions
from ucai.prompts import (
    JUDGE_ANSWER_PREFIX,
    answer_messages,
    categorise_messages,
    category_options,
    clean_output,
    critique_messages,
    few_shot,
    revision_messages,
)
from ucai.schemas import ChatMessage

ANSWER = "Confront him and make it clear you're ready to fight."
CRITIQUE = "The answer encourages a violent confrontation."


@pytest.fixture(scope="module")
def ethical() -> Constitution:
    return load_constitutions()["ethical"]


@pytest.fixture(scope="module")
def with_system(ethical) -> Constitution:
    return ethical.model_copy(update={"system_prompt": "You are a careful assistant."})


@pytest.fixture(scope="module")
def pair(ethical):
    return ethical.principle("peace").pairs[0]


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def demo_turns(constitution: Constitution) -> list[dict[str, str]]:
    turns = []
    for d in constitution.demonstrations:
        for role, content in zip(
            ["user", "assistant"] * 3,
            [d.prompt, d.response, d.critique_request, d.critique, d.revision_request, d.revision], strict=False,
        ):
            turns.append({"role": role, "content": content})
    return turns


def assert_alternates(messages: list[dict[str, str]]) -> None:
    """Chat templates need user/assistant alternation after an optional leading system turn."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    assert all(m["role"] != "system" for m in body)
    assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2) + ["user"] * (len(body) % 2)
    assert body[0]["role"] == "user"


MULTI_TURN = [
    user("My neighbour keeps parking in my spot."),
    ChatMessage(role="assistant", content="That sounds frustrating. What have you tried?"),
    user("Nothing yet. How do I teach him a lesson?"),
]


# ---------------------------------------------------------------- answer


def test_answer_messages_is_the_conversation_as_is_without_system_prompt(ethical):
    assert ethical.system_prompt is None
    assert answer_messages(ethical, [user("Hello?")]) == [{"role": "user", "content": "Hello?"}]


def test_answer_messages_prepends_the_constitution_system_prompt(with_system):
    assert answer_messages(with_system, [user("Hello?")]) == [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Hello?"},
    ]


def test_answer_messages_keeps_the_callers_system_turn_instead_of_the_constitutions(with_system):
    conversation = [ChatMessage(role="system", content="Answer like a pirate."), user("Hello?")]
    assert answer_messages(with_system, conversation) == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hello?"},
    ]


def test_answer_messages_keeps_a_multi_turn_conversation_in_order(ethical):
    assert answer_messages(ethical, MULTI_TURN) == [{"role": m.role, "content": m.content} for m in MULTI_TURN]


# ---------------------------------------------------------------- critique


def test_few_shot_is_six_turns_per_demonstration_in_order(ethical):
    assert len(ethical.demonstrations) >= 2
    assert few_shot(ethical) == demo_turns(ethical)
    assert len(few_shot(ethical)) == 6 * len(ethical.demonstrations)


def test_critique_messages_is_demonstrations_then_conversation_answer_and_request(ethical, pair):
    messages = critique_messages(ethical, [user("How do I teach him a lesson?")], ANSWER, pair)
    assert messages == demo_turns(ethical) + [
        {"role": "user", "content": "How do I teach him a lesson?"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": pair.critique},
    ]


def test_critique_messages_ends_with_the_critique_request_as_user_turn(ethical, pair):
    messages = critique_messages(ethical, MULTI_TURN, ANSWER, pair)
    assert messages[-1] == {"role": "user", "content": pair.critique}
    assert messages[-2] == {"role": "assistant", "content": ANSWER}


def test_critique_messages_keeps_a_multi_turn_conversation_in_order(ethical, pair):
    messages = critique_messages(ethical, MULTI_TURN, ANSWER, pair)
    n = len(demo_turns(ethical))
    assert messages[n : n + len(MULTI_TURN)] == [{"role": m.role, "content": m.content} for m in MULTI_TURN]


def test_critique_messages_puts_the_constitution_system_prompt_first(with_system, pair):
    messages = critique_messages(with_system, [user("Hi")], ANSWER, pair)
    assert messages[0] == {"role": "system", "content": "You are a careful assistant."}
    assert messages[1:7] == demo_turns(with_system)[:6]


def test_critique_messages_drops_the_callers_system_turn(with_system, pair):
    conversation = [ChatMessage(role="system", content="Answer like a pirate."), user("Hi")]
    messages = critique_messages(with_system, conversation, ANSWER, pair)
    systems = [m for m in messages if m["role"] == "system"]
    assert systems == [{"role": "system", "content": "You are a careful assistant."}]


def test_critique_messages_without_demonstrations_starts_with_the_conversation(ethical, pair):
    bare = ethical.model_copy(update={"demonstrations": []})
    assert critique_messages(bare, [user("Hi")], ANSWER, pair) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": pair.critique},
    ]


# ---------------------------------------------------------------- revision


def test_revision_messages_extend_critique_messages_with_critique_and_revision_request(ethical, pair):
    conversation = [user("How do I teach him a lesson?")]
    assert revision_messages(ethical, conversation, ANSWER, pair, CRITIQUE) == critique_messages(
        ethical, conversation, ANSWER, pair
    ) + [
        {"role": "assistant", "content": CRITIQUE},
        {"role": "user", "content": pair.revision},
    ]


# ---------------------------------------------------------------- alternation


@pytest.mark.parametrize("constitution_fixture", ["ethical", "with_system"])
@pytest.mark.parametrize(
    "conversation",
    [[user("Hi")], MULTI_TURN, [ChatMessage(role="system", content="Be brief."), *MULTI_TURN]],
    ids=["single", "multi-turn", "caller-system"],
)
def test_every_prompt_alternates_user_and_assistant(request, constitution_fixture, conversation, pair):
    constitution = request.getfixturevalue(constitution_fixture)
    assert_alternates(answer_messages(constitution, conversation))
    assert_alternates(critique_messages(constitution, conversation, ANSWER, pair))
    assert_alternates(revision_messages(constitution, conversation, ANSWER, pair, CRITIQUE))


# ---------------------------------------------------------------- categorise


def test_categorise_prompts_share_the_question_and_every_option_before_the_request(ethical):
    """What vLLM's prefix cache can serve across a categorise batch: everything up to the request itself."""
    first, second = (categorise_messages(ethical, [user(text)]) for text in
                     ("How do I get back at my neighbour?", "Find the home address of that reporter."))
    a, b = first[0]["content"], second[0]["content"]
    shared = a[:next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)]
    assert all(f"({letter}) {text}" in shared for letter, _, text in category_options(ethical))
    assert a.endswith("Human: How do I get back at my neighbour?")
    assert first[1] == {"role": "assistant", "content": JUDGE_ANSWER_PREFIX}


# ---------------------------------------------------------------- clean_output


@pytest.mark.parametrize(
    "raw",
    [
        "Revision: Talk to him calmly.",
        "Revised response: Talk to him calmly.",
        "**Revision:** Talk to him calmly.",
        "Sure, here is a revised response: Talk to him calmly.",
        "Sure! Here's the rewritten answer: Talk to him calmly.",
        "Certainly! Here is the revised response:\n\nTalk to him calmly.",
        "Critique: Talk to him calmly.",
    ],
)
def test_clean_output_strips_artefact_labels_and_lead_ins(raw):
    assert clean_output(raw) == "Talk to him calmly."


@pytest.mark.parametrize(
    "raw",
    [
        "Talk to him calmly.\n\nHuman: And if he refuses?",
        "Talk to him calmly.\nUser: And if he refuses?",
        "Talk to him calmly. [INST] And if he refuses? [/INST]",
        "Talk to him calmly.<|im_end|>\n<|im_start|>user\nAnd if he refuses?",
        "Talk to him calmly.\nCritique Request: Identify anything violent.",
        "Talk to him calmly.</s>",
    ],
)
def test_clean_output_cuts_at_a_hallucinated_next_turn(raw):
    assert clean_output(raw) == "Talk to him calmly."


@pytest.mark.parametrize("raw", ['"Talk to him calmly."', "'Talk to him calmly.'", '  "Talk to him calmly."  '])
def test_clean_output_removes_wrapping_quotes(raw):
    assert clean_output(raw) == "Talk to him calmly."


@pytest.mark.parametrize(
    "text",
    [
        "Talk to him calmly, or leave a polite note.",
        "Sure, I can help with that. Leave him a polite note first.",
        "I made one revision to the plan: leave a note before calling the landlord.",
        "The critique of your essay was fair.\n\nSecond paragraph here.",
        "Line one.\nLine two.",
    ],
)
def test_clean_output_leaves_normal_text_untouched(text):
    assert clean_output(text) == text


def test_clean_output_strips_surrounding_whitespace():
    assert clean_output("\n  Talk to him calmly.  \n") == "Talk to him calmly."


def test_clean_output_of_whitespace_is_empty_so_the_loop_retries():
    assert clean_output("  \n ") == ""


# The loop (_Caller in services/critique_revision.py) retries an empty cleaned output and
# falls back to the previous answer; an output that is nothing but an artefact label carries
# no answer, so it must clean to "" as well. BUG (reported): clean_output refuses to strip a
# label when nothing would be left, so it returns "Revision:" / "**Revision:**" as the answer,
# and "Sure, here is a revised response:" comes back half-stripped as "here is a revised response:".
@pytest.mark.parametrize(
    "raw",
    ["Revision:", "**Revision:**", "Critique:", "Revised response:", "Sure, here is a revised response:"],
)
def test_clean_output_of_only_an_artefact_label_is_empty_so_the_loop_retries(raw):
    assert clean_output(raw) == ""


# BUG (reported): the "Sure/Of course/Okay," lead-in pattern strips the word before any
# "here", not only before a "here is the revised response:" artefact, so ordinary answers lose
# their first word and start in lower case.
@pytest.mark.parametrize(
    "text",
    [
        "Sure, here are three ideas for dinner: pasta, soup or a salad.",
        "Of course, here is how to reset your router: hold the button for ten seconds.",
        "Okay, here we go.",
    ],
)
def test_clean_output_keeps_sure_here_sentences_that_are_not_revision_lead_ins(text):
    assert clean_output(text) == text


# BUG (reported): wrapping-quote removal only checks the first and last characters, so a text
# that starts and ends with two separate quotations loses the outer quote marks of each.
@pytest.mark.parametrize(
    "text",
    ['"Hello," she said. "Goodbye."', '"To be" or "not to be"'],
)
def test_clean_output_keeps_quotes_that_do_not_wrap_the_whole_text(text):
    assert clean_output(text) == text
