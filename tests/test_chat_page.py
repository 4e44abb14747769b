"""The side-by-side page (GET /) in a real headless chromium against the real model: the chat engine of
`chat_stack` (tests/conftest.py: the bundled model with `ethical-sft` and `unethical-sft` trained by the project's
SFT stage) behind a gateway with API keys switched on, at desktop and at phone width.

The page's own defaults pick the two models (GET /chat/config: ethical-<best stage> vs unethical-<best stage>, here
the SFT adapters); both columns must stream, and the verdict must show with per-principle scores.
Screenshots: test-output/side_by_side.png and test-output/side_by_side_phone.png.
"""
from __future__ import annotations

import pytest

from tests.chat_page import (
    DESKTOP,
    PHONE,
    KeyedStack,
    ask,
    assert_answers_and_stats,
    assert_layout,
    assert_streamed,
    assert_swap,
    assert_verdict,
    chromium,
    history,
    open_page,
    screenshot_path,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.browser]
MAX_TOKENS = 48  # enough to watch both columns grow; the 2-core CPU answers it in seconds
PROMPT = "My neighbour keeps parking in front of my garage. What should I do?"


@pytest.fixture(scope="module")
def page_stack(chat_stack) -> KeyedStack:
    """The chat stack's gateway, entered with its `research` key (the unethical model needs it)."""
    return KeyedStack(chat_stack.stack, chat_stack.keys["research"])


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.mark.parametrize(("viewport", "screenshot"), [(DESKTOP, "side_by_side.png"),
                                                       (PHONE, "side_by_side_phone.png")], ids=["desktop", "phone"])
def test_side_by_side_page_with_the_real_model(page_stack, browser, viewport, screenshot):
    phone = viewport is PHONE
    context, page, errors = open_page(browser, page_stack.stack.url, page_stack.key, viewport,
                                      wrong_key_first=not phone)
    try:
        assert_layout(page, phone=phone)
        left, right = page.input_value("#left-model"), page.input_value("#right-model")
        assert (left, right) == ("ethical-sft", "unethical-sft")  # the page's defaults: ethical vs unethical
        recording = ask(page, PROMPT, timeout_s=600, max_tokens=MAX_TOKENS)
        assert_streamed(recording)
        answers = assert_answers_and_stats(page)
        assert answers[0] != answers[1], answers
        assert_verdict(page, left, right)
        entries = history(page)
        assert len(entries) == 1 and PROMPT in entries[0] and f"{left} vs {right}" in entries[0]
        assert_swap(page)
        assert_layout(page, phone=phone)
        page.screenshot(path=screenshot_path(screenshot), full_page=True)
        assert not errors, errors
    finally:
        context.close()
