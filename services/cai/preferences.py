"""One preference pair: the generator samples two answers (temperature > 0), the judge labels them."""
from __future__ import annotations

import random
import time

from services.cai.judge import Judge, compare_pair
from ucai.prompts import answer_messages, clean_output
from ucai.roles import Roles
from ucai.schemas import PreferenceJob, PreferenceResult, Usage

MIN_SAMPLING_TEMPERATURE = 0.7  # two greedy samples would be the same answer


async def run_preference(job: PreferenceJob, roles: Roles) -> PreferenceResult:
    request, constitution = job.request, job.constitution
    started = time.perf_counter()
    usage = Usage()
    conversation = request.conversation()
    temperature = max(request.temperature or MIN_SAMPLING_TEMPERATURE, 0.1)
    answers = []
    for k in range(2):
        seed = None if request.seed is None else request.seed * 10 + k
        completion = await roles.generator.chat(answer_messages(constitution, conversation),
                                                max_tokens=request.max_tokens, temperature=temperature, seed=seed)
        usage.add(completion.prompt_tokens, completion.completion_tokens)
        answers.append(clean_output(completion.text))
    p_a, judgements, position, note = await compare_pair(
        Judge(roles.judge, usage), constitution, conversation, answers[0], answers[1], method=request.method,
        both_orders=request.both_orders, ensemble=request.ensemble, principles=request.principles,
        rng=random.Random(request.seed), seed=request.seed,
    )
    chosen, rejected, p_chosen = (0, 1, p_a) if p_a >= 0.5 else (1, 0, 1 - p_a)
    return PreferenceResult(
        id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
        chosen=answers[chosen], rejected=answers[rejected], p_chosen=p_chosen, margin=2 * p_chosen - 1,
        principles=sorted({j.principle for j in judgements}), position_consistency=position, note=note,
        usage=usage, timings={"total": round(time.perf_counter() - started, 3)},
    )
