"""Job submission and waiting, shared by every queued endpoint (/critique now; /compare, batches next)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel
from taskiq.kicker import AsyncKicker

from ucai.queue import JobStore, ReclaimingStreamBroker
from ucai.schemas import ErrorDetail, JobLinks, JobView

FINAL = {"completed", "failed"}


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
        if await self.broker.result_backend.is_result_ready(job_id):
            value = (await self.broker.result_backend.get_result(job_id)).return_value or {}
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
