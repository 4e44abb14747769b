"""The side-by-side comparison page: GET / (index.html) and GET /static/<file> (its script and style sheet).

Plain files, no build step. They hold no data, so they need no API key: the page asks for the key itself and sends it
with every API call it makes. Only the files directly in gateway/static/ are served, by name.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gateway.errors import APIError

STATIC = Path(__file__).resolve().parent.parent / "static"
# Revalidate on every load (ETag/Last-Modified make that a 304), so a new gateway version is never half-cached.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["page"], include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise APIError(404, f"no such page file: {name!r}", code="not_found")
    return FileResponse(path, headers=HEADERS)


@router.get("/")
async def index() -> FileResponse:
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    return _file(name)
