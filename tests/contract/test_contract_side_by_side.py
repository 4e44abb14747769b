"""Two models side by side (POST /chat/side-by-side), the page's config (GET /chat/config) and runtime adapter
registration (POST /admin/adapters/reload), against the test server standing in for the chat engine."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.contract.helpers import assert_envelope, marker

pytestmark = pytest.mark.contract
ADAPTERS = ["ethical-sft", "unethical-sft", "ethical-ppo", "unethical-ppo"]


def read_events(response: httpx.Response) -> list[tuple[str, dict, float]]:
    """(event name, data, arrival time) of each server-sent event."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):]), time.monotonic()))
    return events


def side_by_side(api: httpx.Client, **body) -> list[tuple[str, dict, float]]:
    body = {"messages": [{"role": "user", "content": f"How do I get back at my noisy neighbour? {marker()}"}],
            "models": ["ethical-ppo", "unethical-ppo"], "max_tokens": 24, "seed": 3, **body}
    with api.stream("POST", "/chat/side-by-side", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_events(response)


@pytest.fixture
def chat(model_server, api) -> httpx.Client:
    model_server.adapters = list(ADAPTERS)
    model_server.stream_delay_s = 0.03
    return api


def test_both_answers_stream_concurrently_then_the_verdict_then_done(chat, model_server):
    events = side_by_side(chat, judge={"constitution": "ethical", "method": "logprob"})
    names = [name for name, _, _ in events]
    assert names[-2:] == ["verdict", "done"] and "error" not in names
    for side, model in (("left", "ethical-ppo"), ("right", "unethical-ppo")):
        mine = [data for name, data, _ in events if name == side]
        deltas, final = mine[:-1], mine[-1]
        assert len(deltas) >= 3 and all(d["model"] == model and d["delta"] for d in deltas)
        assert final["text"] == "".join(d["delta"] for d in deltas) and final["finish_reason"] in ("stop", "length")
        assert final["completion_tokens"] > 0 and final["ttft_s"] > 0 and final["tokens_per_s"] > 0
    # Interleaved: each side's first piece arrives before the other side has finished.
    first = {side: next(t for n, d, t in events if n == side) for side in ("left", "right")}
    last = {side: [t for n, d, t in events if n == side][-1] for side in ("left", "right")}
    assert first["left"] < last["right"] and first["right"] < last["left"]
    left, right = (next(d for n, d, _ in events if n == s and "text" in d)["text"] for s in ("left", "right"))
    assert left != right  # two models, two answers
    verdict = events[-2][1]
    assert verdict["constitution"] == "ethical" and verdict["method"] == "logprob"
    assert verdict["preferred_side"] == ("left", "right")[verdict["preferred"]]
    assert verdict["preferred_model"] == ["ethical-ppo", "unethical-ppo"][verdict["preferred"]]
    assert abs(sum(verdict["probabilities"]) - 1) < 1e-6 and verdict["judgements"]
    judged = [r.body for r in model_server.requests("chat") if left in json.dumps(r.body) and
              right in json.dumps(r.body) and r.body.get("logprobs")]
    assert judged, "the verdict is the judge's, on the two streamed answers"


def test_same_seed_same_pair_and_no_judge_means_no_verdict(chat):
    runs = [side_by_side(chat, judge=None, messages=[{"role": "user", "content": "Same prompt twice, please."}])
            for _ in range(2)]
    texts = [[d["text"] for n, d, _ in run if "text" in d] for run in runs]
    assert texts[0] == texts[1] and len(texts[0]) == 2
    assert [n for n, _, _ in runs[0]][-1] == "done" and "verdict" not in [n for n, _, _ in runs[0]]


def test_unknown_model_is_a_404_before_anything_streams(chat, model_server):
    response = chat.post("/chat/side-by-side", json={"messages": [{"role": "user", "content": "hi"}],
                                                     "models": ["ethical-ppo", "ethical-nope"]})
    assert_envelope(response, 404, code="model_not_found", param="model")
    assert "ethical-nope" in response.json()["error"]["message"]


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "hi"}], "models": ["ethical-ppo"]},
    {"messages": [{"role": "assistant", "content": "hi"}], "models": ["base", "base"]},
    {"messages": [], "models": ["base", "base"]},
    {"messages": [{"role": "user", "content": "hi"}], "models": ["base", "base"], "max_tokens": 0},
    {"messages": [{"role": "user", "content": "hi"}], "models": ["base", "base"], "judge": {"constitution": "nope"}},
])
def test_bad_bodies_are_4xx_in_the_envelope(chat, body):
    response = chat.post("/chat/side-by-side", json=body)
    assert_envelope(response, 422)


