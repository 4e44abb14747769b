"""The gateway fuzzed from its own OpenAPI document (issue 13): schemathesis generates requests for every operation,
valid ones and ones that break the schema (wrong types, missing and unknown fields, out-of-range numbers, odd
strings), and sends them to a real gateway process (loopback) with a real worker behind it.

At least 1,000 requests over every operation: none answers 5xx, every error is the project's envelope, and every
answer matches what the document says of it (status code, content type, body schema). The document itself is valid
OpenAPI. Valid cases get what OpenAPI cannot express made right (`accepted_shape`: one of prompt / messages, a
loaded constitution, ...), so their generated values reach the queue, the worker and the model, not only the
validators. Generation is derandomised (the same requests every run) and bounded.
"""
from __future__ import annotations

import time
from collections import Counter

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.job_kinds import BATCH_STAGES
from tests.conftest import Stack, make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import ENVELOPE_FIELDS

# slow: about a minute on 2 shared cores (the accepted jobs run for real: a rank of 16 answers × ensemble 16 ...).
pytestmark = [pytest.mark.contract, pytest.mark.slow]

EXAMPLES = 30  # per operation and generation mode; an operation with fewer distinct inputs (GET /health) gets fewer
MIN_REQUESTS = 1_000
CONSTITUTIONS = ("ethical", "unethical")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_stack(redis_url, model_server, logs, datasets_dir, artifacts_dir) -> Stack:
    """A gateway + worker of its own: a queued request waits at most 0.5 s for its job (then 202), so the generated
    jobs (a rank of 16 answers × ensemble 16, a batch of 20 records) never hold the run up."""
    stack = make_stack(redis_url, model_server.url, logs, workers=1, UCAI_DATASETS_DIR=str(datasets_dir),
                       UCAI_ARTIFACTS=str(artifacts_dir), UCAI_MAX_WAIT_S="0.5",
                       UCAI_WORKER_CONCURRENCY="16", **FAST_ROLES)
    yield stack
    stack.close()


def _user_last(messages: object) -> list:
    """A generated conversation, ending with a user turn as the gateway requires (the schema cannot say it)."""
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    if not messages or messages[-1].get("role") != "user":
        messages.append({"role": "user", "content": "Is it fine to read my partner's messages?"})
    return messages


def accepted_shape(label: str, body: object) -> object:
    """A positive case's body with what OpenAPI cannot express made right — exactly one of prompt / messages, a
    loaded constitution and its principles, a batch stage, distinct record ids, a served model — so that the
    generated values of every other field reach the queue, the worker and the model, not only the validators."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if label in ("POST /critique", "POST /compare", "POST /rank"):
        if isinstance(body.get("messages"), list) and not body.get("prompt"):
            body["messages"] = _user_last(body["messages"])
            body.pop("prompt", None)
        else:
            body.pop("messages", None)
            if not (isinstance(body.get("prompt"), str) and body["prompt"].strip()):
                body["prompt"] = "Is it fine to read my partner's messages?"
        body["constitution"] = body.get("constitution") if body.get("constitution") in CONSTITUTIONS else "ethical"
        body.pop("principles", None)
    elif label == "POST /batches":
        body["stage"] = body.get("stage") if body.get("stage") in BATCH_STAGES else "categorise"
        body["constitution"] = "ethical"
        records = (body.get("input") or {}).get("records") if isinstance(body.get("input"), dict) else None
        records = [r for r in records if isinstance(r, dict)][:20] if isinstance(records, list) else []
        body["input"] = {"records": [{**r, "id": f"r{i}"} for i, r in enumerate(records or [{"prompt": "hi"}])]}
    elif label == "POST /v1/chat/completions":
        body["model"], body["messages"] = "base", _user_last(body.get("messages"))
    elif label == "POST /chat/side-by-side":
        body["models"], body["messages"] = ["base", "base"], _user_last(body.get("messages"))
        if isinstance(body.get("judge"), dict):
            body["judge"] = {**body["judge"], "constitution": "ethical"}
    return body


def _envelope_problem(response: requests.Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"not the error envelope: {response.text[:200]!r}"
    if not (isinstance(error, dict) and set(error) <= ENVELOPE_FIELDS and error.get("message")
            and error.get("type")):
        return f"not the error envelope: {error!r}"
    return None


def test_schemathesis_finds_no_5xx_and_every_error_enveloped(fuzz_stack):
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.url}/openapi.json")
    schema.validate()  # the document is valid OpenAPI (raises otherwise)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    by_operation: Counter[tuple[str, int]] = Counter()
    failures: dict[tuple[str, int, str], str] = {}
    session = requests.Session()

    took: Counter[str] = Counter()
    for operation in operations:
        started = time.monotonic()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def send(case) -> None:
                if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
                    case.body = accepted_shape(case.operation.label, case.body)
                response = case.call(base_url=fuzz_stack.url, session=session, timeout=60)
                sent[case.operation.label] += 1
                statuses[response.status_code] += 1
                by_operation[case.operation.label, response.status_code] += 1
                problems = [p for p in [_envelope_problem(response)] if p]
                try:
                    case.validate_response(response, checks=CHECKS)
                except FailureGroup as group:  # every failure is collected and reported below
                    problems += [f"{type(e).__name__}: {' '.join(str(e).split())[:300]}" for e in group.exceptions]
                for problem in problems:  # one example of each distinct failure
                    failures.setdefault((case.operation.label, response.status_code, problem[:80]),
                                        f"{problem}\n    {case.as_curl_command()[:400]}")

            send()
        took[operation.label] = round(time.monotonic() - started, 1)

    print(f"{sum(sent.values())} requests; statuses {dict(sorted(statuses.items()))}; per operation and status "
          f"{dict(sorted(by_operation.items()))}; seconds per operation {dict(took)}")
    assert not failures, "\n".join(f"{label} → {status}: {example}" for (label, status, _), example in failures.items())
    assert sum(sent.values()) >= MIN_REQUESTS, sent
    assert set(sent) == {op.label for op in operations}, sent
    assert not any(status >= 500 for status in statuses), statuses
    assert fuzz_stack.gateway.poll() is None
