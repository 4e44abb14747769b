"""The job-kind registry is consistent, and a job's lifecycle (status transitions, outcome) holds on a real Redis."""
from __future__ import annotations

import asyncio
import inspect

import pytest
from redis.asyncio import Redis
from taskiq_redis import RedisAsyncResultBackend

from services.cai.critique_revision import GENERATED_PARTS
from services.cai.judge import COT_MAX_TOKENS
from services.job_kinds import BATCH_STAGES, KINDS
from ucai.constitutions import load_constitutions
from ucai.queue import JobOutcome, JobStatus, JobStore
from ucai.schemas import ErrorDetail, JobResult
from ucai.settings import ROLE_NAMES, Settings


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_every_kind_is_complete(kind):
    assert kind.job.model_fields["request"].annotation is kind.request  # the job carries this kind's request
    assert issubclass(kind.result, JobResult)
    assert inspect.iscoroutinefunction(kind.runner)
    assert list(inspect.signature(kind.runner).parameters) == ["job", "roles"]
    assert kind.roles and set(kind.roles) <= set(ROLE_NAMES)
    assert kind.task_name == f"ucai.{kind.name}"


def test_task_names_are_unique_and_batches_take_the_batchable_kinds():
    assert len({k.task_name for k in KINDS.values()}) == len(KINDS)
    assert set(BATCH_STAGES) == {"critique", "compare", "categorise", "preference", "answer"}


def test_context_probes_take_the_runners_token_budgets():
    constitution = load_constitutions(None)["ethical"]
    settings = Settings()
    critique = KINDS["critique"]
    probe = critique.probe(critique.request(prompt="hi", max_tokens=40), constitution, settings)
    assert probe.role == "generator" and probe.generated_tokens == GENERATED_PARTS * 40
    default = critique.probe(critique.request(prompt="hi"), constitution, settings)
    assert default.generated_tokens == GENERATED_PARTS * settings.generator.max_tokens
    compare = KINDS["compare"]
    probe = compare.probe(compare.request(prompt="hi", responses=["short", "a much longer answer"]), constitution,
                          settings)
    assert probe.role == "judge" and probe.generated_tokens == COT_MAX_TOKENS
    assert "a much longer answer" in probe.messages[-1]["content"]
    rank = KINDS["rank"]
    probe = rank.probe(rank.request(prompt="hi", responses=["a", "bbbbbbbb", "cccc"]), constitution, settings)
    content = probe.messages[-1]["content"]
    assert "bbbbbbbb" in content and "cccc" in content
    answer = KINDS["answer"]   # the plain conversation on the chat role: the constitution is not applied
    probe = answer.probe(answer.request(prompt="hi", model="ethical-sft", max_tokens=64), constitution, settings)
    assert probe.role == "chat" and probe.messages == [{"role": "user", "content": "hi"}]
    assert probe.generated_tokens == 64
    assert answer.probe(answer.request(prompt="hi"), constitution, settings).generated_tokens == \
        settings.chat.max_tokens


def test_outcome_round_trip():
    error = ErrorDetail(message="down", type="service_unavailable", code="model_unavailable")
    assert JobOutcome.from_stored(JobOutcome.failure(error).stored()) == JobOutcome.failure(error)
    assert JobOutcome.from_stored({"error": "taskiq's own crash record"}) is None
    assert JobOutcome.failure(error).payload()["code"] == "model_unavailable"


def test_job_lifecycle_on_redis(redis_url):
    async def scenario() -> None:
        redis = Redis.from_url(redis_url)
        results = RedisAsyncResultBackend(redis_url, prefix_str="ucai:test-result")
        store = JobStore(redis, 60, results)
        job = f"lifecycle-{id(store)}"
        assert await store.create(job, "critique", "{}")
        assert not await store.create(job, "critique", "{}")  # one job per id
        assert not await store.transition(job, JobStatus.COMPLETED)  # queued → completed is not a transition
        assert await store.transition(job, JobStatus.RUNNING, count="attempts")
        error = ErrorDetail(message="role down", type="service_unavailable")
        assert await store.transition(job, JobStatus.WAITING_FOR_MODEL, error)
        assert (await store.get(job))["status"] == JobStatus.WAITING_FOR_MODEL
        assert await store.transition(job, JobStatus.RUNNING)
        assert await store.transition(job, JobStatus.COMPLETED, count="completions")
        assert not await store.transition(job, JobStatus.RUNNING)  # a final status is never left
        assert not await store.transition(job, JobStatus.QUEUED)
        raw = await store.get(job)
        assert raw["status"] == "completed" and raw["attempts"] == "1" and raw["completions"] == "1"
        assert await store.outcome(job) is None  # no saved outcome yet
        assert not await store.transition("no-such-job", JobStatus.RUNNING)
        await redis.aclose()
        await results.shutdown()

    asyncio.run(scenario())
