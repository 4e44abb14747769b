"""POST /critique: a critique → revision trace under a constitution, through the queue."""
from __future__ import annotations

from fastapi import APIRouter

from gateway.access import CallerDep
from gateway.dependencies import IdempotencyKey, JobsDep
from gateway.jobs import QUEUED_RESPONSES
from ucai.schemas import CritiqueRequest, CritiqueResult

router = APIRouter(tags=["critique"])


@router.post("/critique", response_model=CritiqueResult, responses=QUEUED_RESPONSES)
async def critique(body: CritiqueRequest, jobs: JobsDep, caller: CallerDep, idempotency_key: IdempotencyKey = None):
    return await jobs.run("critique", body, idempotency_key, caller)
