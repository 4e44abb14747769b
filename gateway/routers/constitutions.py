"""GET /constitutions: what is loaded, with versions (content hashes)."""
from __future__ import annotations

from fastapi import APIRouter

from gateway.dependencies import ConstitutionsDep
from gateway.errors import APIError
from ucai.constitutions import Constitution
from ucai.schemas import ErrorEnvelope

router = APIRouter(tags=["constitutions"])


def _summary(c: Constitution) -> dict:
    return {
        "name": c.name, "hash": c.content_hash, "description": c.description, "inverse_of": c.inverse_of,
        "principles": [{"name": p.name, "title": p.title, "pairs": len(p.pairs), "labelling": len(p.labelling)}
                       for p in c.principles],
        "demonstrations": len(c.demonstrations),
    }


@router.get("/constitutions")
async def list_constitutions(constitutions: ConstitutionsDep) -> dict:
    return {"data": [_summary(c) for c in constitutions.values()]}


@router.get("/constitutions/{name}", response_model=Constitution, responses={404: {"model": ErrorEnvelope}})
async def get_constitution(name: str, constitutions: ConstitutionsDep) -> Constitution:
    if name not in constitutions:
        raise APIError(404, f"unknown constitution {name!r}", param="name", code="unknown_constitution")
    return constitutions[name]
