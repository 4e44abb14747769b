"""The critique → revision loop (the supervised stage of Constitutional AI).

Round 0: the generator answers. Each round: a principle (seeded sample, or the caller's
list cycled), the critic critiques the latest answer with one of that principle's critique
requests, the generator revises with the paired revision request.
"""
from __future__ import annotations

import random
import time

from ucai.constitutions import Constitution, CritiqueRevisionPair, Principle
from ucai.prompts import ContextProbe, answer_messages, clean_output, critique_messages, revision_messages
from ucai.roles import RoleClient, Roles
from ucai.schemas import CritiqueJob, CritiqueRequest, CritiqueResult, RevisionStep, Usage
from ucai.settings import Settings

EMPTY_OUTPUT_RETRIES = 2
# The longest prompt (the revision request) holds the answer and the critique, and asks for the revision.
GENERATED_PARTS = 3


def schedule_principles(
    constitution: Constitution, names: list[str] | None, rounds: int, rng: random.Random
) -> list[tuple[Principle, CritiqueRevisionPair]]:
    """A new principle each round: the caller's list in order, else shuffled without repeats until all were used."""
    if names:
        chosen = [constitution.principle(names[i % len(names)]) for i in range(rounds)]
    else:
        chosen = []
        while len(chosen) < rounds:
            cycle = list(constitution.principles)
            rng.shuffle(cycle)
            if chosen and len(cycle) > 1 and cycle[0].name == chosen[-1].name:
                cycle[0], cycle[-1] = cycle[-1], cycle[0]  # no repeat across the cycle boundary
            chosen += cycle
        chosen = chosen[:rounds]
    return [(p, rng.choice(p.pairs)) for p in chosen]


def critique_probe(request: CritiqueRequest, constitution: Constitution, settings: Settings) -> ContextProbe:
    """The revision prompt (few-shot block + conversation + critique and revision requests) with the longest pair,
    less the model-written parts, which GENERATED_PARTS x max_tokens stand for."""
    pair = max((p for pr in constitution.principles for p in pr.pairs), key=lambda p: len(p.critique + p.revision))
    max_tokens = request.max_tokens or settings.generator.max_tokens
    return ContextProbe("generator", revision_messages(constitution, request.conversation(), "", pair, ""),
                        GENERATED_PARTS * max_tokens)


class _Caller:
    """Calls a role, cleans the text, retries empty outputs, and keeps usage."""

    def __init__(self, job: CritiqueJob, usage: Usage):
        self.request = job.request
        self.usage = usage
        self.calls = 0

    async def __call__(self, role: RoleClient, messages: list[dict[str, str]]) -> str:
        text = ""
        for retry in range(EMPTY_OUTPUT_RETRIES + 1):
            self.calls += 1
            seed = None if self.request.seed is None else self.request.seed * 1000 + self.calls
            temperature = self.request.temperature
            if retry and (temperature is None or temperature < 0.7):
                temperature = 0.7  # an empty answer at low temperature repeats itself
            completion = await role.chat(
                messages, max_tokens=self.request.max_tokens, temperature=temperature, seed=seed
            )
            self.usage.add(completion.prompt_tokens, completion.completion_tokens)
            text = clean_output(completion.text)
            if text:
                break
        return text


async def run_critique_revision(job: CritiqueJob, roles: Roles) -> CritiqueResult:
    request, constitution = job.request, job.constitution
    rng = random.Random(request.seed)
    conversation = request.conversation()
    usage = Usage()
    call = _Caller(job, usage)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    answer = await call(roles.generator, answer_messages(constitution, conversation))
    initial = answer
    timings["initial"] = round(time.perf_counter() - started, 3)

    steps: list[RevisionStep] = []
    for number, (principle, pair) in enumerate(
        schedule_principles(constitution, request.principles, request.rounds, rng), start=1
    ):
        round_started = time.perf_counter()
        critique = await call(roles.critic, critique_messages(constitution, conversation, answer, pair))
        revision = await call(
            roles.generator, revision_messages(constitution, conversation, answer, pair, critique)
        )
        steps.append(
            RevisionStep(
                round=number, principle=principle.name, critique_request=pair.critique, critique=critique,
                revision_request=pair.revision, revision=revision or answer,
            )
        )
        answer = revision or answer
        timings[f"round_{number}"] = round(time.perf_counter() - round_started, 3)
    timings["total"] = round(time.perf_counter() - started, 3)

    return CritiqueResult(
        id=job.job_id,
        constitution=constitution.name,
        constitution_hash=constitution.content_hash,
        initial_response=initial,
        revisions=steps,
        final_response=answer,
        usage=usage,
        timings=timings,
        models={name: roles[name].model for name in ("generator", "critic")},
    )
