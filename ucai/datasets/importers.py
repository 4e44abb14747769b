"""Red-team prompt importers: public red-team data sets (and plain files) → `PromptRecord`s.

Every source is normalised to `{id, source, prompt | messages, category, meta}` with all the original
fields of the row kept in `meta` (cai-method.md §5). A malformed row is reported in `problems` with its
line number and skipped; exact and near-exact duplicates are dropped (the first one is kept) and counted.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ucai.schemas import ChatMessage

FORMATS = ("anthropic-red-team", "anthropic-harmless", "do-not-answer", "harmbench", "advbench", "jsonl", "csv", "txt")


class PromptRecord(BaseModel):
    """One red-team prompt (or conversation ending with a user turn) from any source."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="All original fields of the row.")

    @model_validator(mode="after")
    def _exactly_one_input(self) -> PromptRecord:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


class ImportProblem(BaseModel):
    line: int
    message: str


class ImportResult(BaseModel):
    records: list[PromptRecord]
    problems: list[ImportProblem]
    duplicates: int
    source: str
    format: str


# A parser yields (line number, record) or (line number, problem message) per row.
Row = tuple[int, PromptRecord | str]


# ---------------------------------------------------------------------------------------------- ids


def _normalise(text: str) -> str:
    """NFKC, casefold, collapse whitespace, strip punctuation at the ends: near-duplicates compare equal."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _category(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _prompt_record(source: str, prompt: Any, meta: dict[str, Any], category: Any = None) -> PromptRecord | str:
    """A record keyed by the hash of the normalised prompt, or a problem message."""
    if prompt is not None and not isinstance(prompt, str):
        return f"prompt is not a string (got {type(prompt).__name__})"
    if not prompt or not _normalise(prompt):
        return "empty prompt"
    key = _hash(_normalise(prompt))
    return PromptRecord(id=key, source=source, prompt=prompt.strip(), category=_category(category), meta=meta)


_MESSAGES = TypeAdapter(list[ChatMessage])


def _messages_record(source: str, messages: Any, meta: dict[str, Any], category: Any = None) -> PromptRecord | str:
    try:
        parsed = _MESSAGES.validate_python(messages)
    except ValidationError as e:
        first = e.errors()[0]
        return f"invalid messages at {'.'.join(map(str, first['loc']))}: {first['msg']}"
    if not parsed or parsed[-1].role != "user":
        return "messages must end with a user turn"
    if any(not _normalise(m.content) for m in parsed if m.role == "user"):
        return "user messages must not be empty"
    key = json.dumps([{"role": m.role, "content": _normalise(m.content)} for m in parsed], ensure_ascii=False)
    return PromptRecord(id=_hash(key), source=source, messages=parsed, category=_category(category), meta=meta)


# ---------------------------------------------------------------------------------------------- readers


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the extension
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path.name}: not a valid gzip file: {e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path.name}: not UTF-8 text: {e}") from e


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Objects of a JSON array (line = element index + 1) or of JSONL (line = physical line), else a problem."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a valid JSON array (line {e.lineno}, column {e.colno}): {e.msg}") from e
        yield from ((line, _object(value)) for line, value in enumerate(values, 1))
        return
    for line, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            try:
                yield line, _object(json.loads(raw))
            except json.JSONDecodeError as e:
                yield line, f"invalid JSON: {e.msg} (column {e.colno})"


def _object(value: Any) -> dict[str, Any] | str:
    return value if isinstance(value, dict) else f"expected a JSON object, got {type(value).__name__}"


def _from_json(text: str, convert: Callable[[dict[str, Any]], PromptRecord | str]) -> Iterator[Row]:
    for line, row in _json_rows(text):
        yield line, row if isinstance(row, str) else convert(row)


def _csv_rows(text: str) -> tuple[list[str], list[tuple[int, dict[str, str] | str]]]:
    """Header and rows keyed by it; line = the physical line the row starts on (the header is line 1)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    rows: list[tuple[int, dict[str, str] | str]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.append((start, f"invalid CSV: {e}"))
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if not header:
            header = [name.strip() for name in row]
        elif len(row) != len(header):
            rows.append((start, f"expected {len(header)} fields, got {len(row)}"))
        else:
            rows.append((start, dict(zip(header, row, strict=True))))
    return header, rows


# ---------------------------------------------------------------------------------------------- formats

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")


def _first_human_turn(transcript: Any) -> str | None:
    if not isinstance(transcript, str):
        return None
    transcript = transcript.lstrip()
    turns = list(_TURN.finditer(transcript))
    for i, turn in enumerate(turns):
        if turn.group(1) == "Human":
            end = turns[i + 1].start() if i + 1 < len(turns) else len(transcript)
            return transcript[turn.end() : end].strip()
    return None


def _transcript_record(row: dict[str, Any], source: str, field: str) -> PromptRecord | str:
    if field not in row:
        return f"missing '{field}' field"
    prompt = _first_human_turn(row[field])
    if prompt is None:
        return f"no 'Human:' turn in '{field}'"
    return _prompt_record(source, prompt, row)


def _anthropic_red_team(text: str, source: str) -> Iterator[Row]:
    return _from_json(text, lambda row: _transcript_record(row, source, "transcript"))


def _anthropic_harmless(text: str, source: str) -> Iterator[Row]:
    return _from_json(text, lambda row: _transcript_record(row, source, "chosen"))


_DNA_CATEGORIES = ("specific_harms", "types_of_harm", "risk_area", "category")  # most specific first


def _do_not_answer_row(row: dict[str, Any], source: str) -> PromptRecord | str:
    field = next((f for f in ("prompt", "question") if f in row), None)
    if field is None:
        return "missing 'prompt' (or 'question') field"
    category = next((_category(row.get(f)) for f in _DNA_CATEGORIES if _category(row.get(f))), None)
    return _prompt_record(source, row[field], row, category)


def _do_not_answer(text: str, source: str) -> Iterator[Row]:
    return _from_json(text, lambda row: _do_not_answer_row(row, source))


def _harmbench(text: str, source: str) -> Iterator[Row]:
    header, rows = _csv_rows(text)
    if header and "Behavior" not in header:
        raise ValueError(f"no 'Behavior' column (header: {','.join(header)})")
    for line, row in rows:
        if isinstance(row, str):
            yield line, row
            continue
        behavior, context = row["Behavior"].strip(), row.get("ContextString", "").strip()
        prompt = f"{context}\n\n{behavior}" if context and behavior else behavior
        yield line, _prompt_record(source, prompt, row, row.get("SemanticCategory"))


_TARGET_SHAPED = re.compile(r"\s*sure,?\s+here(?:\s+is|'s|\u2019s)\b", re.IGNORECASE)


def _target_shaped(rows: list[dict[str, str]], column: str) -> int:
    return sum(bool(_TARGET_SHAPED.match(row[column])) for row in rows)


def _advbench(text: str, source: str) -> Iterator[Row]:
    header, rows = _csv_rows(text)
    names = {name.casefold(): name for name in header}
    if header and not {"goal", "target"} <= names.keys():
        raise ValueError(f"expected columns goal,target (header: {','.join(header)})")
    goal, target = names.get("goal", "goal"), names.get("target", "target")
    # Decide per file which column holds the "Sure, here is ..." compliance sentences: that one is the target.
    good = [row for _, row in rows if isinstance(row, dict)]
    if _target_shaped(good, goal) > _target_shaped(good, target):
        goal, target = target, goal
    for line, row in rows:
        yield line, row if isinstance(row, str) else _prompt_record(source, row[goal], row)


def _plain_jsonl(text: str, source: str, column: str) -> Iterator[Row]:
    def convert(row: dict[str, Any]) -> PromptRecord | str:
        if column in row:
            return _prompt_record(source, row[column], row, row.get("category"))
        if "messages" in row:
            return _messages_record(source, row["messages"], row, row.get("category"))
        return f"missing '{column}' field (or 'messages')"

    return _from_json(text, convert)


def _plain_csv(text: str, source: str, column: str) -> Iterator[Row]:
    for line, row in _csv_rows(text)[1]:
        if isinstance(row, str):
            yield line, row
        elif column not in row:
            yield line, f"missing '{column}' column"
        else:
            yield line, _prompt_record(source, row[column], row, row.get("category"))


def _txt(text: str, source: str) -> Iterator[Row]:
    for line, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            yield line, _prompt_record(source, raw, {"line": line, "text": raw.rstrip("\r")})


_PARSERS: dict[str, Callable[[str, str], Iterator[Row]]] = {
    "anthropic-red-team": _anthropic_red_team,
    "anthropic-harmless": _anthropic_harmless,
    "do-not-answer": _do_not_answer,
    "harmbench": _harmbench,
    "advbench": _advbench,
    "txt": _txt,
}
_COLUMN_PARSERS: dict[str, Callable[[str, str, str], Iterator[Row]]] = {"jsonl": _plain_jsonl, "csv": _plain_csv}


# ---------------------------------------------------------------------------------------------- API


def import_file(path: Path, format: str, *, column: str | None = None) -> ImportResult:
    """Import one file in one of `FORMATS`; `column` names the prompt field for "jsonl" and "csv" (default "prompt")."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    if column is not None and format not in _COLUMN_PARSERS:
        raise ValueError(f"'column' applies only to the jsonl and csv formats, not {format!r}")
    path = Path(path)
    source = f"{format}:{path.name}"
    text = _read_text(path)
    try:
        if format in _COLUMN_PARSERS:
            parsed = list(_COLUMN_PARSERS[format](text, source, column or "prompt"))
        else:
            parsed = list(_PARSERS[format](text, source))
    except ValueError as e:  # the file as a whole is unusable (bad JSON array, missing required columns)
        raise ValueError(f"{source}: {e}") from e

    records: list[PromptRecord] = []
    problems: list[ImportProblem] = []
    seen: set[str] = set()
    duplicates = 0
    for line, item in parsed:
        if isinstance(item, str):
            problems.append(ImportProblem(line=line, message=item))
        elif item.id in seen:
            duplicates += 1
        else:
            seen.add(item.id)
            records.append(item)
    if not records:
        detail = "; ".join(f"line {p.line}: {p.message}" for p in problems[:5])
        raise ValueError(f"{source}: no prompts found" + (f" ({len(problems)} problems: {detail})" if problems else ""))
    return ImportResult(records=records, problems=problems, duplicates=duplicates, source=source, format=format)


def write_jsonl(records: Iterable[PromptRecord], path: Path) -> int:
    """Write one `PromptRecord` JSON per line; returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for record in records:
            f.write(record.model_dump_json() + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[PromptRecord]:
    """Read what `write_jsonl` wrote (gzip or not); a bad line raises ValueError naming its line number."""
    path = Path(path)
    records = []
    for line, raw in enumerate(_read_text(path).split("\n"), 1):
        if raw.strip():
            try:
                records.append(PromptRecord.model_validate_json(raw))
            except ValidationError as e:
                raise ValueError(f"{path.name}: line {line}: not a PromptRecord: {e}") from e
    return records
