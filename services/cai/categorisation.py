"""Categorise a red-team prompt by principle with the project's own judge (log-probabilities over the labels)."""
from __future__ import annotations

from services.cai.judge import TOP_LOGPROBS, label_distribution
from ucai.prompts import categorise_messages, category_options
from ucai.roles import Roles
from ucai.schemas import CategoriseJob, CategoriseResult, Usage


async def run_categorise(job: CategoriseJob, roles: Roles) -> CategoriseResult:
    constitution, judge = job.constitution, roles.judge
    options = category_options(constitution)
    letters = tuple(letter for letter, _, _ in options)
    usage = Usage()
    completion = await judge.chat(
        categorise_messages(constitution, job.request.conversation()), max_tokens=1, temperature=0.0,
        logprobs=True, top_logprobs=TOP_LOGPROBS, add_generation_prompt=False, continue_final_message=True,
    )
    usage.add(completion.prompt_tokens, completion.completion_tokens)
    top = completion.top_logprobs()
    dist = label_distribution(top, letters)
    raw = {"top_tokens": {t["token"]: round(t["logprob"], 4) for t in top[:8]}}
    if dist is None:  # no label in the top-k: say so rather than guess
        dist = {letter: 1 / len(letters) for letter in letters}
        raw["fallback"] = "no label in the top-k: uniform"
    scores = {name: round(dist[letter], 6) for letter, name, _ in options}
    return CategoriseResult(
        id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
        category=max(scores, key=scores.get), scores=scores, raw=raw, usage=usage,
    )
