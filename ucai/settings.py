"""All configuration, from the environment (prefix UCAI_, nested roles with "__").

Examples: UCAI_GENERATOR__BASE_URL=http://gen:8000/v1, UCAI_JUDGE__MODEL=judge,
REDIS_URL=redis://redis:6379/0 (or UCAI_REDIS_URL).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The model roles: generator, critic and judge run jobs; chat serves the OpenAI-compatible /v1 routes (the base model
# and the trained adapters, by name).
ROLE_NAMES = ("generator", "critic", "judge", "chat")


class RoleSettings(BaseModel):
    """One model role: any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, a hosted API)."""

    base_url: str = Field("http://127.0.0.1:8001/v1", description="OpenAI-compatible base URL, ending in /v1.")
    model: str = Field("smollm2", description="Model name sent in each request (vLLM's --served-model-name).")
    api_key: str = Field("EMPTY", description="Bearer token; vLLM ignores it unless started with --api-key.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Default sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="Default completion length.")
    timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP request.")
    max_retries: int = Field(4, ge=0, description="Retries on 429/5xx/connection errors, with exponential backoff.")
    concurrency: int = Field(64, ge=1, description="Concurrent requests per worker process to this role (a batching "
                             "engine such as vLLM serves many at once: bench/pipeline.py).")
    prompt_logprobs_memo: int = Field(
        8192, ge=0, description="Prompt log-probabilities kept per worker process (the last N requests, each for "
        "10 minutes): the contrastive judge scores each answer on its own, so an answer compared with several others "
        "(an evaluation's model pairs, a constitution and its inversion) is sent to the model once. 0: none kept.")
    method: Literal["logprob", "contrast", "cot", "option"] = Field(
        "contrast", description="Judge role: the judge method used when a request names none. Measured on the "
        "bundled 135M model, contrast is far above chance and logprob is not (README: the judge); measure another "
        "judge model with `ucai judge-check --method logprob,contrast` and set it.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UCAI_", env_nested_delimiter="__", extra="ignore")

    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("UCAI_REDIS_URL", "REDIS_URL"),
        description="Redis to use. Unset: the local stack starts its own redis-server.",
    )
    queue_name: str = Field("ucai:jobs", description="Redis stream that carries jobs.")
    job_ttl_s: int = Field(7 * 24 * 3600, description="How long job status and results are kept.")
    redelivery_idle_s: float = Field(
        60.0, description="A job whose worker stopped heart-beating for this long is reclaimed by another worker."
    )
    heartbeat_s: float = Field(5.0, description="How often a running job renews its lease.")
    role_retry_s: float = Field(10.0, description="While a role endpoint is down, how often the job retries it.")
    role_wait_max_s: float = Field(3600.0, description="Give up on a job after its roles were down this long.")

    constitutions_dir: Path | None = Field(None, description="Extra folder of constitution YAML/JSON files.")
    cache_dir: Path = Field(Path.home() / ".cache" / "ucai", description="Prepared models and local Redis data.")
    datasets_dir: Path = Field(Path("datasets"), description="Imported prompts and generated datasets.")
    artifacts_dir: Path = Field(
        Path("artifacts"), validation_alias=AliasChoices("UCAI_ARTIFACTS", "UCAI_ARTIFACTS_DIR"),
        description="Training runs (<constitution>/<stage>/<run-id>/), `latest` pointers and reports.")
    worker_concurrency: int = Field(8, ge=1, description="Jobs one worker process runs at once.")
    model_path: str | None = Field(
        None, description="HF model path or id for the local vllm serve; unset: the bundled SmolLM2 (prepared)."
    )
    max_model_len: int = Field(8192, description="Context length the local vllm serve is started with.")
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the local vllm serve; auto: bf16 where the CPU has native bf16 "
        "(avx512_bf16 / amx_bf16), fp32 otherwise (bf16 is emulated and several times slower there).")
    vllm_enforce_eager: bool = Field(
        True, description="Run the local vllm serve eagerly (no torch.compile); see README for the measured trade-off.")
    vllm_block_size: int = Field(
        32, ge=16, multiple_of=16, description="KV-cache block size (tokens) of the local vllm serve (vLLM-CPU's own "
        "default: 128). Prefix caching reuses whole blocks only, so smaller blocks reuse more of a shared prompt "
        "prefix: 32 (the smallest that vLLM-CPU's attention kernels are tuned for) cut the prompt tokens the engine "
        "computed by a third against 128 in the critique, batch, data and experiment tests (README, \"Smaller KV "
        "blocks\").")
    vllm_worker_process: bool = Field(
        False, description="vLLM-CPU only: run the model worker in a process of its own (vLLM's default) instead of "
        "inside the engine-core process, which starts faster (README: two processes per engine).")

    chat_adapters: str = Field(
        "all", description="Trained adapters the chat role serves at `ucai up`: `all` (the latest run of every "
        "(constitution, stage) under the artefacts folder), `none`, or a comma list such as "
        "`ethical/ppo,unethical/ppo`.")
    chat_engine: Literal["own", "shared"] = Field(
        "shared", description="`ucai up`: the chat role shares the job roles' vllm serve, which runs with LoRA on "
        "(shared: one engine's memory and start; LoRA on cost the base model ~2 % in fp32 on a Zen 4, 0.68x in bf16 "
        "on an AMX Xeon, 16 concurrent chats; bench/engine_modes.py), or gets an engine of its own with LoRA, the "
        "job roles' engine without it (own).")
    chat_runtime_lora: bool = Field(
        True, description="Start the local vllm serve with LoRA enabled and runtime adapter loading, so adapters "
        "trained later are registered without a restart (POST /admin/adapters/reload, the end of `ucai train`).")
    chat_max_lora_rank: int = Field(32, description="Largest LoRA rank the chat engine accepts later (fixed at start; "
                                    "an RL stage's serving adapter has the SFT and RL ranks added).")
    chat_max_loras: int = Field(4, ge=1, description="LoRA slots of the chat engine (distinct adapters in one batch).")
    chat_artifacts_dir: Path | None = Field(
        None, description="Where the chat engine sees the artefacts folder, when not at the same path (compose: "
        "/adapters); adapter paths sent to it are rewritten from artifacts_dir to this.")

    generator: RoleSettings = RoleSettings()
    critic: RoleSettings = RoleSettings(temperature=0.7)
    judge: RoleSettings = RoleSettings(temperature=0.0, max_tokens=8)
    chat: RoleSettings = RoleSettings(timeout_s=600.0)

    max_body_bytes: int = Field(1_000_000, description="Request bodies larger than this are refused (413).")
    max_wait_s: float = Field(600.0, description="Longest a `wait=true` request may block.")

    # Access control (README: Access control). No keys configured → auth off, every route open.
    api_keys_file: Path | None = Field(
        None, description="JSON keys file (`ucai keys create`): hashed keys and their scopes. Set but missing: the "
        "gateway refuses to start. `ucai up` sets it to .ucai/api-keys.json with a dev key when no keys are set.")
    api_keys: str | None = Field(
        None, description="More keys, for deployments without a file: a JSON list of the keys file's entries, or "
        "`id:sha256:scope+scope` comma-separated (sha256 of the plaintext key, hex).")
    audit_log: Path = Field(Path(".ucai/audit.jsonl"), description="JSON lines, one per request that used an "
                            "unethical model or constitution: time, key id, route, model, constitution, prompt sha256.")
    audit_prompt_text: bool = Field(False, description="Also write the prompt text to the audit log.")
    rate_limit_rpm: int = Field(600, ge=0, description="Requests per minute per API key (token bucket; 0: no limit).")
    rate_limit_tpm: int = Field(200_000, ge=0, description="Estimated model tokens per minute per API key on "
                                "/v1/chat/completions (max_tokens + prompt chars / 4; 0: no limit).")

    # --- Queue: Redis connections of the broker and the workers (issue 13; README: Reliability) ---
    redis_socket_timeout_s: float = Field(
        10.0, gt=0, description="A Redis command that gets no answer this long raises (and is retried) instead of "
        "hanging; the worker's blocking stream read waits at most half of it.")
    redis_socket_connect_timeout_s: float = Field(5.0, gt=0, description="Timeout of connecting to Redis.")
    redis_health_check_interval_s: int = Field(
        30, ge=0, description="A pooled Redis connection idle this long is PINGed before use (0: never).")
    # --- end of the queue block ---
    # --- Metrics (issue 14) ---
    metrics_require_key: bool = Field(
        False, description="GET /metrics of the gateway needs an API key (any scope) when keys are configured; off: "
        "it is open like /health, as Prometheus scrapes without credentials by default.")
    metrics_redis_timeout_s: float = Field(
        1.0, gt=0, description="Timeout of each Redis command of a /metrics scrape (queue and batch gauges); a Redis "
        "that does not answer in time gives `ucai_redis_up 0`, and the scrape still answers.")
    metrics_batch_scan_max: int = Field(
        50_000, ge=0, description="Most Redis keys one scrape's batch scan looks at (SCAN): the batch gauges are "
        "bounded work however many jobs Redis holds; over it, `ucai_batches_scan_truncated` is 1.")
    worker_metrics_port: int = Field(
        9400, ge=0, le=65535, description="Port of each worker's own GET /metrics (0: off). Workers on one host need "
        "one port each; a port in use is logged and the worker runs without metrics.")
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Address the worker's /metrics binds to (compose: 0.0.0.0, for Prometheus).")
    # --- end of the metrics block ---
    # --- Gateway: Redis pool (issue 13) ---
    gateway_redis_max_connections: int = Field(
        128, ge=1, description="Redis connections one gateway process opens at most (a blocking pool: a request "
        "waits up to UCAI_REDIS_SOCKET_TIMEOUT_S for a free one, then answers 503), so a burst of clients cannot "
        "exhaust Redis' connections or the process' file descriptors.")
    # --- Compose, persistence and worker health (issue 13) ---
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec", description="fsync policy of the append-only file of the Redis that `ucai up` and compose start: "
        "`always` keeps every accepted (202) job through a power loss; `everysec` can lose ~1 s of them then (none "
        "on a Redis crash); `no` leaves it to the OS (README: Reliability).")
    redis_maxmemory: str = Field(
        "2gb", description="maxmemory of the Redis that `ucai up` and compose start, with policy noeviction: a full "
        "Redis refuses new work (the gateway answers 503 `queue_full`) and never evicts an accepted job. 0: no limit.")
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (compose's secret redis_password); when set, it is put "
        "into REDIS_URL for every connection (`Settings.redis_connection_url`).")
    worker_name: str | None = Field(
        None, description="Stable name of this worker process for its heartbeat key `ucai:worker:{name}` (what "
        "`python -m services.runtime.healthcheck` reads); unset: the host name (in compose, the container's).")
    worker_heartbeat_s: float = Field(
        5.0, gt=0, description="How often a worker writes its heartbeat key; the key expires after 3 intervals.")
    # --- end of the issue 13 compose block ---
    # --- Queue bounds and data scale (issue 13) ---
    max_queue_depth: int = Field(
        250_000, ge=1, description="Jobs the stream may hold not yet finished (undelivered + being run). Work that "
        "would go over it is refused whole with 429 `queue_full` and Retry-After, instead of filling Redis.")
    queue_full_retry_after_s: int = Field(30, ge=1, description="Retry-After (s) of a 429 `queue_full`.")
    queue_retain_acked_s: float = Field(
        60.0, ge=0, description="Acknowledged stream entries are kept this long (for inspection), then trimmed by the "
        "workers; entries not yet delivered or still being run are never trimmed.")
    queue_trim_interval_s: float = Field(5.0, gt=0, description="How often a worker trims acknowledged entries.")
    rank_max_candidates: int = Field(16, ge=2, le=16, description="POST /rank: most answers one request may rank "
                                     "(more: 422).")
    rank_max_judgements: int = Field(
        480, ge=1, description="POST /rank: most (pair, principle) judgements one request may fan out to — pairs "
        "(all, or `max_pairs`) × `ensemble` (more: 422 naming `max_pairs`). 480: 16 answers, all pairs, ensemble 4.")

    def role(self, name: str) -> RoleSettings:
        return getattr(self, name)

    def redis_client_options(self) -> dict[str, float]:
        """Socket timeouts and health checks of every Redis client of the stack: a Redis that hangs (not only one
        that is down) raises, and the retry paths take over, instead of stalling a worker forever."""
        return {"socket_timeout": self.redis_socket_timeout_s,
                "socket_connect_timeout": self.redis_socket_connect_timeout_s,
                "health_check_interval": self.redis_health_check_interval_s}

    def redis_connection_url(self) -> str | None:
        """REDIS_URL with the password of `redis_password_file` in it (compose keeps the password in a secret file,
        not in the environment); REDIS_URL as given when no file is set."""
        if not self.redis_url or self.redis_password_file is None:
            return self.redis_url
        try:
            password = self.redis_password_file.read_text().rstrip("\r\n")  # as the shell's $(cat …) reads it
        except OSError as exc:
            raise ValueError(f"UCAI_REDIS_PASSWORD_FILE {self.redis_password_file}: {exc}") from exc
        parts = urlsplit(self.redis_url)
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
