"""POST /critique body validation (CritiqueRequest) and the principle schedule of the loop."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from services.cai.critique_revision import schedule_principles
from ucai.constitutions import Constitution, load_constitutions
from ucai.schemas import ChatMessage, CritiqueRequest


def first_error(**body) -> dict:
    with pytest.raises(ValidationError) as excinfo:
        CritiqueRequest(**body)
    return excinfo.value.errors()[0]


def msgs(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


# ---------------------------------------------------------------- prompt / messages


def test_prompt_alone_is_accepted():
    request = CritiqueRequest(prompt="How do I teach my neighbour a lesson?")
    assert request.messages is None
    assert request.constitution == "ethical"
    assert request.rounds == 1


def test_messages_alone_are_accepted():
    request = CritiqueRequest(messages=msgs(("user", "Hi"), ("assistant", "Hello!"), ("user", "Help me.")))
    assert request.prompt is None
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]


def test_both_prompt_and_messages_is_an_error_at_messages():
    error = first_error(prompt="Hi", messages=msgs(("user", "Hi")))
    assert error["loc"] == ("messages",)
    assert "exactly one" in error["msg"]


def test_neither_prompt_nor_messages_is_an_error_at_messages():
    error = first_error()
    assert error["loc"] == ("messages",)
    assert "exactly one" in error["msg"]


def test_explicit_null_prompt_without_messages_is_an_error_at_messages():
    assert first_error(prompt=None)["loc"] == ("messages",)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_or_whitespace_prompt_is_an_error_at_prompt(prompt):
    error = first_error(prompt=prompt)
    assert error["loc"] == ("prompt",)
    assert "empty" in error["msg"]


def test_blank_prompt_with_messages_reports_only_the_prompt_error():
    with pytest.raises(ValidationError) as excinfo:
        CritiqueRequest(prompt=" ", messages=msgs(("user", "Hi")))
    assert [e["loc"] for e in excinfo.value.errors()] == [("prompt",)]


def test_messages_ending_with_an_assistant_turn_is_an_error():
    error = first_error(messages=msgs(("user", "Hi"), ("assistant", "Hello!")))
    assert error["loc"] == ("messages",)
    assert "end with a user turn" in error["msg"]


def test_empty_messages_list_is_an_error():
    error = first_error(messages=[])
    assert error["loc"] == ("messages",)


@pytest.mark.parametrize("content", ["", "   "])
def test_empty_user_message_content_is_an_error(content):
    error = first_error(messages=msgs(("user", content)))
    assert error["loc"] == ("messages",)
    assert "empty" in error["msg"]


def test_empty_earlier_user_turn_is_an_error():
    error = first_error(messages=msgs(("user", " "), ("assistant", "Hm?"), ("user", "Help me.")))
    assert error["loc"] == ("messages",)


def test_unknown_message_role_is_an_error():
    error = first_error(messages=msgs(("tool", "x"), ("user", "Hi")))
    assert error["loc"][0] == "messages"


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("rounds", [0, 9, -1])
def test_rounds_outside_1_to_8_is_rejected(rounds):
    assert first_error(prompt="Hi", rounds=rounds)["loc"] == ("rounds",)


@pytest.mark.parametrize("rounds", [1, 8])
def test_rounds_1_and_8_are_accepted(rounds):
    assert CritiqueRequest(prompt="Hi", rounds=rounds).rounds == rounds


def test_unknown_extra_field_is_rejected():
    error = first_error(prompt="Hi", top_p=0.9)
    assert error["loc"] == ("top_p",)
    assert error["type"] == "extra_forbidden"


def test_empty_principles_list_is_rejected():
    assert first_error(prompt="Hi", principles=[])["loc"] == ("principles",)


def test_max_tokens_zero_is_rejected():
    assert first_error(prompt="Hi", max_tokens=0)["loc"] == ("max_tokens",)


def test_temperature_above_two_is_rejected():
    assert first_error(prompt="Hi", temperature=2.5)["loc"] == ("temperature",)


def test_temperature_zero_and_two_are_accepted():
    assert CritiqueRequest(prompt="Hi", temperature=0.0).temperature == 0.0
    assert CritiqueRequest(prompt="Hi", temperature=2.0).temperature == 2.0


# ---------------------------------------------------------------- conversation()


def test_conversation_of_a_prompt_is_one_user_message():
    assert CritiqueRequest(prompt="Hello?").conversation() == [ChatMessage(role="user", content="Hello?")]


def test_conversation_of_messages_is_the_messages_in_order():
    request = CritiqueRequest(messages=msgs(("system", "Be brief."), ("user", "Hi")))
    assert request.conversation() == [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
    ]


def test_conversation_returns_a_copy_of_the_messages_list():
    request = CritiqueRequest(messages=msgs(("user", "Hi")))
    request.conversation().append(ChatMessage(role="assistant", content="x"))
    assert len(request.messages) == 1


# ---------------------------------------------------------------- schedule_principles


@pytest.fixture(scope="module")
def ethical() -> Constitution:
    return load_constitutions()["ethical"]


def names(schedule) -> list[str]:
    return [principle.name for principle, _ in schedule]


def test_schedule_is_reproducible_with_the_same_seed(ethical):
    first = schedule_principles(ethical, None, 6, random.Random(42))
    second = schedule_principles(ethical, None, 6, random.Random(42))
    assert [(p.name, pair.critique) for p, pair in first] == [(p.name, pair.critique) for p, pair in second]


def test_schedule_differs_across_seeds(ethical):
    schedules = {
        tuple((p.name, pair.critique) for p, pair in schedule_principles(ethical, None, 4, random.Random(seed)))
        for seed in range(20)
    }
    assert len(schedules) > 1


@pytest.mark.parametrize("rounds", [1, 3, 6, 8])
def test_schedule_has_one_entry_per_round(ethical, rounds):
    assert len(schedule_principles(ethical, None, rounds, random.Random(0))) == rounds


@pytest.mark.parametrize("seed", range(10))
def test_four_rounds_use_four_distinct_principles(ethical, seed):
    assert sorted(names(schedule_principles(ethical, None, 4, random.Random(seed)))) == sorted(ethical.principle_names)


@pytest.mark.parametrize("seed", range(10))
def test_six_rounds_use_every_principle_at_least_once(ethical, seed):
    assert set(names(schedule_principles(ethical, None, 6, random.Random(seed)))) == set(ethical.principle_names)


def test_caller_list_of_one_principle_is_used_every_round(ethical):
    assert names(schedule_principles(ethical, ["privacy"], 3, random.Random(0))) == ["privacy"] * 3


def test_caller_list_is_cycled_in_order(ethical):
    schedule = schedule_principles(ethical, ["privacy", "peace"], 5, random.Random(0))
    assert names(schedule) == ["privacy", "peace", "privacy", "peace", "privacy"]


def test_caller_list_with_an_unknown_principle_raises_keyerror(ethical):
    with pytest.raises(KeyError):
        schedule_principles(ethical, ["doxxing"], 1, random.Random(0))


@pytest.mark.parametrize("caller", [None, ["racial_equality", "gender_equality"]])
def test_each_chosen_pair_belongs_to_the_chosen_principle(ethical, caller):
    for seed in range(10):
        for principle, pair in schedule_principles(ethical, caller, 8, random.Random(seed)):
            assert pair in ethical.principle(principle.name).pairs


def test_schedule_never_repeats_a_principle_in_consecutive_rounds():
    constitution = load_constitutions()["ethical"]
    for seed in range(300):
        schedule = schedule_principles(constitution, None, 8, random.Random(seed))
        names = [p.name for p, _ in schedule]
        assert all(a != b for a, b in zip(names, names[1:], strict=False)), (seed, names)
