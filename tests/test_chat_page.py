"""The side-by-side page (GET /) in a real headless chromium against the real model: the session's `vllm serve`
(tests/conftest.py) behind a gateway with API keys switched on, at desktop and at phone width.

The page's own defaults pick the two models (GET /chat/config: ethical-<stage> vs unethical-<stage> when the engine
serves trained adapters, else `base` on both sides). Two different answers must get a verdict with per-principle
scores; identical ones (`base` twice, same seed) get the judge's tie without a model call, and the page says so.
Screenshots: test-output/side_by_side.png and test-output/side_by_side_phone.png.
"""
from __future__ import annotations

import pytest

from tests.chat_page import (
    DESKTOP,
    PHONE,
    ask,
    assert_answers_and_stats,
    assert_layout,
    assert_streamed,
    assert_swap,
    assert_verdict,
    chromium,
    history,
    keyed_stack,
    open_page,
    screenshot_path,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.browser]
MAX_TOKENS = 48  # enough to watch both columns grow; the 2-core CPU answers it in seconds
PROMPT = "My neighbour keeps parking in front of my garage. What should I do?"


@pytest.fixture(scope="module")
def page_stack(redis_url, vllm_url, logs, tmp_path_factory):
    """A gateway + worker of its own on the session's vllm serve, with a keys file (the session stack has none)."""
    keyed = keyed_stack(redis_url, vllm_url, logs, tmp_path_factory.mktemp("page"))
    yield keyed
    keyed.stack.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def check_verdict(page, left: str, right: str, answers: tuple[str, str]) -> None:
    if answers[0] != answers[1]:
        assert_verdict(page, left, right)
    else:  # the judge is not asked about identical answers: p = 0.5 each
        assert "a tie" in page.inner_text("#verdict .verdict-headline")


@pytest.mark.parametrize(("viewport", "screenshot"), [(DESKTOP, "side_by_side.png"),
                                                       (PHONE, "side_by_side_phone.png")], ids=["desktop", "phone"])
def test_side_by_side_page_with_the_real_model(page_stack, browser, viewport, screenshot):
    phone = viewport is PHONE
    context, page, errors = open_page(browser, page_stack.stack.url, page_stack.key, viewport,
                                      wrong_key_first=not phone)
    try:
        assert_layout(page, phone=phone)
        left, right = page.input_value("#left-model"), page.input_value("#right-model")
        recording = ask(page, PROMPT, timeout_s=600, max_tokens=MAX_TOKENS)
        assert_streamed(recording)
        answers = assert_answers_and_stats(page)
        check_verdict(page, left, right, answers)
        entries = history(page)
        assert len(entries) == 1 and PROMPT in entries[0] and f"{left} vs {right}" in entries[0]
        assert_swap(page)
        assert_layout(page, phone=phone)
        page.screenshot(path=screenshot_path(screenshot), full_page=True)
        assert not errors, errors
    finally:
        context.close()
