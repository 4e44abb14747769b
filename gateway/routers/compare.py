"""POST /compare (which of two answers better follows a constitution) and POST /rank (order k answers)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from gateway.dependencies import ConstitutionsDep, JobsDep, RolesDep, SettingsDep
from gateway.jobs import QUEUED_RESPONSES
from gateway.validation import check_context, judge_probe, resolve_constitution
from ucai.queue import TASK_COMPARE, TASK_RANK, job_id_for
from ucai.schemas import (
    CompareJob,
    CompareRequest,
    CompareResult,
    RankJob,
    RankRequest,
    RankResult,
)

router = APIRouter(tags=["judge"])

COT_TOKENS = 256


@router.post("/compare", response_model=CompareResult, responses=QUEUED_RESPONSES)
async def compare(
    body: CompareRequest, jobs: JobsDep, constitutions: ConstitutionsDep, roles: RolesDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    constitution = resolve_constitution(constitutions, body.constitution, body.principles)
    await check_context(roles.judge, judge_probe(body, constitution, *body.responses), COT_TOKENS, 1, body, settings)
    job_id = job_id_for("compare", body.idempotency_key or idempotency_key)
    await jobs.submit("compare", TASK_COMPARE, job_id, CompareJob(job_id=job_id, request=body,
                                                                  constitution=constitution))
    return await jobs.answer(job_id, body.wait, min(body.timeout_s or settings.max_wait_s, settings.max_wait_s),
                             settings.role_retry_s)


@router.post("/rank", response_model=RankResult, responses=QUEUED_RESPONSES)
async def rank(
    body: RankRequest, jobs: JobsDep, constitutions: ConstitutionsDep, roles: RolesDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    constitution = resolve_constitution(constitutions, body.constitution, body.principles)
    longest = sorted(body.responses, key=len)[-2:]
    await check_context(roles.judge, judge_probe(body, constitution, *longest), COT_TOKENS, 1, body, settings)
    job_id = job_id_for("rank", body.idempotency_key or idempotency_key)
    await jobs.submit("rank", TASK_RANK, job_id, RankJob(job_id=job_id, request=body, constitution=constitution))
    return await jobs.answer(job_id, body.wait, min(body.timeout_s or settings.max_wait_s, settings.max_wait_s),
                             settings.role_retry_s)
