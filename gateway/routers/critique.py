"""POST /critique: a critique → revision trace under a constitution, through the queue."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from gateway.dependencies import ConstitutionsDep, JobsDep, RolesDep, SettingsDep
from gateway.errors import APIError
from gateway.serving_critique import check_context, resolve_constitution
from ucai.queue import TASK_CRITIQUE, job_id_for
from ucai.schemas import CritiqueJob, CritiqueRequest, CritiqueResult, ErrorEnvelope, JobView

router = APIRouter(tags=["critique"])

ERRORS = {code: {"model": ErrorEnvelope} for code in (400, 413, 422, 503)}


@router.post(
    "/critique",
    response_model=CritiqueResult,
    responses={202: {"model": JobView, "description": "Accepted (wait=false, or the wait timed out)."}, **ERRORS},
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
    await check_context(body, constitution, roles, settings)
    job_id = job_id_for("critique", body.idempotency_key or idempotency_key)
    await jobs.submit("critique", TASK_CRITIQUE, job_id, CritiqueJob(job_id=job_id, request=body,
                                                                     constitution=constitution))
    if not body.wait:
        view = await jobs.view(job_id)
        return JSONResponse(view.model_dump(mode="json"), status_code=202)
    view = await jobs.wait(job_id, min(body.timeout_s or settings.max_wait_s, settings.max_wait_s))
    if view.status == "completed":
        return view.result
    job = view.model_dump(mode="json", include={"id", "status", "links"})
    if view.status == "waiting_for_model":
        raise APIError(503, f"a model role is unavailable; job {job_id} stays queued and will run when it is back: "
                       f"{view.error.message if view.error else ''}", code="model_unavailable",
                       param=view.error.param if view.error else None, job=job,
                       headers={"Retry-After": str(int(settings.role_retry_s))})
    if view.status == "failed":
        error = view.error
        status = 400 if error and error.code == "model_rejected_request" else 503
        raise APIError(status, error.message if error else "job failed", code=error.code if error else None,
                       param=error.param if error else None, job=job)
    return JSONResponse(view.model_dump(mode="json"), status_code=202)  # still running after timeout_s
