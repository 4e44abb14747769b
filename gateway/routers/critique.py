"""POST /critique: a critique → revision trace under a constitution, through the queue."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from gateway.dependencies import ConstitutionsDep, JobsDep, RolesDep, SettingsDep
from gateway.jobs import QUEUED_RESPONSES
from gateway.validation import check_context, critique_probe, resolve_constitution
from ucai.queue import TASK_CRITIQUE, job_id_for
from ucai.schemas import CritiqueJob, CritiqueRequest, CritiqueResult

router = APIRouter(tags=["critique"])



@router.post(
    "/critique",
    response_model=CritiqueResult,
    responses=QUEUED_RESPONSES,
)
async def critique(
    body: CritiqueRequest,
    jobs: JobsDep,
    constitutions: ConstitutionsDep,
    roles: RolesDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    constitution = resolve_constitution(constitutions, body.constitution, body.principles)
    await check_context(roles.generator, critique_probe(body, constitution), body.max_tokens or
                        settings.generator.max_tokens, 3, body, settings)
    job_id = job_id_for("critique", body.idempotency_key or idempotency_key)
    await jobs.submit("critique", TASK_CRITIQUE, job_id, CritiqueJob(job_id=job_id, request=body,
                                                                     constitution=constitution))
    return await jobs.answer(job_id, body.wait, min(body.timeout_s or settings.max_wait_s, settings.max_wait_s),
                             settings.role_retry_s)
