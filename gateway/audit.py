"""The audit log: one JSON line per request that used an unethical model or constitution — who (key id, never the
key), when, which route, model and constitution, and the prompt's sha256 (its text only with
`UCAI_AUDIT_PROMPT_TEXT`), so misuse can be traced without the log itself becoming a store of harmful prompts."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field


class AuditEntry(BaseModel):
    time: float = Field(default_factory=time.time)
    key_id: str | None = Field(description="The API key's id; null when auth is off.")
    route: str
    model: str | None = None
    constitution: str | None = None
    prompt_sha256: str | None = None
    prompt: str | None = Field(None, description="Only with UCAI_AUDIT_PROMPT_TEXT.")


class AuditLog:
    def __init__(self, path: Path, prompt_text: bool = False):
        self.path = Path(path)
        self.prompt_text = prompt_text
        self._lock = threading.Lock()

    def entry(self, key_id: str | None, route: str, model: str | None = None, constitution: str | None = None,
              prompt: str | None = None) -> AuditEntry:
        return AuditEntry(key_id=key_id, route=route, model=model, constitution=constitution,
                          prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest() if prompt is not None else None,
                          prompt=prompt if self.prompt_text else None)

    def write(self, entry: AuditEntry) -> None:
        """Append one line with a single O_APPEND write: lines from several workers or replicas never interleave."""
        line = (entry.model_dump_json(exclude_none=True) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
