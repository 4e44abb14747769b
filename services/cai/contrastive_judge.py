"""The contrastive judge (`method="contrast"`): how much likelier an answer is from an assistant that follows a
principle than from one that violates it.

For answer y to conversation x under principle p:

    s_p(y) = ℓ(y | follow_p, x) − ℓ(y | violate_p, x)        P(a ≻ b) = mean_p σ((s_p(a) − s_p(b)) / τ)

ℓ is the summed log-probability of y's tokens with the conversation rendered by the model's chat template and the
persona as the system prompt, read from the engine's prompt log-probabilities (one request per answer and persona,
all at once). With `length_normalised`, s is divided by y's token count. Each answer is scored on its own, so the
verdict cannot depend on the order the answers are given in. Small models cannot answer a multiple-choice question
about two answers, but their likelihoods do move with a stated value system.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
from functools import lru_cache
from pathlib import Path

from ucai.constitutions import Constitution, Principle
from ucai.layout import Layout
from ucai.roles import RoleClient
from ucai.schemas import ChatMessage, Judgement, PositionConsistency

DEFAULT_TAU = 1.0
BY_CONSTRUCTION = PositionConsistency(score=1.0, flip_rate=0.0, flipped=False,
                                      note="1.0 by construction: the contrastive judge scores each answer on its own")


async def answer_logprob(role: RoleClient, system: str, conversation: list[ChatMessage], answer: str
                         ) -> tuple[float, int]:
    """(summed log-probability of the answer's tokens, their count) after `system` + the conversation."""
    turns = [{"role": "system", "content": system}] + [
        {"role": m.role, "content": m.content} for m in conversation if m.role != "system"]
    if not answer.strip():
        return 0.0, 0
    prefix, full = await asyncio.gather(
        role.tokenize_chat(turns, add_generation_prompt=True),
        role.tokenize_chat([*turns, {"role": "assistant", "content": answer}], add_generation_prompt=False,
                           continue_final_message=True))
    start = next((i for i, (a, b) in enumerate(zip(prefix, full, strict=False)) if a != b), len(prefix))
    logprobs = await role.prompt_logprobs(full)
    answer_lps = [lp for lp in logprobs[start:] if lp is not None]
    return sum(answer_lps), len(answer_lps)


def sample_principles(constitution: Constitution, names: list[str] | None, k: int, rng: random.Random
                      ) -> list[Principle]:
    """k principles (the caller's, else all), without repeats while there are enough."""
    pool = [p for p in constitution.principles if not names or p.name in names]
    picked: list[Principle] = []
    while len(picked) < k:
        picked += rng.sample(pool, min(len(pool), k - len(picked)))
    return picked


async def contrast_judgement(role: RoleClient, principle: Principle, conversation: list[ChatMessage], a: str,
                             b: str, tau: float, length_normalised: bool) -> Judgement:
    personas = principle.personas
    (fa, na), (va, _), (fb, nb), (vb, _) = await asyncio.gather(
        answer_logprob(role, personas.follow, conversation, a), answer_logprob(role, personas.violate, conversation, a),
        answer_logprob(role, personas.follow, conversation, b), answer_logprob(role, personas.violate, conversation, b))
    score_a, score_b = fa - va, fb - vb
    if length_normalised:
        score_a, score_b = score_a / max(na, 1), score_b / max(nb, 1)
    p_a = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, (score_a - score_b) / tau))))
    raw = {"principle": principle.name, "score_a": round(score_a, 4), "score_b": round(score_b, 4),
           "tokens_a": na, "tokens_b": nb, "tau": tau, "length_normalised": length_normalised,
           "logprob_a": {"follow": round(fa, 4), "violate": round(va, 4)},
           "logprob_b": {"follow": round(fb, 4), "violate": round(vb, 4)}}
    return Judgement(principle=principle.name, order="ab", p_a=p_a, p_b=1.0 - p_a, raw=raw)


# --- calibration: τ per (judge model, constitution), fitted by `ucai judge-check --calibrate` ---

def calibration_file(layout: Layout | None = None) -> Path:
    return (layout or Layout.from_settings()).calibration_dir() / "contrast_tau.json"


def calibration_key(model: str, constitution: str, length_normalised: bool) -> str:
    return f"{model}|{constitution}|{'per-token' if length_normalised else 'sum'}"


@lru_cache(maxsize=8)
def _read_calibration(path: Path, mtime: float) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(path.read_text()).items()}


def calibrated_tau(model: str, constitution: str, length_normalised: bool, path: Path | None = None) -> float:
    """The saved τ for this judge, else DEFAULT_TAU."""
    path = path or calibration_file()
    if not path.is_file():
        return DEFAULT_TAU
    return _read_calibration(path, path.stat().st_mtime).get(
        calibration_key(model, constitution, length_normalised), DEFAULT_TAU)


def save_tau(model: str, constitution: str, length_normalised: bool, tau: float, path: Path | None = None) -> Path:
    path = path or calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[calibration_key(model, constitution, length_normalised)] = tau
    path.write_text(json.dumps(saved, indent=2, sort_keys=True))
    return path


def p_chosen(differences: list[float], tau: float) -> float:
    """mean_p σ(d_p / τ): P(chosen ≻ rejected) from the per-principle score differences."""
    return sum(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, d / tau)))) for d in differences) / len(differences)


def log_loss(pairs: list[list[float]], tau: float) -> float:
    return -sum(math.log(max(1e-12, p_chosen(d, tau))) for d in pairs) / len(pairs)


def fit_tau(pairs: list[list[float]], low: float = 0.05, high: float = 200.0, iterations: int = 80) -> float:
    """τ minimising the log loss of labelled pairs (each: the per-principle score differences chosen − rejected);
    golden-section search on log τ."""
    a, b = math.log(low), math.log(high)
    golden = (math.sqrt(5) - 1) / 2
    c, d = b - golden * (b - a), a + golden * (b - a)
    for _ in range(iterations):
        if log_loss(pairs, math.exp(c)) < log_loss(pairs, math.exp(d)):
            b, d = d, c
            c = b - golden * (b - a)
        else:
            a, c = c, d
            d = a + golden * (b - a)
    return math.exp((a + b) / 2)
