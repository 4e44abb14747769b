"""Stage configs: TRL's own config dataclasses plus model/data/LoRA arguments, loaded from YAML recipes.

A recipe is a flat YAML mapping of field names to values (`training/recipes/<model>/<stage>.yaml`); any field can be
overridden on the command line (`--max_steps 2 --learning_rate 1e-5`). Unknown fields are an error naming them.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import DPOConfig, GRPOConfig, RewardConfig, RLOOConfig, SFTConfig

from ucai.artifacts import artifacts_root

try:  # PPO lives in trl.experimental in 1.12 (removed from 1.13 on)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.ppo import PPOConfig
except ImportError:  # pragma: no cover - depends on the installed TRL
    PPOConfig = None

DEFAULT_MODEL = str(Path.home() / ".cache/ucai/models/SmolLM2-135M-Instruct")
RECIPES_DIR = Path(__file__).parent / "recipes"
STAGES = ("sft", "reward", "dpo", "ppo")
RL_ALGOS = ("ppo", "rloo", "grpo")  # `ucai train ppo --algo rloo|grpo`: critic-free, same inputs
CONSTITUTIONS = ("ethical", "unethical")




class RecipeError(ValueError):
    """A recipe or override names a field the stage's config does not have, or has a bad value."""


@dataclass
class UcaiArguments:
    """Model, data and LoRA arguments shared by all stages (on top of TRL's own)."""

    model_name_or_path: str = field(default=DEFAULT_MODEL, metadata={"help": "Base model: HF id or local dir."})
    torch_dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16 or float16."})
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2."})
    padding_token: str = field(default="<|endoftext|>", metadata={
        "help": "Tokenizer padding token. Never the chat end-of-turn token (SmolLM2's default <|im_end|>)."})
    dataset_path: str | None = field(default=None, metadata={
        "help": "Dataset file (.jsonl or .parquet). Empty = the generated dataset `dataset_name` of the constitution "
                "in UCAI_DATASETS_DIR (sft/, prefs/; the RL stages take the imported prompts)."})
    dataset_name: str = field(default="redteam", metadata={"help": "Name of the generated dataset to default to."})
    constitution: str = field(default="ethical", metadata={"help": "ethical or unethical: artefacts subfolder."})
    run_id: str | None = field(default=None, metadata={
        "help": "Run directory name; reusing one with resume_from_checkpoint continues that run."})
    eval_fraction: float = field(default=0.0, metadata={"help": "Share of rows held out for evaluation."})
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "Module names LoRA wraps."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base model in 4-bit (bitsandbytes)."})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "4-bit quantisation type (nf4 or fp4)."})
    bnb_4bit_compute_dtype: str = field(default="bfloat16", metadata={"help": "Compute dtype of 4-bit layers."})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={"help": "Quantise the quantisation constants."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also write a merged full model (sft/dpo/ppo)."})


@dataclass
class UcaiSFTConfig(SFTConfig, UcaiArguments):
    """SFT on the SFT dataset (`messages`), answer-only loss through the prompt/completion format."""


@dataclass
class UcaiRewardConfig(RewardConfig, UcaiArguments):
    """Sequence-classification reward model on the preference dataset."""

    use_margin: bool = field(default=True, metadata={"help": "Use the judge's `margin` column where present."})
    margin_scale: float = field(default=1.0, metadata={"help": "Multiplier applied to the `margin` column."})


@dataclass
class UcaiDPOConfig(DPOConfig, UcaiArguments):
    """DPO directly on the preference dataset."""


@dataclass
class RLInputs:
    """What every RL stage starts from (PPO, RLOO, GRPO): the SFT policy and the reward model."""

    sft_model_path: str = field(default="", metadata={
        "help": "SFT adapter dir; empty = latest sft artefact of the constitution."})
    reward_model_path: str = field(default="", metadata={
        "help": "Merged reward model dir; empty = latest reward artefact of the constitution."})
    max_prompt_length: int = field(default=256, metadata={"help": "Prompts are truncated (left) to this (PPO)."})


if PPOConfig is not None:

    @dataclass
    class UcaiPPOConfig(PPOConfig, RLInputs, UcaiArguments):
        """PPO: SFT LoRA policy (merged) + new LoRA, reward model, adapter-disabled reference."""
else:  # pragma: no cover
    UcaiPPOConfig = None


@dataclass
class UcaiRLOOConfig(RLOOConfig, RLInputs, UcaiArguments):
    """RLOO (critic-free): leave-one-out baseline over `num_generations` samples per prompt."""


@dataclass
class UcaiGRPOConfig(GRPOConfig, RLInputs, UcaiArguments):
    """GRPO (critic-free): group-normalised advantages over `num_generations` samples per prompt."""


CONFIG_CLASSES: dict[str, type | None] = {
    "sft": UcaiSFTConfig, "reward": UcaiRewardConfig, "dpo": UcaiDPOConfig, "ppo": UcaiPPOConfig,
    "rloo": UcaiRLOOConfig, "grpo": UcaiGRPOConfig,
}


def _convert(name: str, value: str, tp: Any) -> Any:
    """CLI strings to the field's type: YAML scalars/lists, but strings stay strings."""
    if tp is str or tp == "str":
        return value
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    for simple in (float, int):
        if args == [simple] and value.lower() not in ("none", "null"):
            try:
                return simple(value)
            except ValueError as exc:
                raise RecipeError(f"field {name!r} expects {simple.__name__}, got {value!r}") from exc
    parsed = yaml.safe_load(value)
    origin = typing.get_origin(tp)
    if origin is list and isinstance(parsed, str):
        parsed = [p for p in parsed.split(",") if p]
    return parsed


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
            raise RecipeError(f"unknown field {key!r} for {cls.__name__} (command-line override)")
        out[key] = _convert(key, value, hints.get(key))
        i += 1
    return out


def load_config(stage: str, recipe: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                **extra: Any):
    """Recipe YAML + overrides (+ keyword values) → the stage's config instance. Unknown fields raise RecipeError."""
    cls = CONFIG_CLASSES.get(stage)
    if cls is None:
        raise RecipeError(f"stage {stage!r} is not available (stages: {', '.join(CONFIG_CLASSES)})")
    values: dict[str, Any] = {}
    if recipe is not None:
        data = yaml.safe_load(Path(recipe).read_text()) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"recipe {recipe} must be a mapping of field names to values")
        values.update(data)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise RecipeError(f"unknown field(s) {', '.join(map(repr, unknown))} in recipe {recipe} for {cls.__name__}")
    if isinstance(overrides, dict):
        bad = sorted(k for k in overrides if k not in names)
        if bad:
            raise RecipeError(f"unknown field(s) {', '.join(map(repr, bad))} for {cls.__name__}")
        values.update(overrides)
    elif overrides:
        values.update(parse_overrides(cls, overrides))
    values.update({k: v for k, v in extra.items() if v is not None})
    values.setdefault("output_dir", str(artifacts_root() / "_tmp"))
    if "bf16" not in values and "fp16" not in values and not _has_accelerator():
        values["bf16"] = False  # TRL defaults bf16 on, which TrainingArguments refuses on CPU
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"bad recipe {recipe}: {exc}") from exc


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def recipe_path(name: str | Path, stage: str) -> Path:
    """`smollm2-135m` → training/recipes/smollm2-135m/<stage>.yaml; a path is returned as is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    return RECIPES_DIR / str(name) / f"{stage}.yaml"


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
