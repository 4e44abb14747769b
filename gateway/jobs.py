"""Every queued endpoint in one sequence: resolve the constitution → check the context → submit once → answer."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.responses import JSONResponse

from gateway.access import Caller
from gateway.errors import APIError
from gateway.validation import check_context, resolve_constitution
from services.job_kinds import KINDS, JobKind
from ucai.constitutions import Constitution
from ucai.queue import FINAL, JobStatus, JobStore, ReclaimingStreamBroker, id_secret, job_id_for
from ucai.queue.bounds import LimitExceeded, queue_depth
from ucai.queue.constitutions import ConstitutionStore
from ucai.roles import Roles
from ucai.schemas import ConversationInput, ErrorDetail, ErrorEnvelope, JobLinks, JobMessage, JobView, QueuedJob
from ucai.settings import Settings

# A job the model refused answers 4xx: the request itself cannot be served (e.g. `method: contrast` on an engine
# without prompt log-probabilities); anything else that failed a job is the service's (503).
REQUEST_ERROR_STATUS = {"model_rejected_request": 400, "method_unsupported": 422}
# OpenAPI answers of every queued endpoint besides its 200 result.
QUEUED_RESPONSES = {202: {"model": JobView, "description": "Accepted (wait=false, or the wait timed out)."},
                    **{code: {"model": ErrorEnvelope} for code in (400, 413, 422, 429, 503)}}


class JobService:
    def __init__(self, broker: ReclaimingStreamBroker, store: JobStore, constitutions: dict[str, Constitution],
                 roles: Roles, settings: Settings):
        self.broker = broker
        self.store = store
        self.constitutions = constitutions
        self.roles = roles
        self.settings = settings
        self.stored_constitutions = ConstitutionStore(store.redis, settings.job_ttl_s)
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
        if kind.limits is not None:
            try:
                kind.limits(body, self.settings)
            except LimitExceeded as exc:
                raise limit_error(exc) from exc
        if kind.probe is not None:
            probe = kind.probe(body, constitution, self.settings)
            await check_context(self.roles[probe.role], probe, body, self.settings)
        owner = caller.owner if caller is not None else ""
        job_id = job_id_for(kind.name, body.idempotency_key or idempotency_key, owner, await self.id_secret())
        if not await self.store.redis.exists(self.store.key(job_id)):  # an idempotent repeat queues nothing
            await self.check_queue_room(1)
        await self.submit(kind, job_id, kind.job(job_id=job_id, request=body, constitution=constitution),
                          owner=owner)
        timeout_s = min(body.timeout_s or self.settings.max_wait_s, self.settings.max_wait_s)
        return await self.answer(job_id, body.wait, timeout_s, self.settings.role_retry_s)

    async def check_queue_room(self, jobs: int) -> None:
        """Refuse (429 `queue_full`, Retry-After) work that would take the stream over `max_queue_depth` unfinished
        jobs — checked before anything of it is written, so a refused batch leaves nothing behind. Concurrent
        admissions may together overshoot the bound by their own size."""
        depth = await queue_depth(self.store.redis, self.broker.queue_name, self.broker.consumer_group_name)
        if depth + jobs > self.settings.max_queue_depth:
            retry = self.settings.queue_full_retry_after_s
            raise limit_error(LimitExceeded(
                f"the job queue is full: {depth} jobs waiting or running, {jobs} more would exceed "
                f"{self.settings.max_queue_depth} (UCAI_MAX_QUEUE_DEPTH); retry after {retry} s",
                code="queue_full", status=429, retry_after_s=retry))

    def message(self, kind: JobKind, job_id: str, message: JobMessage) -> bytes:
        """The stream entry's data of a job."""
        return self.broker.message_for(kind.task_name, job_id, message.model_dump(mode="json"))

    async def submit(self, kind: JobKind, job_id: str, payload: QueuedJob, label: str | None = None,
                     owner: str = "") -> bool:
        """Queue a job once: its record and its stream entry are written in one step, so concurrent submits of one
        id queue it once. Returns False when the id already existed (an idempotent repeat). `label` is the kind
        shown in GET /jobs (batch records: `batch-<stage>`); `owner` the API key id that may read it. The entry names
        the constitution by hash; it is stored (once) before the job is queued."""
        await self.stored_constitutions.put(payload.constitution)
        message = self.message(kind, job_id, kind.message(payload))
        return await self.store.submit(job_id, label or kind.name, "", owner, self.broker.queue_name, message)

    async def submit_many(self, kind: JobKind, constitution: Constitution, jobs: list[tuple[str, bytes]],
                          label: str, owner: str = "") -> int:
        """Queue many jobs (id, `message` data) under one constitution, pipelined (a batch); each once per id.
        Returns how many were new."""
        await self.stored_constitutions.put(constitution)
        return await self.store.submit_many(jobs, label, owner, self.broker.queue_name)

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
        delay = 0.005  # short jobs (and a fast model) are answered within milliseconds, not at the first 50 ms poll
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


def limit_error(exc: LimitExceeded) -> APIError:
    """The envelope of a request over a bound (422), or of a full queue (429 with Retry-After)."""
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    return APIError(exc.status, exc.message, param=exc.param, code=exc.code, headers=headers)
