"""The side-by-side page (GET /) in a real headless chromium, against a gateway with API keys switched on and the
in-process OpenAI test server serving two adapters, streamed slowly enough to watch both columns grow.

The same page against the real model: tests/test_chat_page.py.
"""
from __future__ import annotations

import httpx
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
    choose_models,
    chromium,
    history,
    keyed_stack,
    open_page,
    screenshot_path,
)
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope, marker

pytestmark = pytest.mark.contract
ADAPTERS = ["ethical-sft", "unethical-sft"]
# The test server scores a token by its last few predecessors only, so the contrastive judge (persona system prompt,
# far before the answer) always ties there; its multiple-choice label probabilities differ per answer.
JUDGE_METHOD = "logprob"
REPORT_MARKER = "page-test-report"


@pytest.fixture(scope="module")
def page_state(tmp_path_factory):
    return tmp_path_factory.mktemp("page")


@pytest.fixture(scope="module")
def page_stack(redis_url, model_server, logs, datasets_dir, page_state):
    """Its own gateway + worker: with a keys file (the shared contract stack runs without keys)."""
    report = page_state / "artifacts" / "reports" / "run-1" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text(f"<!doctype html><title>report</title><h1 id='marker'>{REPORT_MARKER}</h1>")
    keyed = keyed_stack(redis_url, model_server.url, logs, page_state, UCAI_DATASETS_DIR=str(datasets_dir),
                        **FAST_ROLES)
    yield keyed
    keyed.stack.close()


