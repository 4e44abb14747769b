"""Content-addressed stage records: a stage is done when its record holds the key of its current inputs.

A stage's key hashes its own config and the fingerprints of what it reads (the upstream stages' outputs: a dataset's
sha256, a training run's id), so changing a setting, or redoing an upstream stage, makes every stage after it stale —
and nothing else. Records are written atomically when a stage finishes; a stage killed half-way has none and runs
again (its batches resume: they are idempotent on the gateway).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


def stage_key(stage: str, config: Any, inputs: dict[str, str]) -> str:
    blob = json.dumps({"stage": stage, "config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StageRecord(BaseModel):
    stage: str
    key: str
    fingerprint: str = Field(description="What downstream stages key on: a file hash, a run id, …")
    outputs: dict[str, str] = Field(default_factory=dict, description="Name → path (must still exist to skip).")
    info: dict[str, Any] = Field(default_factory=dict)
    wall_s: float
    finished_at: float = Field(default_factory=time.time)

    def outputs_exist(self) -> bool:
        return all(Path(p).exists() for p in self.outputs.values())


class StageStore:
    """`<experiment dir>/stages/<stage>.json`, one per stage id (`ethical.sft` …)."""

    def __init__(self, root: Path):
        self.root = Path(root) / "stages"

    def path(self, stage: str) -> Path:
        return self.root / f"{stage.replace('/', '.')}.json"

    def get(self, stage: str) -> StageRecord | None:
        path = self.path(stage)
        if not path.is_file():
            return None
        try:
            return StageRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError:
            return None  # a damaged record: the stage runs again

    def done(self, stage: str, key: str) -> StageRecord | None:
        record = self.get(stage)
        return record if record is not None and record.key == key and record.outputs_exist() else None

    def put(self, record: StageRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(record.stage)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text(record.model_dump_json(indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def drop(self, stage: str) -> None:
        self.path(stage).unlink(missing_ok=True)

    def all(self) -> list[StageRecord]:
        records = [self.get(p.stem) for p in sorted(self.root.glob("*.json"))] if self.root.is_dir() else []
        return [r for r in records if r is not None]