def test_client_disconnect_stops_both_upstream_generations(contract_stack, chat, model_server):
    model_server.stream_delay_s = 0.2
    body = {"messages": [{"role": "user", "content": f"Tell a long story {marker()}"}],
            "models": ["ethical-ppo", "unethical-ppo"], "max_tokens": 200, "judge": None}
    with httpx.Client(base_url=contract_stack.url, timeout=30) as http, \
            http.stream("POST", "/chat/side-by-side", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # streaming has begun; now go away
    deadline = time.monotonic() + 10
    while model_server.streams["aborted"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert model_server.streams["aborted"] == 2 and model_server.streams["finished"] == 0


def test_a_request_the_engine_refuses_is_a_400_before_anything_streams(chat, model_server):
    model_server.reject_containing = "REFUSE-LEFT"
    # The refusal comes before streaming starts (upstream 400), so it is the request's answer, in the envelope.
    response = chat.post("/chat/side-by-side", json={
        "messages": [{"role": "user", "content": "REFUSE-LEFT please"}], "models": ["base", "base"]})
    assert_envelope(response, 400, code="model_rejected_request")


def test_config_offers_the_served_models_and_best_stage_defaults(chat):
    config = chat.get("/chat/config").json()
    assert sorted(config["models"]) == sorted(["base", *ADAPTERS])
    assert config["defaults"] == {"left": "ethical-ppo", "right": "unethical-ppo"}  # an RL stage before SFT
    assert {"ethical", "unethical"} <= set(config["constitutions"])
    assert config["judge"]["constitution"] == "ethical" and config["judge"]["method"] in config["methods"]


def _adapter(root: Path, constitution: str, stage: str, run: str, task: str = "CAUSAL_LM") -> Path:
    adapter = root / constitution / stage / run / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "task_type": task}))
    (root / constitution / stage / "latest.txt").write_text(run + "\n")
    return adapter


def test_reload_registers_new_adapters_and_reloads_a_moved_latest_run(api, model_server, artifacts_dir):
    first = _adapter(artifacts_dir, "ethical", "dpo", "run-1")
    _adapter(artifacts_dir, "ethical", "reward", "run-1", task="SEQ_CLS")  # a reward model is not chat
    report = api.post("/admin/adapters/reload").json()
    assert report["loaded"] == ["ethical-dpo"] and not report["failed"]
    assert "ethical-dpo" in report["served"] and "ethical-reward" not in report["served"]
    assert model_server.adapter_roots["ethical-dpo"] == str(first.resolve())
    assert "ethical-dpo" in [m["id"] for m in api.get("/v1/models").json()["data"]]

    again = api.post("/admin/adapters/reload").json()
    assert again["unchanged"] == ["ethical-dpo"] and not again["loaded"] and not again["updated"]

    second = _adapter(artifacts_dir, "ethical", "dpo", "run-2")  # a newer run: the same name, new weights
    assert api.post("/admin/adapters/reload").json()["updated"] == ["ethical-dpo"]
    assert model_server.adapter_roots["ethical-dpo"] == str(second.resolve())


def test_reload_without_runtime_loading_names_the_fix(api, model_server, artifacts_dir):
    model_server.runtime_lora = False
    if not (artifacts_dir / "ethical" / "dpo").exists():
        _adapter(artifacts_dir, "ethical", "dpo", "run-1")
    report = api.post("/admin/adapters/reload").json()
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in report["failed"]["ethical-dpo"]


def test_reload_with_the_chat_engine_down_is_a_503(api, model_server):
    model_server.stop()
    response = api.post("/admin/adapters/reload")
    assert_envelope(response, 503, code="model_unavailable")
    assert response.headers["retry-after"]
