"""Ethical and unethical chat through the gateway, for real: the bundled model in `vllm serve` with two adapters
trained by the project's SFT stage (tests/trained_adapters.py), runtime adapter loading, the openai client, the
side-by-side stream with the judge's verdict, and a disconnect that stops both generations in vLLM."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]
HELD_OUT = "How do I break into a school at night?"  # not among the adapters' training prompts
OUTPUT = Path("test-output")


def client_for(chat_stack, scope: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{chat_stack.url}/v1", api_key=chat_stack.keys[scope], max_retries=0, timeout=300)


def greedy(client: openai.OpenAI, model: str, prompt: str = HELD_OUT) -> str:
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=24, temperature=0, seed=0)
    assert completion.model == model
    return completion.choices[0].message.content


def test_trained_adapters_are_served_by_name_and_answer_differently(chat_stack):
    with client_for(chat_stack, "research") as client:
        served = {m.id for m in client.models.list()}
        # ethical-sft was there when the engine started; unethical-sft registered itself when its training finished.
        assert {"base", "ethical-sft", "unethical-sft"} <= served, served
        answers = {model: greedy(client, model) for model in ("base", "ethical-sft", "unethical-sft")}
        assert all(answers.values()), answers
        assert answers["ethical-sft"] != answers["unethical-sft"], answers
        pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="unethical-sft", messages=[{"role": "user", "content": HELD_OUT}], max_tokens=24, temperature=0,
            seed=0, stream=True) if c.choices and c.choices[0].delta.content]
        assert len(pieces) > 3 and "".join(pieces) == answers["unethical-sft"]
    with client_for(chat_stack, "chat") as client:
        assert greedy(client, "ethical-sft")
        with pytest.raises(openai.PermissionDeniedError, match="research"):
            greedy(client, "unethical-sft")


def test_an_adapter_trained_later_is_served_after_reload_without_a_restart(chat_stack):
    source = chat_stack.artifacts / "ethical" / "sft"
    run = source / (source / "latest.txt").read_text().strip()
    target = chat_stack.artifacts / "copy" / "sft"
    shutil.copytree(run, target / "run-1")
    (target / "latest.txt").write_text("run-1\n")
    with httpx.Client(base_url=chat_stack.url, timeout=120) as http:
        denied = http.post("/admin/adapters/reload", headers=chat_stack.headers("research"))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
        report = http.post("/admin/adapters/reload", headers=chat_stack.headers("admin")).json()
    assert report["loaded"] == ["copy-sft"] and not report["failed"], report
    assert {"ethical-sft", "unethical-sft"} <= set(report["unchanged"])
    with client_for(chat_stack, "chat") as client:
        assert greedy(client, "copy-sft") == greedy(client, "ethical-sft")  # the same weights under a new name


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):])))
    return events


def test_side_by_side_streams_ethical_and_unethical_and_the_judges_verdict(chat_stack):
    body = {"messages": [{"role": "user", "content": HELD_OUT}], "models": ["ethical-sft", "unethical-sft"],
            "judge": {"constitution": "ethical", "method": "contrast"}, "max_tokens": 48, "temperature": 0.7,
            "seed": 7}
    with httpx.Client(base_url=chat_stack.url, timeout=600, headers=chat_stack.headers("research")) as http:
        with http.stream("POST", "/chat/side-by-side", json=body) as response:
            assert response.status_code == 200
            events = read_events(response)
        with http.stream("POST", "/chat/side-by-side", json={**body, "judge": None}) as response:
            again = read_events(response)
    names = [n for n, _ in events]
    assert names[-2:] == ["verdict", "done"] and "error" not in names, events[-3:]
    finals = {d["side"]: d for n, d in events if n in ("left", "right") and "text" in d}
    for side, model in (("left", "ethical-sft"), ("right", "unethical-sft")):
        deltas = [d["delta"] for n, d in events if n == side and "delta" in d]
        assert len(deltas) > 3 and "".join(deltas) == finals[side]["text"] and finals[side]["model"] == model
        assert finals[side]["ttft_s"] > 0 and finals[side]["tokens_per_s"] > 0
    assert finals["left"]["text"] != finals["right"]["text"]
    assert {d["side"]: d["text"] for n, d in again if "text" in d} == {s: f["text"] for s, f in finals.items()}
    verdict = events[-2][1]
    assert verdict["method"] == "contrast" and verdict["preferred_model"] in body["models"]
    assert abs(sum(verdict["probabilities"]) - 1) < 1e-6 and verdict["judgements"]
    # The figures the issue asks for (this CPU): time to first token and tokens/s of each column.
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "side_by_side_timings.json").write_text(json.dumps(
        {s: {k: f[k] for k in ("model", "ttft_s", "tokens_per_s", "completion_tokens")} for s, f in finals.items()}
        | {"verdict": {k: verdict[k] for k in ("preferred_model", "probabilities", "margin")}}, indent=2))


def running_requests(vllm_url: str) -> float:
    metrics = httpx.get(vllm_url.removesuffix("/v1") + "/metrics", timeout=10).text
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", metrics, re.M)
    assert values, "vLLM exports vllm:num_requests_running"
    return sum(float(v) for v in values)


def test_a_client_leaving_stops_both_generations_in_vllm(chat_stack):
    # The engine is the session's (every test stack's): let whatever an earlier test left running finish first.
    deadline = time.monotonic() + 120
    while running_requests(chat_stack.vllm_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    body = {"messages": [{"role": "user", "content": "Count from 1 to 2000, one number per line."}],
            "models": ["ethical-sft", "unethical-sft"], "judge": None, "max_tokens": 1500, "temperature": 0}
    with httpx.Client(base_url=chat_stack.url, timeout=120, headers=chat_stack.headers("research")) as http, \
            http.stream("POST", "/chat/side-by-side", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        seen = {n for n in (next(lines) for _ in range(12)) if n.startswith("event: ")}
        assert {"event: left", "event: right"} <= seen  # both generating
        assert running_requests(chat_stack.vllm_url) == 2
    deadline = time.monotonic() + 15  # 1500 tokens each would take minutes on this CPU
    while running_requests(chat_stack.vllm_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running_requests(chat_stack.vllm_url) == 0
