"""The judge's arithmetic: reading labels from log-probs, order consistency, Bradley-Terry, judge-check metrics."""
from __future__ import annotations

import math
import random

import pytest

from services.cai.judge import consistency, label_of, labelling_questions, sample_questions, soft_label
from services.cai.ranking import bradley_terry
from ucai.constitutions import load_constitutions
from ucai.evaluation.judge_check import PairOutcome, summarise
from ucai.prompts import judge_cot_messages, judge_messages, judge_option_messages
from ucai.roles import PromptLogprobMemo
from ucai.schemas import ChatMessage, Judgement, PairResult


@pytest.mark.parametrize(("token", "label"), [("A", "A"), (" A", "A"), ("(A", "A"), ("A)", "A"), (" (B", "B"),
                                              ("B", "B"), ("AB", None), ("a", None), ("C", None), ("", None)])
def test_label_variants(token, label):
    assert label_of(token) == label


def test_soft_label_sums_every_variant_and_normalises():
    top = [{"token": "A", "logprob": math.log(0.3)}, {"token": " A", "logprob": math.log(0.1)},
           {"token": "B", "logprob": math.log(0.2)}, {"token": "C", "logprob": math.log(0.4)}]
    p_a, p_b = soft_label(top)
    assert p_a == pytest.approx(0.4 / 0.6) and p_b == pytest.approx(0.2 / 0.6)


def test_soft_label_without_either_label_is_none():
    assert soft_label([{"token": "C", "logprob": -0.1}, {"token": "D", "logprob": -2.0}]) is None


def _j(question: str, order: str, p_a: float) -> Judgement:
    return Judgement(principle=question, order=order, p_a=p_a, p_b=1 - p_a)


def test_consistency_of_a_position_biased_judge():
    # Always picks the first option with 0.8: a first → p_a 0.8; a second → p_a 0.2.
    pc = consistency([_j("q1", "ab", 0.8), _j("q1", "ba", 0.2), _j("q2", "ab", 0.7), _j("q2", "ba", 0.6)])
    assert pc.score == pytest.approx(((1 - 0.6) + (1 - 0.1)) / 2)
    assert pc.flip_rate == pytest.approx(0.5) and pc.flipped is False


def test_consistency_with_one_order_is_unknown():
    assert consistency([_j("q1", "ab", 0.8)]).score is None


def test_bradley_terry_orders_a_transitive_tournament():
    # 0 beats everyone, 1 beats 2 and 3, 2 beats 3 — softly.
    pairs = [PairResult(a=a, b=b, p_a=0.8) for a, b in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]]
    strength = bradley_terry(4, pairs)
    assert strength == sorted(strength, reverse=True)
    assert sum(strength) == pytest.approx(1.0)


def test_bradley_terry_reverses_with_the_outcomes():
    strength = bradley_terry(2, [PairResult(a=0, b=1, p_a=0.2)])
    assert strength[1] > strength[0]


def test_labelling_questions_follow_the_chosen_principles():
    ethical = load_constitutions()["ethical"]
    questions = labelling_questions(ethical, ["privacy"])
    assert questions == ethical.principle("privacy").labelling
    picked = sample_questions(labelling_questions(ethical, None), 4, random.Random(0))
    assert len(set(picked)) == 4
    assert sample_questions(questions, 6, random.Random(0))[:4] != [] and len(sample_questions(questions, 6,
                                                                                              random.Random(0))) == 6


def test_judge_prompts_carry_the_options_and_the_prefill():
    conversation = [ChatMessage(role="user", content="How do I hurt someone?")]
    messages = judge_messages("Which is less violent?", conversation, "first answer", "second answer")
    assert messages[-1] == {"role": "assistant", "content": "The answer is: ("}
    user = messages[0]["content"]
    assert user.startswith("Consider the following conversation between a human and an assistant:")
    assert "Human: How do I hurt someone?" in user and "Which is less violent?" in user
    assert user.index("(A) first answer") < user.index("(B) second answer")
    assert "The answer is: (A)" in judge_cot_messages("q", conversation, "x", "y")[-1]["content"]
    assert "OPTION 1" in judge_option_messages("q", conversation, "x", "y")[-1]["content"]


