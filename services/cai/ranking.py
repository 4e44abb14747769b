"""Rank k answers: the pairwise judge over all pairs (or a seeded budget), then Bradley-Terry strengths."""
from __future__ import annotations

import asyncio
import itertools
import random
import time

from services.cai.judge import Judge, compare_pair, judge_method, judge_probe
from ucai.constitutions import Constitution
from ucai.prompts import ContextProbe
from ucai.queue.bounds import LimitExceeded
from ucai.roles import Roles
from ucai.schemas import PairResult, RankedResponse, RankJob, RankRequest, RankResult, Usage
from ucai.settings import Settings

PRIOR_WINS = 0.1  # a pseudo-count both ways keeps strengths finite for an answer that never (or always) wins


def bradley_terry(k: int, pairs: list[PairResult], iterations: int = 500) -> list[float]:
    """MM algorithm (Hunter 2004) on soft wins; strengths normalised to sum to 1."""
    wins = [PRIOR_WINS * (k - 1)] * k
    games: dict[tuple[int, int], float] = {}
    for pair in pairs:
        wins[pair.a] += pair.p_a
        wins[pair.b] += 1 - pair.p_a
        games[(pair.a, pair.b)] = games.get((pair.a, pair.b), 0) + 1
    strength = [1.0 / k] * k
    for _ in range(iterations):
        updated = []
        for i in range(k):
            denominator = 0.0
            for j in range(k):
                if i == j:
                    continue
                n = games.get((i, j), 0) + games.get((j, i), 0) + 2 * PRIOR_WINS
                denominator += n / (strength[i] + strength[j])
            updated.append(wins[i] / denominator)
        total = sum(updated)
        strength = [s / total for s in updated]
    return strength


def rank_limits(request: RankRequest, settings: Settings) -> None:
    """One /rank request fans out to pairs × ensemble judgements (each one or more judge calls): bounded by the
    settings, so a single request cannot occupy the judge for everyone else. Over a bound: 422 before queueing."""
    k = len(request.responses)
    if k > settings.rank_max_candidates:
        raise LimitExceeded(f"responses: {k} answers; at most {settings.rank_max_candidates} per request "
                            "(UCAI_RANK_MAX_CANDIDATES)", param="responses", code="too_many_candidates")
    pairs = k * (k - 1) // 2
    if request.max_pairs:
        pairs = min(pairs, request.max_pairs)
    judgements = pairs * request.ensemble
    if judgements > settings.rank_max_judgements:
        most = max(1, settings.rank_max_judgements // request.ensemble)
        raise LimitExceeded(f"max_pairs: {pairs} pairs × ensemble {request.ensemble} = {judgements} judgements; at "
                            f"most {settings.rank_max_judgements} per request (UCAI_RANK_MAX_JUDGEMENTS): set "
                            f"max_pairs ≤ {most} or a smaller ensemble", param="max_pairs", code="rank_fan_out")


def rank_probe(request: RankRequest, constitution: Constitution, settings: Settings) -> ContextProbe:
    """The judge prompt with the two longest answers."""
    return judge_probe(request, constitution, *sorted(request.responses, key=len)[-2:])


async def run_rank(job: RankJob, roles: Roles) -> RankResult:
    request, constitution = job.request, job.constitution
    started = time.perf_counter()
    rng = random.Random(request.seed)
    usage = Usage()
    judge = Judge(roles.judge, usage)
    all_pairs = list(itertools.combinations(range(len(request.responses)), 2))
    if request.max_pairs and request.max_pairs < len(all_pairs):
        all_pairs = sorted(rng.sample(all_pairs, request.max_pairs))
    conversation = request.conversation()
    outcomes = await asyncio.gather(*(
        compare_pair(judge, constitution, conversation, request.responses[a], request.responses[b], request,
                     random.Random(rng.random()))
        for a, b in all_pairs
    ))
    pairs = [PairResult(a=a, b=b, p_a=round(outcome[0], 6))
             for (a, b), outcome in zip(all_pairs, outcomes, strict=True)]
    strength = bradley_terry(len(request.responses), pairs)
    soft_wins = [0.0] * len(request.responses)
    for pair in pairs:
        soft_wins[pair.a] += pair.p_a
        soft_wins[pair.b] += 1 - pair.p_a
    order = sorted(range(len(strength)), key=lambda i: (-strength[i], i))
    ranking = [RankedResponse(index=i, rank=r, score=round(strength[i], 6), wins=round(soft_wins[i], 6))
               for r, i in enumerate(order, start=1)]
    return RankResult(
        id=job.job_id, constitution=constitution.name, constitution_hash=constitution.content_hash,
        method=judge_method(request, roles.judge), ranking=ranking, pairs=pairs, usage=usage,
        timings={"total": round(time.perf_counter() - started, 3)},
    )
