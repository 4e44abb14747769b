"""Pydantic schema of a constitution file (YAML on disk, JSON on the wire)."""
from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CritiqueRevisionPair(BaseModel):
    """One critique request and the revision request that answers it (the paper's pairs)."""

    model_config = ConfigDict(extra="forbid")

    critique: str = Field(min_length=1, description="Critique request appended after the answer.")
    revision: str = Field(min_length=1, description="Revision request appended after the critique.")


class Demonstration(BaseModel):
    """A full few-shot conversation: prompt, answer, critique request, critique, revision request, revision."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    critique_request: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    revision_request: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stable identifier, e.g. 'peace'.")
    title: str = Field(min_length=1)
    description: str = ""
    pairs: list[CritiqueRevisionPair] = Field(min_length=1)
    labelling: list[str] = Field(
        default_factory=list,
        description="Multiple-choice questions for the judge, e.g. 'Which response is less violent?'",
    )


class Constitution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    inverse_of: str | None = Field(default=None, description="Name of the constitution this one inverts.")
    system_prompt: str | None = Field(default=None, description="Optional system message for every role.")
    principles: list[Principle] = Field(min_length=1)
    demonstrations: list[Demonstration] = Field(default_factory=list)

    @field_validator("principles")
    @classmethod
    def _unique_principles(cls, principles: list[Principle]) -> list[Principle]:
        names = [p.name for p in principles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate principle names: {', '.join(dupes)}")
        return principles

    @property
    def content_hash(self) -> str:
        """Version of the constitution: sha256 of its canonical JSON, first 16 hex digits."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def principle(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def principle_names(self) -> list[str]:
        return [p.name for p in self.principles]
