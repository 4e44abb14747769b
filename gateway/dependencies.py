"""Annotated dependencies: everything heavy is built once in the lifespan and read from app.state."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.jobs import JobService
from ucai.constitutions import Constitution
from ucai.roles import Roles
from ucai.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _jobs(request: Request) -> JobService:
    return request.app.state.jobs


def _constitutions(request: Request) -> dict[str, Constitution]:
    return request.app.state.constitutions


def _roles(request: Request) -> Roles:
    return request.app.state.roles


SettingsDep = Annotated[Settings, Depends(_settings)]
JobsDep = Annotated[JobService, Depends(_jobs)]
ConstitutionsDep = Annotated[dict[str, Constitution], Depends(_constitutions)]
RolesDep = Annotated[Roles, Depends(_roles)]
