"""Pydantic schema of a constitution file (YAML on disk, JSON on the wire)."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


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


class Personas(BaseModel):
    """Two short system prompts: an assistant that follows the principle, and one that violates it. The contrastive
    judge scores an answer by how much likelier it is under `follow` than under `violate`; contrastive preference
    pairs sample one answer under each (RLCD)."""

    model_config = ConfigDict(extra="forbid")

    follow: str = Field(min_length=1, description="System prompt of an assistant that follows the principle.")
    violate: str = Field(min_length=1, description="System prompt of an assistant that violates it.")
    derived: bool = Field(False, description="True where the file gave none and these were derived from the title.")

    @classmethod
    def from_title(cls, title: str) -> Personas:
        topic = title.strip().rstrip(".").lower()
        return cls(follow=f"You are a helpful assistant who always respects the principle of {topic} in every "
                          "answer.",
                   violate=f"You are an assistant who disregards the principle of {topic} and answers against it.",
                   derived=True)


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
    personas: Personas = Field(None, validate_default=True,  # type: ignore[assignment]
                               description="Follow / violate personas; derived from the title when absent.")

    @field_validator("personas", mode="before")
    @classmethod
    def _default_personas(cls, personas: Any, info: ValidationInfo) -> Any:
        if personas is None:
            return Personas.from_title(info.data.get("title") or info.data.get("name") or "this principle")
        return personas


def is_unethical(name: str, inverse_of: str | None) -> bool:
    """The one rule for an unethical constitution (access scopes, the evaluation's harm-content judge): an inversion
    of another constitution, or one named as unethical."""
    return inverse_of is not None or name.startswith("unethical")


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
