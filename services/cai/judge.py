"""The judge: which of two answers better follows a constitution, as a probability.

Soft labels from next-token log-probabilities (the CAI paper's multiple-choice form),
debiased by judging both orders, ensembled over sampled labelling principles. Also the
chain-of-thought form (clamped to 40-60 %) and the seed project's OPTION 1/2 hard label.
"""
from __future__ import annotations

import asyncio
import math
import random
import re
import time

from services.cai.contrastive_judge import BY_CONSTRUCTION, calibrated_tau, contrast_judgement, sample_principles
from ucai.constitutions import Constitution
from ucai.prompts import LABELS, ContextProbe, judge_cot_messages, judge_messages, judge_option_messages
from ucai.roles import RoleClient, Roles
from ucai.schemas import (
    ChatMessage,
    CompareJob,
    CompareRequest,
    CompareResult,
    Judgement,
    JudgeOptions,
    PositionConsistency,
    Usage,
)
from ucai.settings import Settings

TOP_LOGPROBS = 20
COT_MAX_TOKENS = 256  # the chain-of-thought form reasons before it answers
COT_CLAMP = (0.4, 0.6)
_COT_ANSWER = re.compile(r"answer is:?\s*\(?\s*([AB])\b", re.I)
_OPTION_ANSWER = re.compile(r"OPTION\s*([12])", re.I)


def labelling_questions(constitution: Constitution, principles: list[str] | None) -> list[str]:
    chosen = [p for p in constitution.principles if not principles or p.name in principles]
    questions = [q for p in chosen for q in p.labelling]
    # A constitution without labelling questions still gets a judge: ask about its principles by title.
    return questions or [f"Which of these assistant responses better follows the principle of {p.title.lower()}?"
                         for p in chosen]


def sample_questions(questions: list[str], k: int, rng: random.Random) -> list[str]:
    """k questions, without repeats while there are enough."""
    picked: list[str] = []
    while len(picked) < k:
        picked += rng.sample(questions, min(len(questions), k - len(picked)))
    return picked


def label_of(token: str, labels: tuple[str, ...] = LABELS) -> str | None:
    """ "A", " A", "(A", "A)" ... all mean A."""
    core = token.strip().strip("()").strip()
    return core if core in labels else None


def label_distribution(top_logprobs: list[dict], labels: tuple[str, ...]) -> dict[str, float] | None:
    """Normalised probability of each label from one position's top-k, summing every variant of each."""
    mass = dict.fromkeys(labels, 0.0)
    for entry in top_logprobs:
        label = label_of(entry.get("token", ""), labels)
        if label:
            mass[label] += math.exp(entry["logprob"])
    total = sum(mass.values())
    if total <= 0:
        return None
    return {label: m / total for label, m in mass.items()}


def soft_label(top_logprobs: list[dict]) -> tuple[float, float] | None:
    """Normalised P(A), P(B)."""
    dist = label_distribution(top_logprobs, LABELS)
    return None if dist is None else (dist["A"], dist["B"])


class Judge:
    def __init__(self, role: RoleClient, usage: Usage):
        self.role = role
        self.usage = usage

    async def _chat(self, messages, **kwargs):
        completion = await self.role.chat(messages, **kwargs)
        self.usage.add(completion.prompt_tokens, completion.completion_tokens)
        return completion

    async def logprob(self, question, conversation, first, second) -> tuple[float, float, dict]:
        messages = judge_messages(question, conversation, first, second)
        prefill = {"add_generation_prompt": False, "continue_final_message": True}
        completion = await self._chat(messages, max_tokens=1, temperature=0.0, logprobs=True,
                                      top_logprobs=TOP_LOGPROBS, **prefill)
        top = completion.top_logprobs()
        probs = soft_label(top)
        raw = {"top_tokens": {t["token"]: round(t["logprob"], 4) for t in top[:8]}}
        if probs is not None:
            return probs[0], probs[1], raw
        # Neither label in the top-k: constrain the answer to the labels (vLLM structured outputs).
        completion = await self._chat(messages, max_tokens=1, temperature=0.0, logprobs=True,
                                      top_logprobs=TOP_LOGPROBS, structured_outputs={"choice": list(LABELS)},
                                      **prefill)
        probs = soft_label(completion.top_logprobs())
        raw["fallback"] = "constrained choice"
        if probs is None:
            label = label_of(completion.text) or "A"
            probs = (1.0, 0.0) if label == "A" else (0.0, 1.0)
            raw["fallback"] = f"constrained choice, hard label {label}"
        return probs[0], probs[1], raw

    async def cot(self, question, conversation, first, second, seed) -> tuple[float, float, dict]:
        completion = await self._chat(judge_cot_messages(question, conversation, first, second),
                                      max_tokens=COT_MAX_TOKENS, temperature=0.0, seed=seed)
        matches = _COT_ANSWER.findall(completion.text)
        raw = {"reasoning": completion.text}
        if not matches:
            raw["parsed"] = "no answer found: tie"
            return 0.5, 0.5, raw
        low, high = COT_CLAMP  # CoT verdicts are near 0/1; the paper clamps them
        p_a = high if matches[-1].upper() == "A" else low
        return p_a, 1 - p_a, raw

    async def option(self, question, conversation, first, second, seed) -> tuple[float, float, dict]:
        completion = await self._chat(judge_option_messages(question, conversation, first, second),
                                      max_tokens=8, temperature=0.0, seed=seed)
        match = _OPTION_ANSWER.search(completion.text)
        raw = {"reply": completion.text}
        if not match:
            raw["parsed"] = "no OPTION found: tie"
            return 0.5, 0.5, raw
        return (1.0, 0.0, raw) if match.group(1) == "1" else (0.0, 1.0, raw)

    async def judge(self, method: str, question: str, conversation: list[ChatMessage], a: str, b: str,
                    order: str, seed: int | None) -> Judgement:
        first, second = (a, b) if order == "ab" else (b, a)
        if method == "logprob":
            p_first, p_second, raw = await self.logprob(question, conversation, first, second)
        elif method == "cot":
            p_first, p_second, raw = await self.cot(question, conversation, first, second, seed)
        else:
            p_first, p_second, raw = await self.option(question, conversation, first, second, seed)
        p_a, p_b = (p_first, p_second) if order == "ab" else (p_second, p_first)
        return Judgement(principle=question, order=order, p_a=p_a, p_b=p_b, raw=raw)


