"""Job submission and waiting, shared by every queued endpoint (/critique now; /compare, batches next)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from taskiq.kicker import AsyncKicker

from gateway.errors import APIError
from ucai.queue import JobStore, ReclaimingStreamBroker
from ucai.schemas import ErrorDetail, ErrorEnvelope, JobLinks, JobView

FINAL = {"completed", "failed"}

# OpenAPI answers of every queued endpoint besides its 200 result.
QUEUED_RESPONSES = {202: {"model": JobView, "description": "Accepted (wait=false, or the wait timed out)."},
                    **{code: {"model": ErrorEnvelope} for code in (400, 413, 422, 503)}}


class JobService:
    def __init__(self, broker: ReclaimingStreamBroker, store: JobStore):
        self.broker = broker
        self.store = store

    async def submit(self, kind: str, task_name: str, job_id: str, payload: BaseModel) -> bool:
        """Queue a job once. Returns False when the id already existed (an idempotent repeat)."""
        created = await self.store.create(job_id, kind, payload.model_dump_json())
        if not created:
            existing = await self.store.get(job_id) or {}
            if existing.get("enqueued"):
                return False
            # A submit that died between recording and queueing: queue it now.
        try:
            kicker = AsyncKicker(task_name=task_name, broker=self.broker, labels={}).with_task_id(job_id)
            await kicker.kiq(payload.model_dump(mode="json"))
        except Exception:
            if created:
                await self.store.redis.delete(self.store.key(job_id))
            raise
        await self.store.redis.hset(self.store.key(job_id), "enqueued", 1)
        return created

    async def view(self, job_id: str) -> JobView | None:
        raw = await self.store.get(job_id)
        if raw is None:
            return None
        status = raw.get("status", "queued")
        error = ErrorDetail.model_validate_json(raw["error"]) if raw.get("error") else None
        result: dict[str, Any] | None = None
        # The result backend is the truth about completion; the hash may say "completed" a moment early.
        # A value without "ok" is taskiq's record of a run cancelled at shutdown, not an outcome: the job reruns.
        value = None
        if await self.broker.result_backend.is_result_ready(job_id):
            value = (await self.broker.result_backend.get_result(job_id)).return_value
        if isinstance(value, dict) and "ok" in value:
            if value.get("ok"):
                status, result, error = "completed", value["result"], None
            else:
                status, error = "failed", ErrorDetail.model_validate(value.get("error") or {
                    "message": "job failed", "type": "server_error"})
        elif status in FINAL:
            status = "running"
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
            if view is None or view.status in FINAL or view.status == "waiting_for_model":
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
            status = 400 if error and error.code == "model_rejected_request" else 503
            raise APIError(status, error.message if error else "job failed", code=error.code if error else None,
                           param=error.param if error else None, job=job)
        return JSONResponse(view.model_dump(mode="json"), status_code=202)  # still running after timeout_s
