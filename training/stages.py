"""The training stages, in one table: what each reads, which config and entry point it has, what it reports.

Everything that lists stages (the CLIs and their help in training/usage.py, the dataset checks, `make train-cpu`,
bench/training_runs.py) reads it from here. Light on purpose (no torch, no TRL): `ucai --help` imports it; config
classes and entry points are named as "module:attribute" and imported only when a stage runs.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ucai.layout import Layout

StageInput = Literal["sft", "prefs", "imports"]
RECIPES_DIR = Path(__file__).parent / "recipes"


def recipe_path(name: str | Path, stage: str) -> Path:
    """`smollm2-135m` → training/recipes/smollm2-135m/<stage>.yaml; a path is returned as is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    return RECIPES_DIR / str(name) / f"{stage}.yaml"


def _attr(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    config: str  # "module:Class" of its config dataclass (the attribute is None where the installed TRL lacks it)
    entry: str  # "module:function", called with the stage's argv, returning the run manifest
    columns: tuple[str, ...]  # columns its dataset must have
    dataset_kind: str  # the dataset it reads, in words (error messages)
    default_input: StageInput  # where its dataset is when none is given: generated per constitution, or imported
    headline: tuple[str, str]  # (manifest metrics key, label) that says how the run went
    rl: bool = False  # samples from the SFT policy, scored by the reward model: needs both runs first

    def config_class(self) -> type | None:
        return _attr(self.config)

    def run(self, argv: list[str] | None = None) -> dict[str, Any]:
        return _attr(self.entry)(argv)

    def default_dataset(self, constitution: str, name: str, layout: Layout | None = None) -> Path:
        """The dataset the stage reads when none is given: what `ucai data generate` / `ucai data import` wrote."""
        layout = layout or Layout.from_settings()
        if self.default_input == "imports":
            return layout.imported(name)
        return layout.dataset(self.default_input, constitution, name)


PREFS = ("prompt", "chosen", "rejected")
PROMPTS = "a prompt, SFT or preference dataset"
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("sft", "LoRA SFT on the final revisions (answer-only loss)", "training.sft:UcaiSFTConfig",
          "training.sft:main", ("messages",), "an SFT dataset (sft.jsonl)", "sft", ("last_loss", "loss")),
    Stage("reward", "sequence-classification reward model on the judged preference pairs",
          "training.reward:UcaiRewardConfig", "training.reward:main", PREFS, "a preference dataset", "prefs",
          ("pairwise_accuracy", "held-out acc")),
    Stage("ppo", "PPO: new LoRA on the SFT policy, reward model, value model", "training.ppo:UcaiPPOConfig",
          "training.ppo:main", ("prompt",), PROMPTS, "imports", ("last_score", "score"), rl=True),
    Stage("rloo", "RLOO (critic-free): leave-one-out baseline over sampled answers",
          "training.critic_free:UcaiRLOOConfig", "training.critic_free:rloo", ("prompt",), PROMPTS, "imports",
          ("last_reward", "reward"), rl=True),
    Stage("grpo", "GRPO (critic-free): group-normalised advantages over sampled answers",
          "training.critic_free:UcaiGRPOConfig", "training.critic_free:grpo", ("prompt",), PROMPTS, "imports",
          ("last_reward", "reward"), rl=True),
    Stage("dpo", "DPO directly on the preference pairs (the cheaper route)", "training.dpo:UcaiDPOConfig",
          "training.dpo:main", PREFS, "a preference dataset", "prefs", ("last_loss", "loss")),
)}
RL_ALIAS = "ppo"  # `ucai train ppo --algo rloo|grpo` = `ucai train rloo|grpo` (kept from before they were stages)


def resolve(name: str, argv: list[str]) -> tuple[Stage, list[str]]:
    """(stage, its argv): `ppo --algo X …` is stage X. KeyError for an unknown stage or algorithm."""
    argv = list(argv)
    if name == RL_ALIAS:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        parser.add_argument("--algo", default=RL_ALIAS)
        known, argv = parser.parse_known_args(argv)
        if known.algo not in STAGES or not STAGES[known.algo].rl:
            raise KeyError(f"--algo {known.algo!r}: one of {'|'.join(s.name for s in STAGES.values() if s.rl)}")
        name = known.algo
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}")
    return STAGES[name], argv

