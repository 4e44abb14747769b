"""Every payload that crosses a process boundary: API bodies, queue jobs, results (JSON only)."""
from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ucai.constitutions.schema import Constitution


class JobStatus(str, Enum):
    """Where a job is (its transitions: ucai/queue/lifecycle.py)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_FOR_MODEL = "waiting_for_model"
    COMPLETED = "completed"
    FAILED = "failed"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    """The one error body of every 4xx/5xx (the OpenAI / vLLM shape)."""

    error: ErrorDetail
    job: dict[str, Any] | None = Field(None, description="The accepted job, when the error is about waiting for it.")
    checks: dict[str, str] | None = Field(None, description="Dependency checks, on GET /ready.")


class ConversationInput(BaseModel):
    """`prompt` or `messages` (exactly one) under a constitution, and how to wait for the job."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, description="A single user prompt (or give `messages`).")
    messages: list[ChatMessage] | None = Field(
        None, validate_default=True, description="A full conversation ending with a user turn (or give `prompt`)."
    )
    constitution: str = Field("ethical", description="Name of a loaded constitution (GET /constitutions).")
    principles: list[str] | None = Field(
        None, min_length=1, description="Principles to use; default: sampled from the constitution (seeded)."
    )
    seed: int | None = Field(None, description="Seeds principle sampling and the model's sampling.")
    wait: bool = Field(True, description="Answer with the result (200) or at once with the job (202).")
    timeout_s: float | None = Field(None, gt=0, description="With `wait`, how long to wait before answering 202.")
    idempotency_key: str | None = Field(
        None, max_length=200, description="Same key → same job id; the job runs once (also the Idempotency-Key header)."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str | None) -> str | None:
        if prompt is not None and not prompt.strip():
            raise ValueError("prompt must not be empty or whitespace")
        return prompt

    @field_validator("messages")
    @classmethod
    def _exactly_one_input(cls, messages: list[ChatMessage] | None, info: ValidationInfo) -> list[ChatMessage] | None:
        has_prompt = info.data.get("prompt") is not None
        if "prompt" not in info.data:  # prompt itself was invalid; its error is reported
            return messages
        if has_prompt == (messages is not None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if messages is not None:
            if not messages or messages[-1].role != "user":
                raise ValueError("messages must end with a user turn")
            if any(not m.content.strip() for m in messages if m.role == "user"):
                raise ValueError("user messages must not be empty or whitespace")
        return messages

    def conversation(self) -> list[ChatMessage]:
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt or "")]


class CritiqueRequest(ConversationInput):
    """Body of POST /critique. `principles` are cycled over the rounds."""

    rounds: int = Field(1, ge=1, le=8, description="Critique → revision rounds, a new principle each round.")
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Per model call; default: the role's setting.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Default: each role's setting.")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens += prompt_tokens + completion_tokens
        self.requests += 1


class JobResult(BaseModel):
    """What every completed job returns: which job, under which constitution (name and version)."""

    id: str
    status: Literal["completed"] = "completed"
    constitution: str
    constitution_hash: str


JudgeMethod = Literal["logprob", "contrast", "cot", "option"]


class JudgeOptions(ConversationInput):
    method: JudgeMethod | None = Field(
        None,
        description="Default: the judge role's method (UCAI_JUDGE__METHOD, chosen per judge model by measurement). "
        "logprob: soft label from next-token log-probabilities; contrast: each answer's log-likelihood "
        "under the principle's follow persona minus under its violate persona (needs prompt log-probabilities); "
        "cot: reason first, clamp to 40-60 %; option: reply 'OPTION 1' or 'OPTION 2' (hard label).",
    )
    both_orders: bool = Field(True, description="Judge (a, b) and (b, a) and average the mirrored probabilities "
                              "(contrast: order-free by construction).")
    ensemble: int = Field(4, ge=1, le=16, description="Labelling principles sampled (seeded) and averaged.")
    tau: float | None = Field(None, gt=0, description="contrast: temperature of σ(Δs / τ); default: the value "
                              "calibrated for (judge model, constitution) by `ucai judge-check --calibrate`, else 1.")
    length_normalised: bool = Field(False, description="contrast: score per answer token instead of summed.")


class CompareRequest(JudgeOptions):
    """Body of POST /compare: which of two answers better follows the constitution."""

    responses: list[str] = Field(min_length=2, max_length=2, description="Exactly two answers; empty strings allowed.")


class RankRequest(JudgeOptions):
    """Body of POST /rank: order k answers by pairwise judgements (Bradley-Terry)."""

    responses: list[str] = Field(min_length=2, max_length=16, description="2-16 answers.")
    ensemble: int = Field(2, ge=1, le=16, description="Labelling principles per pair.")
    max_pairs: int | None = Field(None, ge=1, description="Budget: judge at most this many pairs (sampled, seeded).")


