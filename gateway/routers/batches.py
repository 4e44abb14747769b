"""Batches: POST /batches fans out one job per record; GET status, GET results (JSONL), DELETE cancels."""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from gateway.access import Caller, CallerDep
from gateway.dependencies import BatchesDep, ConstitutionsDep, IdempotencyKey, JobsDep, LayoutDep
from gateway.errors import APIError
from gateway.validation import resolve_constitution
from services.job_kinds import BATCH_STAGES, KINDS
from ucai.layout import Layout
from ucai.queue import BatchStore, job_id_for
from ucai.schemas import BatchRecord, BatchRef, BatchRequest, BatchView, ErrorEnvelope

router = APIRouter(tags=["batches"])

RESULT_CHUNK = 500


def _dataset_records(layout: Layout, name: str) -> list[BatchRecord]:
    try:
        path = layout.imported(name)
    except ValueError:
        path = None
    if path is None or not path.is_file():
        raise APIError(404, f"no imported dataset {name!r} (import it with `ucai data import`)",
                       param="input.dataset", code="dataset_not_found")
    return [BatchRecord.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


async def _view(batches: BatchStore, batch_id: str, caller: Caller) -> BatchView:
    meta = await batches.meta(batch_id)
    if meta is None or not caller.owns(meta.get("owner")):  # another key's batch: as if it did not exist
        raise APIError(404, f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
    done, failed = await batches.counts(batch_id)
    total, created = int(meta["total"]), float(meta["created_at"])
    elapsed = float(meta.get("finished_at") or time.time()) - created
    rate = done / elapsed * 60 if elapsed > 0 and done else None
    remaining = total - done - failed
    return BatchView(
        id=batch_id, stage=meta["stage"], constitution=meta["constitution"], status=meta["status"], total=total,
        done=done, failed=failed, rate_per_min=round(rate, 3) if rate else None,
        eta_s=round(remaining / rate * 60, 1) if rate and meta["status"] == "running" else None, created_at=created,
        links={"self": f"/batches/{batch_id}", "results": f"/batches/{batch_id}/results"},
    )


@router.post("/batches", status_code=202, response_model=BatchView,
             responses={code: {"model": ErrorEnvelope} for code in (404, 413, 422)})
async def create_batch(
    body: BatchRequest, jobs: JobsDep, batches: BatchesDep, constitutions: ConstitutionsDep, layout: LayoutDep,
    caller: CallerDep, idempotency_key: IdempotencyKey = None,
):
    if body.stage not in BATCH_STAGES:
        raise APIError(422, f"stage: unknown stage {body.stage!r}; batches run {', '.join(BATCH_STAGES)}",
                       param="stage", code="unknown_stage")
    if (body.input.records is None) == (body.input.dataset is None):
        raise APIError(422, "give exactly one of input.records or input.dataset", param="input")
    records = body.input.records or _dataset_records(layout, body.input.dataset or "")
    seen: set[str] = set()
    for index, record in enumerate(records):
        if record.id in seen:
            raise APIError(422, f"duplicate record id {record.id!r}", param=f"input.records.{index}.id",
                           code="duplicate_id")
        seen.add(record.id)
    constitution = resolve_constitution(constitutions, body.constitution, None)
    await caller.use_constitution(constitution)  # 403 / audited before any record is looked at
    principles = body.params.get("principles")
    if principles is not None and not (isinstance(principles, list) and all(isinstance(p, str) for p in principles)):
        raise APIError(422, "params.principles: expected a list of principle names", param="params.principles",
                       code="list_type")
    kind = KINDS[body.stage]
    batch_id = job_id_for("batch", body.idempotency_key or idempotency_key, caller.owner, await jobs.id_secret())
    queued, models = [], set()
    for index, record in enumerate(records):
        fields = {**body.params, **record.model_dump(exclude={"id"}), "constitution": constitution.name,
                  "wait": False}
        fields = {k: v for k, v in fields.items() if k in kind.request.model_fields}
        try:
            stage_request = kind.request.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(422, f"record {record.id!r}: {where}: {first['msg']}",
                           param=f"input.records.{index}.{where}", code=first["type"]) from exc
        try:  # a record's own principles (or the params') must be the constitution's
            resolve_constitution(constitutions, constitution.name, getattr(stage_request, "principles", None))
        except APIError as exc:
            where = f"input.records.{index}.principles" if "principles" in record.model_extra else "params.principles"
            raise APIError(exc.status, f"record {record.id!r}: {exc.message}", param=where, code=exc.code) from exc
        model = getattr(stage_request, "model", None)  # the `answer` kind names a chat model: its scope counts
        if model is not None and model not in models:
            await caller.use_model(model, route="/batches")
            models.add(model)
        job_id = job_id_for("batch-record", f"{batch_id}:{record.id}")
        queued.append((job_id, kind.job(job_id=job_id, request=stage_request, constitution=constitution,
                                        batch=BatchRef(batch_id=batch_id, record_id=record.id))))
    meta = {"stage": body.stage, "constitution": constitution.name, "constitution_hash": constitution.content_hash,
            "params": json.dumps(body.params), "owner": caller.owner}
    await batches.create(batch_id, meta, [r.id for r in records])
    for job_id, job in queued:  # idempotent: a resumed batch queues only what was never queued
        await jobs.submit(kind, job_id, job, label=f"batch-{body.stage}", owner=caller.owner)
    return await _view(batches, batch_id, caller)


@router.get("/batches/{batch_id}", response_model=BatchView, responses={404: {"model": ErrorEnvelope}})
async def get_batch(batch_id: str, batches: BatchesDep, caller: CallerDep) -> BatchView:
    return await _view(batches, batch_id, caller)


@router.get("/batches/{batch_id}/results", responses={404: {"model": ErrorEnvelope}},
            response_class=StreamingResponse)
async def batch_results(batch_id: str, batches: BatchesDep, caller: CallerDep):
    """JSONL, one line per input record that has an outcome: {id, status, result | error}, in input order."""
    await _view(batches, batch_id, caller)
    ids = await batches.ids(batch_id)

    async def lines() -> AsyncIterator[bytes]:
        for start in range(0, len(ids), RESULT_CHUNK):
            for record_id, result, failure in await batches.outcomes(batch_id, ids[start:start + RESULT_CHUNK]):
                if result is not None:
                    yield f'{{"id": {json.dumps(record_id)}, "status": "completed", "result": {result}}}\n'.encode()
                elif failure is not None:
                    yield f'{{"id": {json.dumps(record_id)}, "status": "failed", "error": {failure}}}\n'.encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.delete("/batches/{batch_id}", response_model=BatchView, responses={404: {"model": ErrorEnvelope}})
async def cancel_batch(batch_id: str, batches: BatchesDep, caller: CallerDep) -> BatchView:
    await _view(batches, batch_id, caller)
    await batches.cancel(batch_id)
    return await _view(batches, batch_id, caller)