@pytest.fixture
def slow_adapters(model_server):
    """Two adapters next to the base model, each token 50 ms apart: streaming is visible."""
    model_server.adapters = list(ADAPTERS)
    model_server.stream_delay_s = 0.05


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def test_page_files_are_open_and_the_api_is_not(page_stack):
    with httpx.Client(base_url=page_stack.stack.url, timeout=30) as http:
        index = http.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        for element in ("api-key", "prompt", "send", "left-model", "right-model", "left-output", "right-output",
                        "verdict", "swap", "regenerate", "history", "report-link"):
            assert f'id="{element}"' in index.text, element
        script = http.get("/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert http.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert_envelope(http.get("/static/nope.js"), 404)
        assert_envelope(http.get("/static/..%2Frouters%2Fpage.py"), 404)  # only the files in gateway/static
        assert_envelope(http.get("/chat/config"), 401, code="missing_api_key")  # the data needs the key
        config = http.get("/chat/config", headers={"Authorization": f"Bearer {page_stack.key}"})
        assert config.status_code == 200 and config.json()["report"] == "/reports/latest"


@pytest.mark.browser
def test_side_by_side_at_desktop_width(page_stack, slow_adapters, browser):
    context, page, errors = open_page(browser, page_stack.stack.url, page_stack.key, DESKTOP, wrong_key_first=True)
    try:
        assert_layout(page, phone=False)
        choose_models(page, *ADAPTERS)
        page.select_option("#judge-method", JUDGE_METHOD)
        prompt = f"How should I talk to a neighbour who plays loud music? {marker()}"
        assert_streamed(ask(page, prompt, timeout_s=60))
        first = assert_answers_and_stats(page)
        assert first[0] != first[1]  # two models, two answers
        assert_verdict(page, *ADAPTERS)
        assert f"ethical constitution, {JUDGE_METHOD} judge" in page.inner_text("#verdict")  # the pickers' judge
        entries = history(page)
        assert len(entries) == 1 and prompt in entries[0] and "ethical-sft vs unethical-sft" in entries[0]

        # The latest report: fetched with the key, opened from a blob: URL in a new tab.
        assert page.locator("#report-link").is_visible()
        with context.expect_page() as opened:
            page.click("#report-link")
        report = opened.value
        report.wait_for_selector("#marker")
        assert report.inner_text("#marker") == REPORT_MARKER and report.url.startswith("blob:")
        report.close()

        # Regenerate: the same prompt with a new seed is a second entry; the first can be shown again.
        page.click("#regenerate")
        page.wait_for_selector("body[data-phase='streaming']")
        page.wait_for_selector("body[data-phase='idle']", timeout=60_000)
        assert_verdict(page, *ADAPTERS)
        entries = history(page)
        assert len(entries) == 2 and all(prompt in e for e in entries) and entries[0] != entries[1]
        page.click("#history li:nth-child(2) button")  # the older one
        assert (page.inner_text("#left-output").strip(), page.inner_text("#right-output").strip()) == first

        assert_swap(page)
        page.screenshot(path=screenshot_path("side_by_side_contract.png"), full_page=True)

        # The key stays in localStorage and the history in sessionStorage: a reload asks for neither again.
        page.reload()
        page.wait_for_selector("body[data-phase='idle']")
        assert not page.locator("#key-dialog").is_visible() and len(history(page)) == 2

        # No judge: both answers, no verdict.
        page.select_option("#judge-constitution", "")
        ask(page, f"Tell me a joke {marker()}", timeout_s=60)
        assert_answers_and_stats(page)
        assert "No judge chosen" in page.inner_text("#verdict") and len(history(page)) == 3
        assert not errors, errors
    finally:
        context.close()


@pytest.mark.browser
def test_side_by_side_at_phone_width(page_stack, slow_adapters, browser):
    context, page, errors = open_page(browser, page_stack.stack.url, page_stack.key, PHONE)
    try:
        assert_layout(page, phone=True)
        choose_models(page, *reversed(ADAPTERS))
        page.select_option("#judge-method", JUDGE_METHOD)
        prompt = f"Is it fine to read my partner's messages? {marker()}"
        assert_streamed(ask(page, prompt, timeout_s=60))
        assert_answers_and_stats(page)
        assert_verdict(page, *ADAPTERS)
        assert_layout(page, phone=True)  # still no sideways scrolling with text and the verdict table in
        assert_swap(page)
        assert [prompt in e for e in history(page)] == [True]
        page.screenshot(path=screenshot_path("side_by_side_contract_phone.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()


@pytest.mark.browser
def test_a_model_the_key_may_not_use_shows_the_envelope(page_stack, slow_adapters, browser, tmp_path):
    """A chat-scope key gets no unethical models in the pickers; the page still opens and shows the error of a
    refused request (a 403) with the envelope's message and asks for a key again."""
    from ucai.api_keys import create_key

    chat_key = create_key(page_stack.stack.env["UCAI_API_KEYS_FILE"], "page_chat", ["chat"])
    context, page, errors = open_page(browser, page_stack.stack.url, chat_key, DESKTOP)
    try:
        options = page.eval_on_selector_all("#left-model option", "os => os.map(o => o.value)")
        assert "ethical-sft" in options and "unethical-sft" not in options
        # Force a refused model into the picker, as a stale page would have it.
        page.evaluate("""() => { const s = document.getElementById('right-model');
                                 s.add(new Option('unethical-sft', 'unethical-sft')); s.value = 'unethical-sft'; }""")
        page.fill("#prompt", f"hello {marker()}")
        page.click("#send")
        page.wait_for_selector("#key-dialog[open]")
        assert "research" in page.inner_text("#key-message")  # the 403 envelope's message
        assert "insufficient_scope" in page.inner_text("#error")
        assert not errors, errors
    finally:
        context.close()


@pytest.mark.browser
def test_the_event_reader_copes_with_any_chunking(page_stack, browser):
    """The page reads server-sent events by hand (fetch + reader): events split across chunks, \\r\\n line ends
    split between two chunks, comments and a last block without its blank line all come out whole."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{page_stack.stack.url}/")
        events = page.evaluate("""async () => {
          const chunks = ["event: left\\r", "\\ndata: {\\"delta\\": \\"He", "l\\"}\\r\\n\\r\\n: keep-alive\\n\\n",
                          "event: right\\ndata: {\\"delta\\":\\n", "data: \\"x\\"}\\n\\nevent: done\\ndata: {}"];
          const body = new ReadableStream({ start(controller) {
            for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
            controller.close();
          } });
          const seen = [];
          for await (const event of readEvents(new Response(body))) seen.push(event);
          return seen;
        }""")
        assert events == [{"event": "left", "data": {"delta": "Hel"}}, {"event": "right", "data": {"delta": "x"}},
                          {"event": "done", "data": {}}]
    finally:
        context.close()