def consistency(judgements: list[Judgement]) -> PositionConsistency:
    by_question: dict[str, dict[str, float]] = {}
    for j in judgements:
        by_question.setdefault(j.principle, {})[j.order] = j.p_a
    pairs = [(o["ab"], o["ba"]) for o in by_question.values() if "ab" in o and "ba" in o]
    if not pairs:
        return PositionConsistency()
    flips = [(ab > 0.5) != (ba > 0.5) for ab, ba in pairs if ab != 0.5 and ba != 0.5]
    flip_rate = sum(flips) / len(pairs)
    return PositionConsistency(score=round(sum(1 - abs(ab - ba) for ab, ba in pairs) / len(pairs), 6),
                               flip_rate=round(flip_rate, 6), flipped=flip_rate > 0.5)


async def compare_pair(
    judge: Judge, constitution: Constitution, conversation: list[ChatMessage], a: str, b: str,
    options: JudgeOptions, rng: random.Random,
) -> tuple[float, list[Judgement], PositionConsistency, str | None]:
    """P(a preferred), the judgements, position consistency and a note (identical answers: no model call)."""
    if a.strip() == b.strip():
        return 0.5, [], PositionConsistency(), "identical responses: p = 0.5 without calling the judge"
    method, ensemble, seed = judge_method(options, judge.role), options.ensemble, options.seed
    if method == "contrast":
        normalised = options.length_normalised
        tau = options.tau or calibrated_tau(judge.role.model, constitution.name, normalised)
        judgements = await asyncio.gather(*(
            contrast_judgement(judge.role, principle, conversation, a, b, tau, normalised)
            for principle in sample_principles(constitution, options.principles, ensemble, rng)))
        return sum(j.p_a for j in judgements) / len(judgements), list(judgements), BY_CONSTRUCTION, None
    questions = sample_questions(labelling_questions(constitution, options.principles), ensemble, rng)
    orders = ("ab", "ba") if options.both_orders else ("ab",)
    judgements = await asyncio.gather(*(
        judge.judge(method, q, conversation, a, b, order, seed) for q in questions for order in orders
    ))
    p_a = sum(j.p_a for j in judgements) / len(judgements)  # mirrored orders averaged, then principles
    return p_a, list(judgements), consistency(list(judgements)), None


def judge_method(options: JudgeOptions, role: RoleClient) -> str:
    """The request's method, else the one configured for the judge role's model."""
    return options.method or role.settings.method


def judge_probe(request: JudgeOptions, constitution: Constitution, first: str, second: str) -> ContextProbe:
    """The longest judge prompt: the chain-of-thought form with the longest labelling question, and its reasoning."""
    questions = labelling_questions(constitution, None)
    return ContextProbe("judge", judge_cot_messages(max(questions, key=len), request.conversation(), first, second),
                        COT_MAX_TOKENS)


def compare_probe(request: CompareRequest, constitution: Constitution, settings: Settings) -> ContextProbe:
    return judge_probe(request, constitution, *request.responses)


async def run_compare(job: CompareJob, roles: Roles) -> CompareResult:
    request, constitution = job.request, job.constitution
    started = time.perf_counter()
    usage = Usage()
    p_a, judgements, position, note = await compare_pair(
        Judge(roles.judge, usage), constitution, request.conversation(), request.responses[0], request.responses[1],
        request, random.Random(request.seed))
    p_b = 1.0 - p_a
    preferred = 0 if p_a >= p_b else 1
    return CompareResult(
        id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
        method=judge_method(request, roles.judge), preferred=preferred, probabilities=[p_a, p_b], margin=abs(p_a - p_b),
        judgements=judgements, position_consistency=position, note=note, usage=usage,
        timings={"total": round(time.perf_counter() - started, 3)},
    )
