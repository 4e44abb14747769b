"""Batches: POST /batches fans out one job per record; GET status, GET results (JSONL), DELETE cancels."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from gateway.access import Caller, CallerDep
from gateway.dependencies import BatchesDep, ConstitutionsDep, IdempotencyKey, JobsDep, LayoutDep
from gateway.errors import APIError
from gateway.jobs import JobService
from gateway.validation import resolve_constitution
from services.job_kinds import BATCH_STAGES, KINDS, JobKind
from ucai.constitutions import Constitution
from ucai.layout import Layout
from ucai.queue import BatchStore, job_id_for
from ucai.schemas import BatchRecord, BatchRef, BatchRequest, BatchView, ErrorEnvelope, JobMessage

router = APIRouter(tags=["batches"])

RESULT_CHUNK = 500
MAX_RECORDS = 100_000  # records of one batch (inline ones are bounded by the schema and the body size too)


def _dataset_path(layout: Layout, name: str) -> Path:
    try:
        path = layout.imported(name)
    except ValueError:
        path = None
    if path is None or not path.is_file():
        raise APIError(404, f"no imported dataset {name!r} (import it with `ucai data import`)",
                       param="input.dataset", code="dataset_not_found")
    return path


def _dataset_records(path: Path) -> Iterator[tuple[int, BatchRecord]]:
    """(line number, record) of an imported dataset, read line by line (a 100k-record file is never held whole); a
    malformed line is the client's error, naming the line: 422, never a 500."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, BatchRecord.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise APIError(422, f"line {number}: {where + ': ' if where else ''}{first['msg']}",
                               param="input.dataset", code="invalid_dataset_line") from exc


@dataclass
class _Prepared:
    """A batch validated whole, ready to queue: (job id, stream entry) per record in input order, the record ids and
    the chat models the records name."""

    jobs: list[tuple[str, bytes]] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)


def _prepare(records: Iterable[tuple[int, BatchRecord]], from_dataset: bool, body: BatchRequest, kind: JobKind,
             constitution: Constitution, constitutions: dict[str, Constitution], batch_id: str,
             jobs: JobService) -> _Prepared:
    """Validate every record as the stage's request and make its stream entry — all before anything is written, so a
    bad record refuses the whole batch. CPU-bound (100k records: seconds): run in a thread, off the event loop.
    `records`: (position, record) — the line number for a dataset, the index for inline records."""
    prepared, seen = _Prepared(), set()
    accepted = set(kind.request.model_fields)
    constitution_hash = constitution.content_hash  # a property that hashes the whole text: once, not per record
    for position, record in records:
        where_record = f"line {position}: " if from_dataset else ""
        param_base = "input.dataset" if from_dataset else f"input.records.{position}"
        if record.id in seen:
            raise APIError(422, f"{where_record}duplicate record id {record.id!r}",
                           param="input.dataset" if from_dataset else f"{param_base}.id", code="duplicate_id")
        seen.add(record.id)
        if len(seen) > MAX_RECORDS:  # refused as soon as it is known, not after reading a whole oversized file
            raise APIError(422, f"over {MAX_RECORDS} records; a batch holds at most {MAX_RECORDS} (split the dataset)",
                           param="input.dataset" if from_dataset else "input.records", code="too_many_records")
        fields = {**body.params, **record.model_dump(exclude={"id"}), "constitution": constitution.name,
                  "wait": False}
        try:
            stage_request = kind.request.model_validate({k: v for k, v in fields.items() if k in accepted})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(422, f"{where_record}record {record.id!r}: {where}: {first['msg']}",
                           param="input.dataset" if from_dataset else f"{param_base}.{where}",
                           code=first["type"]) from exc
        principles = getattr(stage_request, "principles", None)
        if principles is not None:  # a record's own principles (or the params') must be the constitution's
            try:
                resolve_constitution(constitutions, constitution.name, principles)
            except APIError as exc:
                own = "principles" in (record.model_extra or {})
                param = ("input.dataset" if from_dataset else f"{param_base}.principles") if own \
                    else "params.principles"
                raise APIError(exc.status, f"{where_record}record {record.id!r}: {exc.message}", param=param,
                               code=exc.code) from exc
        model = getattr(stage_request, "model", None)  # the `answer` kind names a chat model: its scope counts
        if model is not None:
            prepared.models.add(model)
        job_id = job_id_for("batch-record", f"{batch_id}:{record.id}")
        message = JobMessage(job_id=job_id, constitution_hash=constitution_hash,
                             batch=BatchRef(batch_id=batch_id, record_id=record.id),
                             request=stage_request.model_dump(mode="json", exclude_defaults=True))
        prepared.jobs.append((job_id, jobs.message(kind, job_id, message)))
        prepared.record_ids.append(record.id)
    if not prepared.jobs:
        raise APIError(422, "the dataset has no records" if from_dataset else "input.records: no records",
                       param="input.dataset" if from_dataset else "input.records", code="empty_batch")
    return prepared


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
             responses={code: {"model": ErrorEnvelope} for code in (404, 413, 422, 429)})