class Judgement(BaseModel):
    principle: str = Field(description="The labelling question asked.")
    order: Literal["ab", "ba"]
    p_a: float
    p_b: float
    raw: dict[str, Any] = Field(default_factory=dict, description="What the judge returned, and how it was read.")


class PositionConsistency(BaseModel):
    score: float | None = Field(None, description="Mean over principles of 1 - |P(a | a first) - P(a | a second)|.")
    flip_rate: float | None = Field(None, description="Share of principles whose argmax flipped with the order.")
    flipped: bool = Field(False, description="The argmax flipped for most principles.")
    note: str | None = None


class JudgedResult(JobResult):
    """What every judged job reports besides its verdict."""

    position_consistency: PositionConsistency
    note: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)


class CompareResult(JudgedResult):
    method: JudgeMethod
    preferred: Literal[0, 1]
    probabilities: list[float] = Field(description="[p_a, p_b], summing to 1.")
    margin: float = Field(description="p_preferred - p_other.")
    judgements: list[Judgement]


class RankedResponse(BaseModel):
    index: int
    rank: int
    score: float = Field(description="Bradley-Terry strength, normalised to sum to 1.")
    wins: float = Field(description="Sum of soft wins against the others judged.")


class PairResult(BaseModel):
    a: int
    b: int
    p_a: float


class RankResult(JobResult):
    method: JudgeMethod
    ranking: list[RankedResponse] = Field(description="Best first.")
    pairs: list[PairResult]
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)


class BatchRef(BaseModel):
    batch_id: str
    record_id: str


class QueuedJob(BaseModel):
    """What the gateway puts on the queue: a request plus the exact constitution it was validated against."""

    job_id: str
    constitution: Constitution
    batch: BatchRef | None = Field(None, description="Set when the job is one record of a batch.")


class JobMessage(BaseModel):
    """What a job's stream entry carries: a `QueuedJob` with its constitution by content hash — stored once in Redis
    (`ucai:constitution:{hash}`), not copied into every job. The worker makes the `QueuedJob` of it again."""

    job_id: str
    constitution_hash: str
    batch: BatchRef | None = None
    request: dict[str, Any] = Field(description="The kind's request, without fields left at their default.")


class CompareJob(QueuedJob):
    request: CompareRequest


class RankJob(QueuedJob):
    request: RankRequest


class CategoriseRequest(ConversationInput):
    """Which principle of the constitution a prompt is about (or none), scored by the judge."""


class CategoriseResult(JobResult):
    category: str = Field(description="The top principle, or 'none'.")
    scores: dict[str, float] = Field(description="Probability of each principle and of 'none', summing to 1.")
    raw: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


class CategoriseJob(QueuedJob):
    request: CategoriseRequest


PairsMode = Literal["sample", "contrast"]
PairLabel = Literal["judge", "construction"]


class PreferenceRequest(JudgeOptions):
    """Two answers to the conversation, labelled (the RLAIF preference step): two samples, or (RLCD) one answer
    from the follow persona and one from the violate persona of a sampled principle."""

    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, gt=0.0, le=2.0, description="Sampling temperature; default 0.7.")
    pairs: PairsMode = Field("sample", description="sample: two samples of the plain generator; contrast (RLCD): "
                             "one under the principle's follow persona, one under its violate persona.")
    label: PairLabel = Field("judge", description="judge: the judge `method` labels the pair; construction "
                             "(pairs=contrast only): the follow-persona answer is chosen, as in RLCD.")

    @field_validator("label")
    @classmethod
    def _construction_needs_contrast(cls, label: str, info: ValidationInfo) -> str:
        if label == "construction" and info.data.get("pairs") != "contrast":
            raise ValueError("label 'construction' needs pairs 'contrast'")
        return label


class PreferenceResult(JudgedResult):
    chosen: str
    rejected: str
    p_chosen: float
    margin: float = Field(description="p_chosen - p_rejected.")
    principles: list[str]
    pairs: PairsMode = "sample"
    label: PairLabel = "judge"
    method: JudgeMethod = "logprob"
    produced_by: dict[str, str] = Field(default_factory=dict, description="How each answer was produced: "
                                        "'sample', or 'follow:<principle>' / 'violate:<principle>' (contrast).")


class PreferenceJob(QueuedJob):
    request: PreferenceRequest


class AnswerRequest(ConversationInput):
    """One chat model answers the conversation (the evaluation's answers, batched and seeded). The constitution is
    recorded with the result, not applied: the model answers the plain conversation, as a user of /v1 would see."""

    model: str = Field("base", min_length=1, max_length=200,
                       description="Public name: `base`, or a trained adapter `<constitution>-<stage>`.")
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Default: the chat role's setting.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Default: the chat role's setting.")


