"""All configuration, from the environment (prefix UCAI_, nested roles with "__").

Examples: UCAI_GENERATOR__BASE_URL=http://gen:8000/v1, UCAI_JUDGE__MODEL=judge,
REDIS_URL=redis://redis:6379/0 (or UCAI_REDIS_URL).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    concurrency: int = Field(16, ge=1, description="Concurrent requests per worker process to this role.")
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

    chat_adapters: str = Field(
        "all", description="Trained adapters the chat role serves at `ucai up`: `all` (the latest run of every "
        "(constitution, stage) under the artefacts folder), `none`, or a comma list such as "
        "`ethical/ppo,unethical/ppo`.")
    chat_engine: Literal["own", "shared"] = Field(
        "own", description="`ucai up`: the chat role gets its own vllm serve with LoRA (own), or shares the job "
        "roles' engine, which then runs with LoRA on (shared: less memory, about half the base throughput on CPU).")
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

    def role(self, name: str) -> RoleSettings:
        return getattr(self, name)


@lru_cache
def get_settings() -> Settings:
    return Settings()
