"""GET /health (the process answers) and GET /ready (Redis and every role endpoint answer)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter

from gateway.dependencies import JobsDep, RolesDep
from gateway.errors import error_response
from ucai.roles import RoleUnavailable

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(jobs: JobsDep, roles: RolesDep):
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(jobs.store.ping(), timeout=3)
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = f"down: {exc!r}"

    async def role(name: str) -> None:
        try:
            await roles[name].ping()
            checks[name] = "ok"
        except RoleUnavailable as exc:
            checks[name] = f"down: {exc}"

    await asyncio.gather(*(role(name) for name in roles.clients))
    down = sorted(k for k, v in checks.items() if v != "ok")
    if down:
        return error_response(503, f"not ready: {', '.join(down)} down", code="not_ready",
                              headers={"Retry-After": "5"}, checks=checks)
    return {"status": "ready", "checks": checks}
