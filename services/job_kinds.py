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
from services.cai.ranking import rank_probe, run_rank
from ucai.constitutions import Constitution
from ucai.prompts import ContextProbe
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

    @property
    def task_name(self) -> str:
        return f"ucai.{self.name}"


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("critique", CritiqueRequest, CritiqueJob, CritiqueResult, run_critique_revision,
            ("generator", "critic"), critique_probe, batchable=True),
    JobKind("compare", CompareRequest, CompareJob, CompareResult, run_compare, ("judge",), compare_probe,
            batchable=True),
    JobKind("rank", RankRequest, RankJob, RankResult, run_rank, ("judge",), rank_probe),
    JobKind("categorise", CategoriseRequest, CategoriseJob, CategoriseResult, run_categorise, ("judge",),
            batchable=True),
    JobKind("preference", PreferenceRequest, PreferenceJob, PreferenceResult, run_preference,
            ("generator", "judge"), batchable=True),
    JobKind("answer", AnswerRequest, AnswerJob, AnswerResult, run_answer, ("chat",), answer_probe, batchable=True),
)}
BATCH_STAGES = tuple(name for name, kind in KINDS.items() if kind.batchable)
