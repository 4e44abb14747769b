"""Train / held-out split fixed by hash, and the check that no held-out prompt reaches a training set.

A prompt's side depends only on (salt, its normalised text): the same prompt lands on the same side in every run, on
every machine, whatever else is in the file — so adding prompts never moves old ones across, and two copies of one
prompt (different ids, other spacing or case) can never end up on both sides.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ucai.datasets.importers import PromptRecord

BUCKETS = 10_000


def normalise(prompt: str) -> str:
    return " ".join(prompt.casefold().split())


def record_text(record: PromptRecord) -> str:
    """What a record asks: its prompt, or the last user turn of its conversation."""
    if record.prompt is not None:
        return record.prompt
    return next((m.content for m in reversed(record.messages or []) if m.role == "user"), "")


def bucket(prompt: str, salt: str) -> int:
    """0 … BUCKETS-1, uniform over prompts, fixed by (salt, normalised text)."""
    digest = hashlib.sha256(f"{salt}\x00{normalise(prompt)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def is_heldout(prompt: str, fraction: float, salt: str) -> bool:
    return bucket(prompt, salt) < round(fraction * BUCKETS)


def hash_order(records: list[PromptRecord], salt: str) -> list[PromptRecord]:
    """A stable pseudo-random order (for `limit`: the first N are an unbiased sample, the same every run)."""
    return sorted(records, key=lambda r: (hashlib.sha256(f"{salt}\x01{normalise(record_text(r))}".encode()).digest(),
                                          r.id))


def split(records: list[PromptRecord], fraction: float, salt: str) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(train, held-out), each in input order."""
    train, heldout = [], []
    for record in records:
        (heldout if is_heldout(record_text(record), fraction, salt) else train).append(record)
    return train, heldout


class LeakError(ValueError):
    """A held-out prompt is in a training set."""


def _user_turns(messages: Any) -> Iterable[str]:
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            yield message["content"]


def dataset_prompts(path: Path) -> Iterable[str]:
    """Every prompt of a dataset file (imports, SFT or preference JSONL): a string `prompt`, and every user turn of
    `messages` or of a conversational `prompt` (a list of messages, TRL's preference format)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = row.get("prompt")
            if isinstance(prompt, str):
                yield prompt
            else:
                yield from _user_turns(prompt)
            yield from _user_turns(row.get("messages"))


def check_no_leak(heldout: Iterable[str], training_files: Iterable[Path]) -> int:
    """Raise LeakError naming the first held-out prompt found in a training file; return the prompts checked."""
    held = {normalise(p) for p in heldout}
    checked = 0
    for path in training_files:
        for prompt in dataset_prompts(path):
            checked += 1
            if normalise(prompt) in held:
                raise LeakError(f"held-out prompt in the training data {path}: {prompt[:120]!r}")
    return checked
