"""Help texts: the stage list (`ucai train`) and a stage's options (`ucai train STAGE --help`), generated from the
stage table and the config dataclasses (each field's default and metadata["help"])."""
from __future__ import annotations

import dataclasses
import re

from training.stages import RL_ALIAS, STAGES


def usage() -> str:
    lines = ["usage: ucai train STAGE [--recipe NAME|PATH] [--constitution NAME] [--dataset PATH] [--FIELD VALUE ...]",
             "       (or python -m training STAGE …)", "", "stages:"]
    lines += [f"  {s.name:<7} {s.summary}" for s in STAGES.values()]
    rl = "|".join(s.name for s in STAGES.values() if s.rl and s.name != RL_ALIAS)
    lines += [f"  {RL_ALIAS} --algo {rl}: the same as `ucai train {rl}`", "",
              "`ucai train STAGE --help` lists every field of the stage's config (recipe keys and --FIELD overrides)."]
    return "\n".join(lines)


def _group(cls: type, name: str) -> int:
    """0: declared by UCAI (training/), 1: by trl.ModelConfig (incl. fields UCAI re-defaults), 2: by TRL's trainer
    config or transformers' TrainingArguments."""
    from trl import ModelConfig

    declared = [k for k in cls.__mro__ if name in k.__dict__.get("__annotations__", {})]
    if ModelConfig in declared:
        return 1
    return 0 if any(k.__module__.startswith("training") for k in declared) else 2


def _default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = None if f.default is dataclasses.MISSING else f.default
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "[]"
    return '""' if value == "" else str(value)


def _first_sentence(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.\s", text)
    text = text[:end.start() + 1] if end and end.start() < limit else text
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe_fields(cls: type) -> str:
    """Every field of a stage config, one line each (`--name default  help`): UCAI's own first, then
    trl.ModelConfig's, then the TRL trainer config's (with transformers' TrainingArguments)."""
    trl_name = next(k.__name__ for k in cls.__mro__[1:] if k.__module__.startswith("trl."))
    titles = ("UCAI (training/config.py and the stage module)", "model, LoRA, quantisation (trl.ModelConfig)",
              f"trainer ({trl_name}, TRL; incl. transformers.TrainingArguments)")
    groups: list[list[str]] = [[], [], []]
    for f in dataclasses.fields(cls):
        if f.init and not f.name.startswith("_"):
            head = f"  --{f.name} {_default(f)}"
            groups[_group(cls, f.name)].append(f"{head:<44} {_first_sentence(f.metadata.get('help', ''))}".rstrip())
    out = [f"config fields of {cls.__name__} (recipe keys, or --FIELD VALUE on the command line):"]
    for title, lines in zip(titles, groups, strict=True):
        out += [f" {title}:", *lines]
    return "\n".join(out)
