"""Load constitutions from YAML (our schema) or the public JSON format of the open CAI reproduction."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from ucai.constitutions.schema import Constitution, Demonstration

BUILTIN_DIR = Path(__file__).parent


class ConstitutionError(ValueError):
    """A constitution file that cannot be used; the message names the file and the field."""


def from_public_json(data: dict, name: str) -> Constitution:
    """Convert `{"constitutions": [{"critic", "revision"}], "system_chat": [[messages]]}`.

    That format has no principle names, so every pair goes into one principle named
    after the file; each `system_chat` conversation of 6 turns (prompt, answer,
    critique request, critique, revision request, revision) becomes a demonstration.
    """
    pairs = [{"critique": c["critic"], "revision": c["revision"]} for c in data.get("constitutions", [])]
    demos = []
    for chat in data.get("system_chat", []):
        turns = [m["content"] for m in chat if m.get("role") in ("user", "assistant")]
        if len(turns) >= 6:
            demos.append(
                Demonstration(
                    prompt=turns[0], response=turns[1], critique_request=turns[2],
                    critique=turns[3], revision_request=turns[4], revision=turns[5],
                )
            )
    return Constitution(
        name=name,
        description=f"Imported from the public constitution JSON format ({len(pairs)} pairs).",
        principles=[{"name": name.replace("-", "_"), "title": name, "pairs": pairs}],
        demonstrations=demos,
    )


def load_constitution_file(path: Path) -> Constitution:
    try:
        raw = path.read_text(encoding="utf-8")
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConstitutionError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConstitutionError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        if "constitutions" in data and "principles" not in data:
            return from_public_json(data, name=path.stem.lower().replace("_", "-"))
        return Constitution.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConstitutionError(f"{path}: invalid constitution: {problems}") from exc
    except (KeyError, TypeError) as exc:
        raise ConstitutionError(f"{path}: invalid public constitution JSON: missing {exc}") from exc


def load_constitutions(extra_dir: Path | None = None) -> dict[str, Constitution]:
    """Built-ins first, then the user folder; a user file may replace a built-in of the same name."""
    paths = sorted(BUILTIN_DIR.glob("*.yaml"))
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise ConstitutionError(f"constitutions_dir {extra_dir} is not a directory")
        paths += sorted(p for p in extra_dir.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    loaded: dict[str, Constitution] = {}
    for path in paths:
        constitution = load_constitution_file(path)
        loaded[constitution.name] = constitution
    return loaded
