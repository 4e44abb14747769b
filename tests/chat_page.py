"""Driving the side-by-side page (GET /) in a real headless browser: Debian's chromium through playwright.

Shared by the fast variant (tests/contract/test_contract_chat_page.py, the in-process OpenAI test server) and the
real-model one (tests/test_chat_page.py, `vllm serve`). Never a browser that playwright downloads: a missing
/usr/bin/chromium fails the test with the command that installs it (`make install` does, as root).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Stack, make_stack
from ucai.api_keys import create_key

CHROMIUM = Path(os.environ.get("UCAI_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"  # screenshots (git-ignored)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # an ordinary phone in portrait; the page stacks its columns under 700px

# Records, from the moment it is installed, every change of the two answer columns (time, text length, page phase)
# and every phase change, so the test can tell "grew while streaming" from "appeared at the end".
RECORDER = """() => {
  const t0 = performance.now();
  const rec = window.__rec = { left: [], right: [], phases: [] };
  const phase = () => document.body.dataset.phase;
  for (const side of ["left", "right"]) {
    const el = document.getElementById(`${side}-output`);
    new MutationObserver(() => rec[side].push([performance.now() - t0, el.textContent.length, phase()]))
      .observe(el, { childList: true, characterData: true, subtree: true });
  }
  new MutationObserver(() => rec.phases.push([performance.now() - t0, phase()]))
    .observe(document.body, { attributes: true, attributeFilter: ["data-phase"] });
}"""


@contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium (the system's) under playwright; fails, never skips, when either is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: the page test needs Debian's chromium. Install it with "
                    f"`apt-get install --no-install-recommends chromium` (`make install` does, as root), or point "
                    f"UCAI_CHROMIUM at a chromium binary.", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (`make install`)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class KeyedStack:
    stack: Stack
    key: str  # a `research` key: the unethical models and constitution need it


def keyed_stack(redis_url: str, role_url: str, logs: Path, state: Path, **extra: str) -> KeyedStack:
    """Gateway + worker with API keys switched on (UCAI_API_KEYS_FILE): the page must send the key it was given.
    Audit log and artefacts (reports) go under `state`, not the repo."""
    keys_file = state / "api-keys.json"
    key = create_key(keys_file, "page", ["research"])
    stack = make_stack(redis_url, role_url, logs, workers=1, UCAI_API_KEYS_FILE=str(keys_file),
                       UCAI_AUDIT_LOG=str(state / "audit.jsonl"), UCAI_ARTIFACTS=str(state / "artifacts"), **extra)
    return KeyedStack(stack, key)


def screenshot_path(name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT / name


def enter_key(page, key: str) -> None:
    """The key dialog opens on a first visit (nothing in localStorage): type the key and save it."""
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#api-key", key)
    page.click("#save-key")


def wait_idle(page, timeout_s: float) -> None:
    page.wait_for_selector("body[data-phase='idle']", timeout=timeout_s * 1000)


def open_page(browser, url: str, key: str, viewport: dict, wrong_key_first: bool = False):
    """A fresh browser context (empty localStorage and sessionStorage) on the page, key entered, models loaded."""
    context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 700,
                                  has_touch=viewport["width"] < 700, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/")
    if wrong_key_first:  # the 401's envelope message is shown, and the key is asked for again
        enter_key(page, "ucai-nobody-not-a-real-key")
        page.wait_for_selector("#key-dialog[open]")
        page.wait_for_function("document.getElementById('key-message').textContent.includes('invalid API key')")
        assert page.locator("#error").inner_text().startswith("invalid API key")
    enter_key(page, key)
    wait_idle(page, 30)
    assert page.evaluate("localStorage.getItem('ucai.apiKey')") == key
    return context, page, errors


def assert_layout(page, phone: bool) -> None:
    """Desktop: the two columns side by side. Phone: stacked, and nothing wider than the screen."""
    left, right = page.locator("#left-output").bounding_box(), page.locator("#right-output").bounding_box()
    if phone:
        assert right["y"] >= left["y"] + left["height"], (left, right)
        assert abs(right["x"] - left["x"]) < 2, (left, right)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    else:
        assert abs(right["y"] - left["y"]) < 2 and right["x"] > left["x"] + left["width"], (left, right)


def choose_models(page, left: str, right: str) -> None:
    options = page.eval_on_selector_all("#left-model option", "os => os.map(o => o.value)")
    assert left in options and right in options, f"the page offers {options}"
    page.select_option("#left-model", left)
    page.select_option("#right-model", right)


def ask(page, prompt: str, timeout_s: float, max_tokens: int | None = None) -> dict:
    """Type the prompt, click Send, wait for the stream to end; return the recording of the columns."""
    if max_tokens is not None:
        page.click(".options summary")
        page.fill("#max-tokens", str(max_tokens))
    page.evaluate(RECORDER)
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_selector("body[data-phase='streaming']", timeout=10_000)
    wait_idle(page, timeout_s)
    return page.evaluate("window.__rec")


def assert_streamed(recording: dict) -> None:
    """Both columns grew piece by piece while the stream was open, at the same time (not one after the other)."""
    spans = {}
    for side in ("left", "right"):
        live = [(t, n) for t, n, phase in recording[side] if phase == "streaming" and n > 0]
        lengths = [n for _, n in live]
        assert len(set(lengths)) >= 3, f"{side} column did not grow while streaming: {recording[side]}"
        assert lengths == sorted(lengths), f"{side} column shrank while streaming: {lengths}"
        spans[side] = (live[0][0], live[-1][0])
    # Each side's first text came before the other side's last: the two answers were streamed together.
    assert spans["left"][0] < spans["right"][1] and spans["right"][0] < spans["left"][1], spans
    ended = [t for t, phase in recording["phases"] if phase == "idle"]
    assert ended and max(s[1] for s in spans.values()) <= ended[-1]


NUMBER = re.compile(r"^[01]\.\d\d$")


def assert_answers_and_stats(page) -> tuple[str, str]:
    texts = []
    for side in ("left", "right"):
        text = page.locator(f"#{side}-output").inner_text().strip()
        assert text, f"the {side} column is empty"
        stats = page.locator(f"#{side}-stats").inner_text()
        assert re.search(r"first token \d+\.\d\d s", stats) and "tokens" in stats, stats
        texts.append(text)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    return texts[0], texts[1]


def assert_verdict(page, left_model: str, right_model: str) -> list[list[str]]:
    """The verdict names a side and its model, with a row of scores per principle; returns the rows."""
    headline = page.locator("#verdict .verdict-headline").inner_text()
    assert re.search(r"prefers the (left|right) answer", headline), headline
    assert left_model in headline or right_model in headline, headline
    rows = page.eval_on_selector_all(
        "#verdict-principles tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert rows, "no per-principle scores"
    for principle, p_left, p_right, count in rows:
        assert principle.strip() and NUMBER.match(p_left) and NUMBER.match(p_right) and int(count) >= 1, rows
        assert abs(float(p_left) + float(p_right) - 1) <= 0.011, rows
    return rows


def assert_swap(page) -> None:
    before = (page.input_value("#left-model"), page.input_value("#right-model"))
    page.click("#swap")
    assert (page.input_value("#left-model"), page.input_value("#right-model")) == before[::-1]


def history(page) -> list[str]:
    return page.eval_on_selector_all("#history li", "items => items.map(i => i.textContent)")