async def create_batch(
    body: BatchRequest, jobs: JobsDep, batches: BatchesDep, constitutions: ConstitutionsDep, layout: LayoutDep,
    caller: CallerDep, idempotency_key: IdempotencyKey = None,
):
    """Validate every record (a dataset read line by line, in a thread), refuse the whole batch on the first bad one
    or when the queue has no room for it (429 `queue_full`), else create it and queue its jobs, pipelined. A batch of
    100k records: about ten seconds on 2 cores (tests/contract/test_contract_batch_scale.py)."""
    if body.stage not in BATCH_STAGES:
        raise APIError(422, f"stage: unknown stage {body.stage!r}; batches run {', '.join(BATCH_STAGES)}",
                       param="stage", code="unknown_stage")
    if (body.input.records is None) == (body.input.dataset is None):
        raise APIError(422, "give exactly one of input.records or input.dataset", param="input")
    dataset = _dataset_path(layout, body.input.dataset) if body.input.dataset is not None else None
    if body.input.records is not None:  # a duplicate id is reported before anything else about the records
        seen: set[str] = set()
        for index, record in enumerate(body.input.records):
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
    records = _dataset_records(dataset) if dataset is not None else enumerate(body.input.records or [])
    prepared = await asyncio.to_thread(_prepare, records, dataset is not None, body, kind, constitution,
                                       constitutions, batch_id, jobs)
    for model in sorted(prepared.models):
        await caller.use_model(model, route="/batches")
    if await batches.meta(batch_id) is None:  # a resumed batch queues only what was never queued: no room needed
        await jobs.check_queue_room(len(prepared.jobs))
    meta = {"stage": body.stage, "constitution": constitution.name, "constitution_hash": constitution.content_hash,
            "params": json.dumps(body.params), "owner": caller.owner}
    await batches.create(batch_id, meta, prepared.record_ids)
    # idempotent: a resumed batch queues only what was never queued
    await jobs.submit_many(kind, constitution, prepared.jobs, label=f"batch-{body.stage}", owner=caller.owner)
    return await _view(batches, batch_id, caller)


@router.get("/batches/{batch_id}", response_model=BatchView, responses={404: {"model": ErrorEnvelope}})
async def get_batch(batch_id: str, batches: BatchesDep, caller: CallerDep) -> BatchView:
    return await _view(batches, batch_id, caller)


@router.get("/batches/{batch_id}/results", responses={404: {"model": ErrorEnvelope}},
            response_class=StreamingResponse)
async def batch_results(batch_id: str, batches: BatchesDep, caller: CallerDep):
    """JSONL, one line per input record that has an outcome: {id, status, result | error}, in input order."""
    total = (await _view(batches, batch_id, caller)).total

    async def lines() -> AsyncIterator[bytes]:
        for start in range(0, total, RESULT_CHUNK):  # a page of ids at a time: 100k ids are never held at once
            ids = await batches.ids(batch_id, start, start + RESULT_CHUNK - 1)
            for record_id, result, failure in await batches.outcomes(batch_id, ids):
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
