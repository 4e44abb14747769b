"""Refuse hostile JSON bodies with a 400 before any route parses them (ASGI middleware).

Python's `json` accepts what is not JSON, or not safe to pass on: bytes that are not UTF-8 (it decodes them with
`surrogatepass`), `NaN` / `Infinity` and numbers that overflow to infinity, `\\ud800` escapes that decode to a lone
surrogate (valid in a Python str, but Redis, the engine and every UTF-8 encoder then fail: a 500 later), and JSON
nested so deep that the parser raises RecursionError (FastAPI would answer a bare 400 or a 500). Each is answered
here as the envelope's 400 `invalid_json`, or `json_too_deep` past `MAX_DEPTH`. A body that passes is handed on
byte for byte, so routes parse exactly what was checked.
"""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, error_response

MAX_DEPTH = 64  # no request the API defines nests deeper than a handful of levels

# A JSON string, unrolled so it runs in linear time; used only on a body json.loads accepted (all strings closed).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only an escape can carry a surrogate into valid UTF-8
_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, a proper pair is one character: any left is lone


class HostileJSON(ValueError):
    def __init__(self, message: str, code: str = "invalid_json"):
        super().__init__(message)
        self.message, self.code = message, code


def is_json(scope: Scope) -> bool:
    """The content types FastAPI parses as JSON: application/json and application/*+json."""
    value = dict(scope.get("headers") or []).get(b"content-type")
    if value is None:
        return False
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def _reject_constant(name: str) -> Any:
    raise HostileJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise HostileJSON(f"the number {text[:40]} overflows to infinity")
    return value


def depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in a body json.loads accepted (strings removed first)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def _lone_surrogate(value: Any) -> str | None:
    """The first string (or key) holding a lone surrogate, walked without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def check(body: bytes) -> None:
    """Raise HostileJSON when the body is not strict JSON or nests deeper than MAX_DEPTH."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HostileJSON(f"request body is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except HostileJSON:
        raise
    except RecursionError:
        raise HostileJSON(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep") from None
    except json.JSONDecodeError as exc:
        raise HostileJSON(f"malformed JSON body: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise HostileJSON(f"malformed JSON body: {exc}") from None
    if depth(body) > MAX_DEPTH:
        raise HostileJSON(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep")
    if _SURROGATE_ESCAPE.search(body) and (lone := _lone_surrogate(value)) is not None:
        where = _SURROGATE.search(lone).start()
        raise HostileJSON(f"a string holds a lone UTF-16 surrogate (\\u{ord(lone[where]):04x} at character "
                          f"{where}): not valid Unicode")


class StrictJSON:
    """Reads a JSON request's body (BodySizeLimit, outside this, bounds it), checks it, and replays it to the app."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client left: let the app see it
                    await self.app(scope, _replay(b"".join(chunks), receive, message), send)
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except APIError as exc:  # BodySizeLimit counted a streamed body past the limit; no handler runs out here
            await error_response(exc.status, exc.message, param=exc.param, code=exc.code)(scope, receive, send)
            return
        body = b"".join(chunks)
        if body:
            try:
                check(body)
            except HostileJSON as exc:
                await error_response(400, exc.message, code=exc.code)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive, last: Message | None = None) -> Receive:
    """The body as one message, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if last is not None:
            return last
        return await receive()

    return replay
