"""Every queued endpoint in one sequence: resolve the constitution → check the context → submit once → answer."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.access import Caller
from gateway.errors import APIError
from gateway.validation import check_context, resolve_constitution
from services.job_kinds import KINDS, JobKind
from ucai.constitutions import Constitution
from ucai.queue import FINAL, JobStatus, JobStore, ReclaimingStreamBroker, id_secret, job_id_for
from ucai.roles import Roles
from ucai.schemas import ConversationInput, ErrorDetail, ErrorEnvelope, JobLinks, JobView
from ucai.settings import Settings

# A job the model refused answers 4xx: the request itself cannot be served (e.g. `method: contrast` on an engine
# without prompt log-probabilities); anything else that failed a job is the service's (503).
REQUEST_ERROR_STATUS = {"model_rejected_request": 400, "method_unsupported": 422}
# OpenAPI answers of every queued endpoint besides its 200 result.
QUEUED_RESPONSES = {202: {"model": JobView, "description": "Accepted (wait=false, or the wait timed out)."},
                    **{code: {"model": ErrorEnvelope} for code in (400, 413, 422, 503)}}


class JobService:
    def __init__(self, broker: ReclaimingStreamBroker, store: JobStore, constitutions: dict[str, Constitution],
                 roles: Roles, settings: Settings):
        self.broker = broker
        self.store = store
        self.constitutions = constitutions
        self.roles = roles
        self.settings = settings
        self._id_secret: str | None = None

    async def id_secret(self) -> str:
        """The server's secret in idempotent job ids (read from Redis on first use, not at start: the gateway may
        start before Redis)."""
        if self._id_secret is None:
            self._id_secret = await id_secret(self.store.redis)
        return self._id_secret

    async def run(self, kind_name: str, body: ConversationInput, idempotency_key: str | None,
                  caller: Caller | None = None) -> Any:
        """What a queued endpoint does with a valid body of its kind; the answer is its result, 202 or an error.
        `caller` (the API key): its scope must allow the constitution; it owns the job (None: internal, unchecked)."""
        kind = KINDS[kind_name]
        constitution = resolve_constitution(self.constitutions, body.constitution, body.principles)
        if caller is not None:
            last_user = next((m.content for m in reversed(body.conversation()) if m.role == "user"), None)
            await caller.use_constitution(constitution, prompt=last_user)
        if kind.probe is not None:
            probe = kind.probe(body, constitution, self.settings)
            await check_context(self.roles[probe.role], probe, body, self.settings)
        owner = caller.owner if caller is not None else ""
        job_id = job_id_for(kind.name, body.idempotency_key or idempotency_key, owner, await self.id_secret())
        await self.submit(kind, job_id, kind.job(job_id=job_id, request=body, constitution=constitution),
                          owner=owner)
        timeout_s = min(body.timeout_s or self.settings.max_wait_s, self.settings.max_wait_s)
        return await self.answer(job_id, body.wait, timeout_s, self.settings.role_retry_s)

    async def submit(self, kind: JobKind, job_id: str, payload: BaseModel, label: str | None = None,
                     owner: str = "") -> bool:
        """Queue a job once: its record and its stream entry are written in one step, so concurrent submits of one
        id queue it once. Returns False when the id already existed (an idempotent repeat). `label` is the kind
        shown in GET /jobs (batch records: `batch-<stage>`); `owner` the API key id that may read it."""
        message = self.broker.message_for(kind.task_name, job_id, payload.model_dump(mode="json"))
        return await self.store.submit(job_id, label or kind.name, payload.model_dump_json(), owner,
                                       self.broker.queue_name, message)

    async def view(self, job_id: str, caller: Caller | None = None) -> JobView | None:
        """The job as GET /jobs shows it; None when unknown — or not the caller's (not 403: that would say it
        exists)."""
        raw = await self.store.get(job_id)
        if raw is None or (caller is not None and not caller.owns(raw.get("owner"))):
            return None
        status = JobStatus(raw.get("status", JobStatus.QUEUED))
        error = ErrorDetail.model_validate_json(raw["error"]) if raw.get("error") else None
        result: dict[str, Any] | None = None
        # The outcome is the truth about completion (written in one step with the final status).
        outcome = await self.store.outcome(job_id, raw)
        if outcome is not None:
            status = JobStatus.COMPLETED if outcome.ok else JobStatus.FAILED
            result = outcome.result
            error = None if outcome.ok else outcome.error or ErrorDetail(message="job failed", type="server_error")
        elif status in FINAL:
            status = JobStatus.RUNNING
        return JobView(
            id=job_id, kind=raw.get("kind", "unknown"), status=status,
            created_at=float(raw.get("created_at") or 0) or None, updated_at=float(raw.get("updated_at") or 0) or None,
            attempts=int(raw.get("attempts") or 0), error=error, result=result,
            links=JobLinks(self=f"/jobs/{job_id}"),
        )

    async def wait(self, job_id: str, timeout_s: float) -> JobView | None:
        """Poll until the job is final, is waiting for a model that is down, or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            view = await self.view(job_id)
            if view is None or view.status in FINAL or view.status == JobStatus.WAITING_FOR_MODEL:
                return view
            if time.monotonic() >= deadline:
                return view
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 1.5)

    async def answer(self, job_id: str, wait: bool, timeout_s: float, retry_after_s: float) -> Any:
        """What a queued endpoint answers: the result (200), the job (202), or an error envelope."""
        if not wait:
            view = await self.view(job_id)
            return JSONResponse(view.model_dump(mode="json"), status_code=202)
        view = await self.wait(job_id, timeout_s)
        if view.status == "completed":
            return view.result
        job = view.model_dump(mode="json", include={"id", "status", "links"})
        error = view.error
        if view.status == "waiting_for_model":
            raise APIError(503, f"a model role is unavailable; job {job_id} stays queued and will run when it is "
                           f"back: {error.message if error else ''}", code="model_unavailable",
                           param=error.param if error else None, job=job,
                           headers={"Retry-After": str(max(1, int(retry_after_s)))})
        if view.status == "failed":
            status = REQUEST_ERROR_STATUS.get(error.code if error else None, 503)
            raise APIError(status, error.message if error else "job failed", code=error.code if error else None,
                           param=error.param if error else None, job=job)
        return JSONResponse(view.model_dump(mode="json"), status_code=202)  # still running after timeout_s
