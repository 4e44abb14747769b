"""POST /compare (which of two answers better follows a constitution) and POST /rank (order k answers)."""
from __future__ import annotations

from fastapi import APIRouter

from gateway.access import CallerDep
from gateway.dependencies import IdempotencyKey, JobsDep
from gateway.jobs import QUEUED_RESPONSES
from ucai.schemas import CompareRequest, CompareResult, RankRequest, RankResult

router = APIRouter(tags=["judge"])


@router.post("/compare", response_model=CompareResult, responses=QUEUED_RESPONSES)
async def compare(body: CompareRequest, jobs: JobsDep, caller: CallerDep, idempotency_key: IdempotencyKey = None):
    return await jobs.run("compare", body, idempotency_key, caller)


@router.post("/rank", response_model=RankResult, responses=QUEUED_RESPONSES)
async def rank(body: RankRequest, jobs: JobsDep, caller: CallerDep, idempotency_key: IdempotencyKey = None):
    return await jobs.run("rank", body, idempotency_key, caller)
