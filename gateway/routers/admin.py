"""Operator routes (scope `admin`): register trained adapters with the running chat engine."""
from __future__ import annotations

from fastapi import APIRouter

from gateway.access import CallerDep
from gateway.dependencies import LayoutDep, RolesDep, SettingsDep
from gateway.errors import APIError
from ucai import chat_adapters
from ucai.schemas import ErrorEnvelope

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/adapters/reload", response_model=chat_adapters.AdapterSync,
             responses={c: {"model": ErrorEnvelope} for c in (401, 403, 503)})
async def reload_adapters(roles: RolesDep, settings: SettingsDep, layout: LayoutDep,
                          caller: CallerDep) -> chat_adapters.AdapterSync:
    """Load every adapter trained since the chat engine started (UCAI_CHAT_ADAPTERS selects which), and reload a
    name whose latest run changed; vLLM keeps serving meanwhile."""
    caller.require("admin")
    try:
        adapters = chat_adapters.selected(settings.chat_adapters, layout)
    except (FileNotFoundError, ValueError) as exc:
        raise APIError(422, str(exc), code="adapter_not_found") from exc
    try:
        return await chat_adapters.sync(roles.http, adapters, settings)
    except chat_adapters.ChatEngineUnavailable as exc:
        raise APIError(503, f"the chat model service is unavailable: {exc}", code="model_unavailable",
                       headers={"Retry-After": "5"}) from exc
