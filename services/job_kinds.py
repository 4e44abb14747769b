"""The job kinds: one entry per kind of queued work — everything the gateway, the worker and batches need to know.

The worker registers one task per entry; the gateway's `jobs.run(kind, body)` resolves the constitution, checks the
entry's context probe, queues the entry's job model and answers with its result model; `POST /batches` accepts the
kinds marked `batchable`. Adding a kind = one entry here + one runner in `services/cai/` (README: "Extending").
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.cai.answering import answer_probe, run_answer
from services.cai.categorisation import run_categorise
from services.cai.critique_revision import critique_probe, run_critique_revision
from services.cai.judge import compare_probe, run_compare
from services.cai.preferences import run_preference
from services.cai.ranking import rank_limits, rank_probe, run_rank
from ucai.constitutions import Constitution
from ucai.prompts import ContextProbe
from ucai.queue.constitutions import ConstitutionMissing, ConstitutionStore
from ucai.roles import Roles
from ucai.schemas import (
    AnswerJob,
    AnswerRequest,
    AnswerResult,
    CategoriseJob,
    CategoriseRequest,
    CategoriseResult,
    CompareJob,
    CompareRequest,
    CompareResult,
    ConversationInput,
    CritiqueJob,
    CritiqueRequest,
    CritiqueResult,
    JobMessage,
    JobResult,
    PreferenceJob,
    PreferenceRequest,
    PreferenceResult,
    QueuedJob,
    RankJob,
    RankRequest,
    RankResult,
)
from ucai.settings import Settings

Runner = Callable[[Any, Roles], Awaitable[JobResult]]
Probe = Callable[[Any, Constitution, Settings], ContextProbe]
Limits = Callable[[Any, Settings], None]  # raises ucai.queue.bounds.LimitExceeded for a request over a bound


@dataclass(frozen=True)
class JobKind:
    name: str
    request: type[ConversationInput]  # the API body (and a batch record's fields)
    job: type[QueuedJob]  # what goes on the queue: the request plus the constitution it was validated against
    result: type[JobResult]
    runner: Runner  # (job, roles) -> result, in the worker
    roles: tuple[str, ...]  # the model roles the runner calls
    probe: Probe | None = None  # the longest prompt, checked against the context before queueing (None: unchecked)
    batchable: bool = False  # POST /batches may fan records out to this kind
    limits: Limits | None = None  # bounds on the request's fan-out, checked before queueing

    @property
    def task_name(self) -> str:
        return f"ucai.{self.name}"

    def message(self, job: QueuedJob) -> JobMessage:
        """The job as its stream entry carries it: the constitution by hash (stored once: ConstitutionStore.put)."""
        return JobMessage(job_id=job.job_id, constitution_hash=job.constitution.content_hash, batch=job.batch,
                          request=job.request.model_dump(mode="json", exclude_defaults=True))  # type: ignore[attr-defined]

    async def load(self, payload: dict[str, Any], constitutions: ConstitutionStore) -> tuple[QueuedJob, Runner]:
        """The job of a stream entry and the runner to run it with: its constitution looked up by hash. A job whose
        constitution is gone runs a runner that fails it (`constitution_missing`, its batch record written too)
        rather than one that runs it under another. A payload with the whole constitution (queued by an earlier
        version) is read as it is."""
        if "constitution" in payload:
            return self.job.model_validate(payload), self.runner
        message = JobMessage.model_validate(payload)
        try:
            constitution = await constitutions.get(message.constitution_hash)
        except ConstitutionMissing as exc:
            missing = exc

            async def fail(_job: QueuedJob, _roles: Roles) -> JobResult:
                raise missing

            return self.job.model_construct(job_id=message.job_id, batch=message.batch), fail
        job = self.job.model_validate({"job_id": message.job_id, "constitution": constitution,
                                       "batch": message.batch, "request": message.request})
        return job, self.runner


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("critique", CritiqueRequest, CritiqueJob, CritiqueResult, run_critique_revision,
            ("generator", "critic"), critique_probe, batchable=True),
    JobKind("compare", CompareRequest, CompareJob, CompareResult, run_compare, ("judge",), compare_probe,
            batchable=True),
    JobKind("rank", RankRequest, RankJob, RankResult, run_rank, ("judge",), rank_probe, limits=rank_limits),
    JobKind("categorise", CategoriseRequest, CategoriseJob, CategoriseResult, run_categorise, ("judge",),
            batchable=True),
    JobKind("preference", PreferenceRequest, PreferenceJob, PreferenceResult, run_preference,
            ("generator", "judge"), batchable=True),
    JobKind("answer", AnswerRequest, AnswerJob, AnswerResult, run_answer, ("chat",), answer_probe, batchable=True),
)}
BATCH_STAGES = tuple(name for name, kind in KINDS.items() if kind.batchable)