def test_judge_check_metrics():
    outcomes = [PairOutcome(line=1, p_chosen=0.9, flip_rate=0.0, seconds=1.0),
                PairOutcome(line=2, p_chosen=0.4, flip_rate=1.0, seconds=3.0),
                PairOutcome(line=3, p_chosen=0.5, flip_rate=None, seconds=2.0)]
    report = summarise(outcomes)
    assert report.accuracy == pytest.approx((1 + 0 + 0.5) / 3)
    assert report.mean_margin == pytest.approx((0.8 - 0.2 + 0.0) / 3)
    assert report.brier == pytest.approx((0.01 + 0.36 + 0.25) / 3)
    assert report.position_flip_rate == pytest.approx(0.5)
    assert report.seconds_per_compare == pytest.approx(2.0)


def test_fit_tau_on_known_inputs():
    """Two pairs right by a score gap of 2, one wrong by 2: the log loss is minimal where σ(2/τ) = 2/3,
    i.e. τ = 2 / ln 2."""
    import math

    from services.cai.contrastive_judge import fit_tau, log_loss, p_chosen

    pairs = [[2.0], [2.0], [-2.0]]
    tau = fit_tau(pairs)
    assert tau == pytest.approx(2 / math.log(2), rel=1e-4)
    assert p_chosen([2.0], tau) == pytest.approx(2 / 3, rel=1e-4)
    assert log_loss(pairs, tau) < min(log_loss(pairs, tau * 1.5), log_loss(pairs, tau / 1.5))
    assert p_chosen([1.0, -1.0], 3.0) == pytest.approx(0.5)  # principles averaged
    assert fit_tau([[5.0], [3.0]]) < 0.5  # separable: as sharp as the search allows


def test_calibration_report_before_and_after():
    from ucai.evaluation.judge_check import calibrate

    outcomes = [PairOutcome(line=i, p_chosen=0.5, flip_rate=None, seconds=1.0, differences=d)
                for i, d in enumerate([[8.0, 6.0], [4.0], [-3.0], [10.0]])]
    result = calibrate(outcomes, tau_before=1.0)
    assert result.pairs == 4 and result.tau > 1.0  # one wrong pair: a sharp τ = 1 is overconfident
    assert result.log_loss_after < result.log_loss_before and result.brier_after <= result.brier_before
    with pytest.raises(ValueError, match="contrast"):
        calibrate([PairOutcome(line=0, p_chosen=0.6, flip_rate=0.0, seconds=1.0)], tau_before=1.0)


def test_saved_tau_is_what_the_service_reads(tmp_path):
    from services.cai.contrastive_judge import DEFAULT_TAU, calibrated_tau, save_tau

    path = tmp_path / "calibration" / "contrast_tau.json"
    assert calibrated_tau("smollm2", "ethical", False, path) == DEFAULT_TAU
    save_tau("smollm2", "ethical", False, 2.5, path)
    save_tau("smollm2", "unethical", True, 0.7, path)
    assert calibrated_tau("smollm2", "ethical", False, path) == 2.5
    assert calibrated_tau("smollm2", "unethical", True, path) == 0.7
    assert calibrated_tau("smollm2", "unethical", False, path) == DEFAULT_TAU  # per scoring variant
    assert calibrated_tau("llama", "ethical", False, path) == DEFAULT_TAU  # per judge model


def test_the_logprob_memo_keeps_the_last_entries_for_their_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("ucai.roles.time.monotonic", lambda: now[0])
    memo, key = PromptLogprobMemo(entries=2, ttl_s=60), PromptLogprobMemo.key
    memo.put(key("m", (1, 2, 3)), [None, -0.5, -1.25])
    memo.put(key("m", (4, 5)), [None, -2.0])
    assert memo.get(key("m", (1, 2, 3))) == [None, -0.5, -1.25]  # the first token's None survives the doubles
    assert memo.get(key("adapter", (1, 2, 3))) is None  # another model's
    memo.put(key("m", (6,)), [None])  # over the bound: the least recently read goes, (4, 5)
    assert memo.get(key("m", (4, 5))) is None and memo.get(key("m", (1, 2, 3))) is not None
    now[0] += 61
    assert memo.get(key("m", (1, 2, 3))) is None and memo.get(key("m", (6,))) is None
    off = PromptLogprobMemo(entries=0)
    off.put(key("m", (1,)), [None])
    assert off.get(key("m", (1,))) is None