class AnswerJob(QueuedJob):
    request: AnswerRequest


class AnswerResult(JobResult):
    model: str = Field(description="The public name that answered.")
    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)



class BatchRecord(BaseModel):
    """One input record: its id plus the fields of the stage's request (prompt | messages, responses …)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)


class BatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[BatchRecord] | None = Field(None, min_length=1, max_length=100_000)
    dataset: str | None = Field(None, description="Name of a dataset imported on the server (`ucai data import`).")


class BatchRequest(BaseModel):
    """Body of POST /batches: one job per record, each processed and written exactly once."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="The job kind run for every record: critique, compare, categorise, preference, "
                       "answer.")
    constitution: str = "ethical"
    input: BatchInput
    params: dict[str, Any] = Field(default_factory=dict, description="Fields of the stage's request for every record.")
    idempotency_key: str | None = Field(None, max_length=200, description="Same key → the same batch (resume).")


class BatchView(BaseModel):
    id: str
    stage: str
    constitution: str
    status: Literal["running", "completed", "cancelled"]
    total: int
    done: int
    failed: int
    rate_per_min: float | None = None
    eta_s: float | None = None
    created_at: float
    links: dict[str, str]


class CritiqueJob(QueuedJob):
    request: CritiqueRequest


class RevisionStep(BaseModel):
    round: int
    principle: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


class CritiqueResult(JobResult):
    initial_response: str
    revisions: list[RevisionStep]
    final_response: str
    usage: Usage
    timings: dict[str, float] = Field(description="Seconds: initial, each round, total.")
    models: dict[str, str] = Field(default_factory=dict, description="Model name used for each role.")


class JobLinks(BaseModel):
    self: str


class JobView(BaseModel):
    """GET /jobs/{id} and the 202 answer."""

    id: str
    kind: str
    status: JobStatus
    created_at: float | None = None
    updated_at: float | None = None
    attempts: int = 0
    error: ErrorDetail | None = None
    result: dict[str, Any] | None = Field(None, description="The job's result once completed (e.g. a CritiqueResult).")
    links: JobLinks


class ChatCompletionRequest(BaseModel):
    """Body of POST /v1/chat/completions (OpenAI's): the model by name, the conversation, and any sampling field
    the chat engine takes (passed through: max_tokens, temperature, top_p, seed, stop, logprobs, …)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="`base`, or a trained adapter: `<constitution>-<stage>`.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "ucai"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- POST /chat/side-by-side: two models answer the same conversation, streamed, then judged ----

class SideBySideJudge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constitution: str = Field("ethical", description="Whose principles judge the two answers.")
    method: JudgeMethod | None = Field(None, description="Default: the judge role's method.")


class SideBySideRequest(BaseModel):
    """Body of POST /chat/side-by-side."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, ending with a user turn.")
    models: list[str] = Field(min_length=2, max_length=2,
                              description="[left, right]: `base` or `<constitution>-<stage>`.")
    judge: SideBySideJudge | None = Field(default_factory=SideBySideJudge,
                                          description="The verdict after both answers; null: no verdict.")
    max_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    seed: int | None = Field(0, description="The same seed gives the same pair of answers.")

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].content.strip():
            raise ValueError("messages must end with a non-empty user turn")
        return messages


Side = Literal["left", "right"]


class SideDelta(BaseModel):
    """event: left|right — a piece of one side's answer."""

    side: Side
    model: str
    delta: str


class SideFinished(BaseModel):
    """event: left|right — one side is done (the last event of that side)."""

    side: Side
    model: str
    finish_reason: str | None
    text: str
    ttft_s: float | None = Field(None, description="Seconds from the request to this side's first token.")
    completion_tokens: int
    tokens_per_s: float | None = Field(None, description="Completion tokens per second after the first token.")


class SideBySideVerdict(BaseModel):
    """event: verdict — the judge's /compare of the two answers under the chosen constitution."""

    constitution: str
    method: JudgeMethod
    preferred: Literal[0, 1]
    preferred_side: Side
    preferred_model: str
    probabilities: list[float]
    margin: float
    judgements: list[Judgement]
    position_consistency: PositionConsistency


class SideBySideError(BaseModel):
    """event: error — one side (or the verdict, side null) failed; the other side still finishes."""

    side: Side | None = None
    error: ErrorDetail


class ChatConfig(BaseModel):
    """GET /chat/config: what the comparison page offers."""

    models: list[str]
    defaults: dict[Side, str]
    constitutions: list[str]
    judge: SideBySideJudge
    methods: list[str]
    report: str | None = Field(None, description="Where the latest experiment report is, when one exists.")
