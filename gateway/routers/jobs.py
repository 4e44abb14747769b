"""GET /jobs/{id}: status and result of any queued job."""
from __future__ import annotations

from fastapi import APIRouter

from gateway.access import CallerDep
from gateway.dependencies import JobsDep
from gateway.errors import APIError
from ucai.schemas import ErrorEnvelope, JobView

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobView, responses={404: {"model": ErrorEnvelope}})
async def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> JobView:
    view = await jobs.view(job_id, caller)  # another key's job: 404, as if it did not exist
    if view is None:
        raise APIError(404, f"no job {job_id!r} (unknown or expired)", param="job_id", code="job_not_found")
    return view
