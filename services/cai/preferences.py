"""One preference pair, labelled: the RLAIF preference step.

pairs="sample": the generator samples two answers (temperature > 0). pairs="contrast" (RLCD, Yang et al. 2023): one
answer under a sampled principle's follow persona, one under its violate persona. The judge's `method` labels the
pair, or with label="construction" the follow-persona answer is chosen, as in RLCD.
"""
from __future__ import annotations

import random
import time

from services.cai.contrastive_judge import sample_principles
from services.cai.judge import Judge, compare_pair, judge_method
from ucai.prompts import answer_messages, clean_output, persona_messages
from ucai.roles import Roles
from ucai.schemas import PositionConsistency, PreferenceJob, PreferenceResult, Usage

MIN_SAMPLING_TEMPERATURE = 0.7  # two greedy samples would be the same answer


async def run_preference(job: PreferenceJob, roles: Roles) -> PreferenceResult:
    request, constitution = job.request, job.constitution
    started = time.perf_counter()
    usage = Usage()
    rng = random.Random(request.seed)
    conversation = request.conversation()
    temperature = max(request.temperature or MIN_SAMPLING_TEMPERATURE, 0.1)
    if request.pairs == "contrast":
        principle = sample_principles(constitution, request.principles, 1, rng)[0]
        prompts = [persona_messages(principle.personas.follow, conversation),
                   persona_messages(principle.personas.violate, conversation)]
        produced = [f"follow:{principle.name}", f"violate:{principle.name}"]
    else:
        prompts = [answer_messages(constitution, conversation)] * 2
        produced = ["sample", "sample"]
    answers = []
    for k, messages in enumerate(prompts):
        seed = None if request.seed is None else request.seed * 10 + k
        completion = await roles.generator.chat(messages, max_tokens=request.max_tokens, temperature=temperature,
                                                seed=seed)
        usage.add(completion.prompt_tokens, completion.completion_tokens)
        answers.append(clean_output(completion.text))
    if request.label == "construction":  # RLCD: the follow-persona answer is chosen by construction
        p_a, principles, position, note = 1.0, [principle.name], PositionConsistency(), "labelled by construction"
    else:
        p_a, judgements, position, note = await compare_pair(
            Judge(roles.judge, usage), constitution, conversation, answers[0], answers[1], request, rng)
        principles = sorted({j.principle for j in judgements})
    chosen, rejected, p_chosen = (0, 1, p_a) if p_a >= 0.5 else (1, 0, 1 - p_a)
    return PreferenceResult(
        id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
        chosen=answers[chosen], rejected=answers[rejected], p_chosen=p_chosen, margin=2 * p_chosen - 1,
        principles=principles, position_consistency=position, note=note, pairs=request.pairs, label=request.label,
        method=judge_method(request, roles.judge),
        produced_by={"chosen": produced[chosen], "rejected": produced[rejected]},
        usage=usage, timings={"total": round(time.perf_counter() - started, 3)},
    )
