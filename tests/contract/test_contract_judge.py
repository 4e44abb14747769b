"""POST /compare and POST /rank through the queue against the test server's log-probabilities: the soft label is
the one the judge's answer holds (label variants summed), one model call per judgement, both orders mirrored,
identical answers without a call, the constrained-choice fallback when no label is in the top-k (vLLM structured
outputs), the cot/option methods, and the ranking over all pairs or a budget of pairs."""
from __future__ import annotations

import itertools

import pytest

from tests.contract.helpers import label_probability, marker

pytestmark = pytest.mark.contract

RESULT_FIELDS = {"id", "status", "constitution", "constitution_hash", "method", "preferred", "probabilities",
                 "margin", "judgements", "position_consistency", "note", "usage", "timings"}


def compare(api, word: str, **body) -> dict:
    response = api.post("/compare", json={"prompt": f"How do I hurt my neighbour {word}?",
                                          "responses": ["Talk to them calmly.", "Hit him with a bat."],
                                          "seed": 1, "method": "logprob", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_compare_reads_the_label_probability_from_the_judges_top_logprobs(api, model_server):
    word = marker()
    result = compare(api, word, ensemble=1, both_orders=False)
    assert set(result) == RESULT_FIELDS and result["status"] == "completed" and result["method"] == "logprob"
    calls = model_server.requests("chat", containing=word, status=200)
    assert len(calls) == len(result["judgements"]) == result["usage"]["requests"] == 1
    sent = calls[0].body
    assert sent["logprobs"] is True and 1 <= sent["top_logprobs"] <= 20 and sent["max_tokens"] == 1
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["messages"][-1]["role"] == "assistant"  # the pre-filled "The answer is: ("
    top = calls[0].response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    p_a = label_probability(top, "A", "B")
    assert result["probabilities"] == pytest.approx([p_a, 1 - p_a], abs=1e-6)
    assert result["preferred"] == (0 if p_a >= 0.5 else 1)
    assert result["margin"] == pytest.approx(abs(2 * p_a - 1), abs=1e-6)
    assert result["judgements"][0]["order"] == "ab"


def test_compare_both_orders_and_ensemble(api, model_server):
    word = marker()
    result = compare(api, word, ensemble=2, both_orders=True)
    judgements = result["judgements"]
    calls = model_server.requests("chat", containing=word, status=200)
    assert len(judgements) == len(calls) == 4
    assert sorted(j["order"] for j in judgements) == ["ab", "ab", "ba", "ba"]
    assert len({j["principle"] for j in judgements}) == 2  # two labelling questions, each in both orders
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    assert result["probabilities"][0] == pytest.approx(sum(j["p_a"] for j in judgements) / 4, abs=1e-6)
    # A "ba" judgement is the mirrored reading: P(first position) is its p_b.
    read = [label_probability(c.response["choices"][0]["logprobs"]["content"][0]["top_logprobs"], "A", "B")
            for c in calls]
    for judgement in judgements:
        p_first = judgement["p_a"] if judgement["order"] == "ab" else judgement["p_b"]
        assert any(p_first == pytest.approx(p, abs=1e-6) for p in read), (judgement, read)
    consistency = result["position_consistency"]
    assert 0.0 <= consistency["score"] <= 1.0 and 0.0 <= consistency["flip_rate"] <= 1.0


def test_identical_responses_are_a_tie_without_a_model_call(api, model_server):
    word = marker()
    response = api.post("/compare", json={"prompt": f"Which is kinder {word}?", "responses": ["Same.", "Same."]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["probabilities"] == [0.5, 0.5] and result["judgements"] == [] and result["note"]
    assert model_server.count("chat", containing=word) == 0


def test_no_label_in_the_top_k_falls_back_to_a_constrained_choice(api, model_server):
    word = marker()
    model_server.labels_in_top = False
    result = compare(api, word, ensemble=1, both_orders=False)
    calls = model_server.requests("chat", containing=word, status=200)
    assert len(calls) == 2 and "structured_outputs" not in calls[0].body
    assert calls[1].body["structured_outputs"] == {"choice": ["A", "B"]}
    judgement = result["judgements"][0]
    assert judgement["raw"]["fallback"].startswith("constrained choice")
    top = calls[1].response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert result["probabilities"][0] == pytest.approx(label_probability(top, "A", "B"), abs=1e-6)


@pytest.mark.parametrize(("method", "allowed"), [("cot", {0.4, 0.5, 0.6}), ("option", {0.0, 0.5, 1.0})])
def test_other_methods_parse_the_answer(api, model_server, method, allowed):
    word = marker()
    result = compare(api, word, method=method, ensemble=2, both_orders=True)
    assert result["method"] == method
    assert model_server.count("chat", containing=word, status=200) == len(result["judgements"]) == 4
    assert all(j["p_a"] in allowed and j["p_a"] + j["p_b"] == pytest.approx(1.0) for j in result["judgements"])
    assert any("parsed" not in j["raw"] for j in result["judgements"])  # the model's answer was read


def test_rank_judges_every_pair_and_orders_by_strength(api, model_server):
    word = marker()
    answers = ["Talk to them.", "Ignore it.", "Call the police.", "Hit him."]
    response = api.post("/rank", json={"prompt": f"My neighbour is loud {word}", "responses": answers,
                                       "method": "logprob", "ensemble": 1, "both_orders": False, "seed": 2})
    assert response.status_code == 200, response.text
    result = response.json()
    assert {(p["a"], p["b"]) for p in result["pairs"]} == set(itertools.combinations(range(4), 2))
    assert model_server.count("chat", containing=word, status=200) == 6
    ranking = result["ranking"]
    assert sorted(r["index"] for r in ranking) == [0, 1, 2, 3] and [r["rank"] for r in ranking] == [1, 2, 3, 4]
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-4)
    wins = {r["index"]: r["wins"] for r in ranking}
    for index in range(4):
        expected = sum(p["p_a"] for p in result["pairs"] if p["a"] == index) + sum(
            1 - p["p_a"] for p in result["pairs"] if p["b"] == index)
        assert wins[index] == pytest.approx(expected, abs=1e-4)


def test_rank_budget_limits_the_pairs_judged(api, model_server):
    word = marker()
    response = api.post("/rank", json={"prompt": f"Pick one {word}", "responses": ["a", "b", "c", "d", "e"],
                                       "method": "logprob", "ensemble": 1, "both_orders": False, "max_pairs": 3,
                                       "seed": 4})
    assert response.status_code == 200, response.text
    assert len(response.json()["pairs"]) == 3
    assert model_server.count("chat", containing=word, status=200) == 3


def test_compare_over_the_judges_context_is_400_before_queueing(api, model_server):
    word = marker()
    response = api.post("/compare", json={"prompt": f"Which is better {word}?",
                                          "responses": ["short", "long " * 4500]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert model_server.count("chat", containing=word) == 0


def test_contrast_is_the_default_and_scores_each_answer_under_both_personas(api, model_server):
    """The judge role's default method (UCAI_JUDGE__METHOD) is contrast: per principle, each answer is scored under
    the follow and the violate persona — one prompt-log-probability request each, no chat call."""
    word = marker()
    scored_before = model_server.count("completions", status=200)
    response = api.post("/compare", json={"prompt": f"How do I hurt my neighbour {word}?", "ensemble": 2, "seed": 1,
                                          "responses": ["Talk to them calmly.", "Hit him with a bat."]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["method"] == "contrast" and len(result["judgements"]) == 2
    # principles x answers x personas: one scoring request each (token ids), two /tokenize calls each (the gateway's
    # context check needs none: the prompt's bytes already prove it fits)
    assert model_server.count("completions", status=200) - scored_before == 2 * 2 * 2
    assert model_server.count("tokenize", containing=word) == 2 * 2 * 2 * 2
    assert model_server.count("chat", containing=word) == 0
    assert result["position_consistency"]["score"] == 1.0
    swapped = api.post("/compare", json={"prompt": f"How do I hurt my neighbour {word}?", "ensemble": 2, "seed": 1,
                                         "responses": ["Hit him with a bat.", "Talk to them calmly."]}).json()
    assert swapped["probabilities"][0] == pytest.approx(result["probabilities"][1], abs=1e-9)


def test_an_answer_scored_before_is_not_sent_to_the_model_again(api, model_server):
    """Prompt log-probabilities depend on the model and the tokens alone, and the worker keeps recent ones: the same
    answers compared again — in the other order, or under the inverted constitution, whose personas are the same
    two swapped — cost no scoring request; a new answer costs its own (principles x personas) and no more."""
    word = marker()
    body = {"prompt": f"How do I hurt my neighbour {word}?", "ensemble": 2, "seed": 1, "method": "contrast",
            "responses": ["Talk to them calmly.", "Hit him with a bat."]}
    first = api.post("/compare", json=body).json()
    scored = model_server.count("completions", status=200)
    swapped = api.post("/compare", json={**body, "responses": body["responses"][::-1]}).json()
    inverted = api.post("/compare", json={**body, "constitution": "unethical"}).json()
    assert model_server.count("completions", status=200) == scored
    assert swapped["probabilities"][0] == pytest.approx(first["probabilities"][1], abs=1e-12)
    assert inverted["status"] == "completed" and inverted["constitution"] == "unethical"
    for judgement, mirrored in zip(first["judgements"], inverted["judgements"], strict=True):
        assert judgement["raw"]["score_a"] == pytest.approx(-mirrored["raw"]["score_a"], abs=1e-9)
    api.post("/compare", json={**body, "responses": ["Talk to them calmly.", f"Leave a note {word}."]})
    assert model_server.count("completions", status=200) == scored + 2 * 2  # the new answer, 2 principles x 2 personas


def test_contrast_without_prompt_logprobs_is_a_422_naming_the_method(api, model_server):
    model_server.prompt_logprobs_enabled = False
    try:
        response = api.post("/compare", json={"prompt": f"Which is kinder {marker()}?", "method": "contrast",
                                              "responses": ["Be kind.", "Be cruel."], "ensemble": 1})
    finally:
        model_server.prompt_logprobs_enabled = True
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "method_unsupported" and "prompt log-probabilities" in error["message"]
