"""What every stage config has, and how recipes become configs.

A stage's config (beside its trainer: `training/sft.py`'s `UcaiSFTConfig`, …) is TRL's own config dataclass plus
`UcaiArguments`: `trl.ModelConfig` (model, dtype, LoRA, quantisation) with UCAI's defaults, and the data/run fields.
A recipe is a flat YAML mapping of field names to values (`training/recipes/<model>/<stage>.yaml`); any field can be
overridden on the command line (`--max_steps 2 --learning_rate 1e-5`). Unknown fields are an error naming them.
"""
from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig

from training.stages import RECIPES_DIR, STAGES, recipe_path  # noqa: F401 (re-exported)
from ucai.layout import Layout, check_name

RENAMED = {"torch_dtype": "dtype", "bnb_4bit_use_double_quant": "use_bnb_nested_quant",
           "bnb_4bit_compute_dtype": "dtype (4-bit layers compute in the model dtype)"}


class RecipeError(ValueError):
    """A recipe or override names a field the stage's config does not have, or has a bad value."""


# Every stage config lists TRL's config class before UcaiArguments (the RL ones after RLInputs, which has no
# __post_init__), so TRL's __post_init__ (TrainingArguments') is the one that runs, not ModelConfig's (load_config
# repeats its one check). Every field has a default, so the merged field order never matters.
@dataclass
class UcaiArguments(ModelConfig):
    """`trl.ModelConfig` with UCAI's defaults, plus the data and run arguments every stage shares."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Base model: HF id or local dir; empty: the bundled SmolLM2-135M-Instruct (`ucai model prepare`)."})
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_target_modules: list[str] | None = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                                  metadata={"help": "Module names LoRA wraps."})
    use_bnb_nested_quant: bool = field(default=True, metadata={
        "help": "4-bit: quantise the quantisation constants too (double quantisation)."})
    padding_token: str = field(default="<|endoftext|>", metadata={
        "help": "Tokenizer padding token. Never the chat end-of-turn token (SmolLM2's default <|im_end|>)."})
    dataset_path: str | None = field(default=None, metadata={
        "help": "Dataset file (.jsonl or .parquet); empty: the stage's default dataset named `dataset_name` (the "
                "constitution's generated sft or prefs dataset; the RL stages take the imported prompts)."})
    dataset_name: str = field(default="redteam", metadata={"help": "Name of the dataset to default to."})
    constitution: str = field(default="ethical", metadata={
        "help": "Constitution the data belongs to; the runs go to <artifacts>/<constitution>/<stage>/."})
    run_id: str | None = field(default=None, metadata={
        "help": "Run directory name; reusing one with resume_from_checkpoint continues that run."})
    eval_fraction: float = field(default=0.0, metadata={"help": "Share of rows held out for evaluation."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also write a merged full model (sft/dpo)."})


@dataclass
class RLInputs:
    """What every RL stage starts from (PPO, RLOO, GRPO): the SFT policy and the reward model. Listed before TRL's
    config in the RL configs, so these defaults win over PPOConfig's fields of the same name."""

    sft_model_path: str = field(default="", metadata={
        "help": "SFT adapter dir; empty = latest sft run of the constitution."})
    reward_model_path: str = field(default="", metadata={
        "help": "Merged reward model dir; empty = latest reward run of the constitution."})
    max_prompt_length: int = field(default=256, metadata={"help": "Prompts are truncated (left) to this (PPO)."})


def config_class(stage: str) -> type:
    cls = STAGES[stage].config_class() if stage in STAGES else None
    if cls is None:
        raise RecipeError(f"stage {stage!r} is not available (stages: {', '.join(STAGES)})")
    return cls


def _convert(name: str, value: str, tp: Any) -> Any:
    """CLI strings to the field's type: YAML scalars/lists, but strings stay strings."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(tp):
        return None
    if all(a is str for a in args):
        return value
    for simple in (float, int):
        if args == [simple]:
            try:
                return simple(value)
            except ValueError as exc:
                raise RecipeError(f"field {name!r} expects {simple.__name__}, got {value!r}") from exc
    parsed = yaml.safe_load(value)
    textual = any(a is str or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in args)
    if isinstance(parsed, bool) and bool not in args and textual:
        return value  # YAML reads no/yes/on/off as booleans; `--save_strategy no` means the word
    if isinstance(parsed, str) and any(typing.get_origin(a) is list for a in args):
        parsed = [p for p in parsed.split(",") if p]
    return parsed


def _unknown(names: list[str], where: str, cls: type) -> RecipeError:
    hints = [f" ({n!r} is now {RENAMED[n]!r})" for n in names if n in RENAMED]
    return RecipeError(f"unknown field(s) {', '.join(map(repr, names))} {where} for {cls.__name__}{''.join(hints)}")


def parse_overrides(cls: type, argv: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise RecipeError(f"unexpected argument {arg!r}: overrides are --field value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                value = "true"  # bare flag
            else:
                i += 1
                value = argv[i]
        if key not in fields:
            raise _unknown([key], "(command-line override)", cls)
        out[key] = _convert(key, value, hints.get(key))
        i += 1
    return out


def load_config(stage: str, recipe: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                layout: Layout | None = None, **extra: Any):
    """Recipe YAML + overrides (+ keyword values) → the stage's config instance. Unknown fields raise RecipeError."""
    cls = config_class(stage)
    layout = layout or Layout.from_settings()
    values: dict[str, Any] = {}
    if recipe is not None:
        data = yaml.safe_load(Path(recipe).read_text()) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"recipe {recipe} must be a mapping of field names to values")
        values.update(data)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise _unknown(unknown, f"in recipe {recipe}", cls)
    if isinstance(overrides, dict):
        bad = sorted(k for k in overrides if k not in names)
        if bad:
            raise _unknown(bad, "(overrides)", cls)
        values.update(overrides)
    elif overrides:
        values.update(parse_overrides(cls, overrides))
    values.update({k: v for k, v in extra.items() if v is not None})
    model = values.get("model_name_or_path") or str(layout.bundled_model_dir())
    values["model_name_or_path"] = str(Path(model).expanduser()) if model.startswith("~") else model
    values.setdefault("output_dir", str(layout.scratch_dir()))
    if "bf16" not in values and "fp16" not in values and not _has_accelerator():
        values["bf16"] = False  # TRL defaults bf16 on, which TrainingArguments refuses on CPU
    for key, what in (("constitution", "constitution"), ("run_id", "run id"), ("dataset_name", "dataset")):
        if values.get(key) is not None:
            try:
                check_name(str(values[key]), what)  # each is one folder name under the artifacts/datasets dirs
            except ValueError as exc:
                raise RecipeError(str(exc)) from exc
    if values.get("load_in_4bit") and values.get("load_in_8bit"):  # ModelConfig.__post_init__'s check
        raise RecipeError("load_in_4bit and load_in_8bit exclude each other")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"bad recipe {recipe}: {exc}") from exc


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()



def config_dict(cfg: Any) -> dict[str, Any]:
    """JSON-safe dict of a config (for manifests)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, str | int | float | bool) or v is None:
            out[f.name] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
            out[f.name] = list(v)
        else:
            out[f.name] = str(v)
    return out

