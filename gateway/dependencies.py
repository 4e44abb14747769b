"""Annotated dependencies: everything heavy is built once in the lifespan and read from app.state — the routers
reach Redis and the model roles only through these."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.jobs import JobService
from ucai.constitutions import Constitution
from ucai.layout import Layout
from ucai.queue import BatchStore
from ucai.roles import Roles
from ucai.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _jobs(request: Request) -> JobService:
    return request.app.state.jobs


def _batches(request: Request) -> BatchStore:
    return request.app.state.batches


def _constitutions(request: Request) -> dict[str, Constitution]:
    return request.app.state.constitutions


def _roles(request: Request) -> Roles:
    return request.app.state.roles


def _layout(request: Request) -> Layout:
    return request.app.state.layout


SettingsDep = Annotated[Settings, Depends(_settings)]
JobsDep = Annotated[JobService, Depends(_jobs)]
BatchesDep = Annotated[BatchStore, Depends(_batches)]
ConstitutionsDep = Annotated[dict[str, Constitution], Depends(_constitutions)]
RolesDep = Annotated[Roles, Depends(_roles)]
LayoutDep = Annotated[Layout, Depends(_layout)]
# Same key → same job (also the body's `idempotency_key`).
IdempotencyKey = Annotated[str | None, Header(max_length=200)]
