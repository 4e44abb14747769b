"""Judge quality on labelled pairs (prompt, chosen, rejected): accuracy, margin, flips, calibration."""
from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ucai.api_keys import client_headers


class LabelledPair(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    chosen: str
    rejected: str
    constitution: str | None = None


class PairOutcome(BaseModel):
    line: int
    p_chosen: float
    flip_rate: float | None
    seconds: float
    differences: list[float] | None = Field(None, description="contrast: per-principle score chosen - rejected.")


class JudgeReport(BaseModel):
    pairs: int
    accuracy: float = Field(description="Share of pairs where chosen got p > 0.5 (a tie counts half).")
    mean_margin: float = Field(description="Mean of p_chosen - p_rejected.")
    position_flip_rate: float | None = Field(description="Mean share of principles whose verdict flipped with order.")
    brier: float = Field(description="Mean (1 - p_chosen)^2; 0.25 is a coin flip, lower is better.")
    seconds_per_compare: float


def load_pairs(path: Path) -> list[tuple[int, LabelledPair]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            pairs.append((number, LabelledPair.model_validate_json(line)))
    if not pairs:
        raise ValueError(f"{path}: no labelled pairs")
    return pairs


def summarise(outcomes: list[PairOutcome]) -> JudgeReport:
    n = len(outcomes)
    flips = [o.flip_rate for o in outcomes if o.flip_rate is not None]
    return JudgeReport(
        pairs=n,
        accuracy=sum(1.0 if o.p_chosen > 0.5 else 0.5 if o.p_chosen == 0.5 else 0.0 for o in outcomes) / n,
        mean_margin=sum(2 * o.p_chosen - 1 for o in outcomes) / n,
        position_flip_rate=sum(flips) / len(flips) if flips else None,
        brier=sum((1 - o.p_chosen) ** 2 for o in outcomes) / n,
        seconds_per_compare=sum(o.seconds for o in outcomes) / n,
    )


async def run_judge_check(url: str, pairs: list[tuple[int, LabelledPair]], options: dict, seed: int,
                          concurrency: int = 4) -> list[PairOutcome]:
    """Each pair through POST /compare; chosen is put first or second at random (seeded)."""
    rng = random.Random(seed)
    slots = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, number: int, pair: LabelledPair, chosen_first: bool) -> PairOutcome:
        responses = [pair.chosen, pair.rejected] if chosen_first else [pair.rejected, pair.chosen]
        body = {"prompt": pair.prompt, "responses": responses, "seed": seed, **options}
        if pair.constitution and "constitution" not in options:
            body["constitution"] = pair.constitution
        async with slots:
            started = time.perf_counter()
            response = await client.post("/compare", json=body)
            seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"line {number}: HTTP {response.status_code}: {response.text[:300]}")
        data = response.json()
        scores = [j["raw"] for j in data["judgements"] if "score_a" in j["raw"]]
        sign = 1 if chosen_first else -1
        return PairOutcome(line=number, p_chosen=data["probabilities"][0 if chosen_first else 1],
                           flip_rate=data["position_consistency"].get("flip_rate"), seconds=seconds,
                           differences=[sign * (r["score_a"] - r["score_b"]) for r in scores] or None)

    async with httpx.AsyncClient(base_url=url, timeout=None, headers=client_headers(url)) as client:
        return list(await asyncio.gather(*(one(client, n, p, rng.random() < 0.5) for n, p in pairs)))


class Calibration(BaseModel):
    tau: float = Field(description="Fitted temperature of the contrastive judge.")
    pairs: int
    brier_before: float
    brier_after: float
    log_loss_before: float
    log_loss_after: float


def calibrate(outcomes: list[PairOutcome], tau_before: float, inverted: bool = False) -> Calibration:
    """Fit the contrastive judge's τ on labelled pairs (log loss); Brier and log loss at the old and the new τ.
    `inverted`: the judge's constitution is the inverse of the one the pairs are labelled for, so its right answer
    is `rejected`."""
    from services.cai.contrastive_judge import fit_tau, log_loss, p_chosen

    sign = -1.0 if inverted else 1.0
    pairs = [[sign * d for d in o.differences] for o in outcomes if o.differences]
    if not pairs:
        raise ValueError("calibration needs method 'contrast' results (per-principle scores)")
    tau = fit_tau(pairs)

    def brier(t: float) -> float:
        return sum((1 - p_chosen(d, t)) ** 2 for d in pairs) / len(pairs)

    return Calibration(tau=round(tau, 4), pairs=len(pairs), brier_before=round(brier(tau_before), 4),
                       brier_after=round(brier(tau), 4), log_loss_before=round(log_loss(pairs, tau_before), 4),
                       log_loss_after=round(log_loss(pairs, tau), 4))


def inverts(url: str, constitution: str, labelled_for: str | None) -> bool:
    """Whether `constitution` (on the gateway) is the inverse of the one the pairs are labelled for."""
    if not labelled_for or constitution == labelled_for:
        return False
    response = httpx.get(f"{url.rstrip('/')}/constitutions/{constitution}", timeout=30, headers=client_headers(url))
    return response.status_code == 200 and response.json().get("inverse_of") == labelled_for
